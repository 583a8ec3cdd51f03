package productdb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// A swap on PostgreSQL is bound by round trips: each statement waits for
// the server's answer before the next is sent, and a tenant's swap is a
// dozen statements or more (its savepoint, unlock, state, marker, reads and
// writes). Most of them do not need the answer of the one before, only to
// run after it. So inside SwapAll, on PostgreSQL, such statements are
// queued (later, queryLater) and sent together when a result is needed
// (flush): one round trip for all of them, run by the server in order
// (the extended protocol's pipelining, one Sync at the end). The server
// stops at the first that fails and the transaction is aborted until
// SwapAll rolls the tenant's savepoint back, as after any failed
// statement; flush returns that statement's own error (the table and what
// failed, as swapError names them), and the checks of the statements
// before it have run. On SQLite, in process, and on PostgreSQL outside
// SwapAll, each statement runs when it is queued, exactly as before.
//
// Pipelined values are bound as text, for the server to read with the type
// it infers for each parameter (the swap's statements cast every row value
// to its column's type), and results come back as text.

// pipeline is the queue of one swap transaction on PostgreSQL.
type pipeline struct {
	conn  *sql.Conn // the transaction's connection
	batch pgconn.Batch
	items []queued
}

// queued is one statement waiting in a pipeline.
type queued struct {
	// each gets every row the statement returns, through scan (nil: none
	// expected); done the rows it changed (nil: not checked).
	each func(scan func(dest ...any) error) error
	done func(affected int64) error
	// fail says what the statement's failure means.
	fail func(error) error
}

// pipes maps a transaction SwapAll runs on PostgreSQL to its pipeline.
var pipes sync.Map // *sql.Tx -> *pipeline

func pipeOf(tx *sql.Tx) *pipeline {
	if p, ok := pipes.Load(tx); ok {
		return p.(*pipeline)
	}
	return nil
}

// beginPipelined begins a transaction on a connection of its own whose
// statements later and queryLater queue. end releases it, after the
// transaction is over.
func (db *DB) beginPipelined(ctx context.Context) (tx *sql.Tx, end func(), err error) {
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return nil, nil, db.unavailable(err)
	}
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		conn.Close()
		return nil, nil, db.unavailable(err)
	}
	pipes.Store(tx, &pipeline{conn: conn})
	return tx, func() { pipes.Delete(tx); conn.Close() }, nil
}

// later runs a statement of tx whose result nothing waits for: queued if tx
// is pipelined, else now. done, if set, checks the rows it changed; fail
// makes the error of its failure.
func (db *DB) later(ctx context.Context, tx *sql.Tx, fail func(error) error, done func(int64) error, query string, args ...any) error {
	if p := pipeOf(tx); p != nil {
		return p.add(query, args, queued{done: done, fail: fail})
	}
	res, err := db.txExec(ctx, tx, query, args...)
	if err != nil {
		return fail(err)
	}
	if done != nil {
		n, _ := res.RowsAffected()
		return done(n)
	}
	return nil
}

// queryLater runs a query of tx as later does, handing each row to each,
// which reads it with scan (into *string, *any, *int or *sql.NullString).
// A data exception from binding its arguments (badKey) means no rows.
func (db *DB) queryLater(ctx context.Context, tx *sql.Tx, fail func(error) error, each func(scan func(dest ...any) error) error, query string, args ...any) error {
	if p := pipeOf(tx); p != nil {
		return p.add(query, args, queued{each: each, fail: func(err error) error {
			if db.d.badKey(err) {
				return nil
			}
			return fail(err)
		}})
	}
	var rows *sql.Rows
	st, err := db.txStmt(ctx, tx, query)
	if err == nil && st != nil {
		defer st.Close()
		rows, err = st.QueryContext(ctx, args...)
	} else if err == nil {
		rows, err = tx.QueryContext(ctx, query, args...)
	}
	if err != nil {
		if db.d.badKey(err) {
			return nil
		}
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows.Scan); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return nil
}

// flush sends what is queued for tx, in one round trip, and runs the
// statements' checks in order. It returns the first error: a statement's
// failure (through its fail), or a check's.
func (db *DB) flush(ctx context.Context, tx *sql.Tx) error {
	p := pipeOf(tx)
	if p == nil || len(p.items) == 0 {
		return nil
	}
	items, batch := p.items, p.batch
	p.items, p.batch = nil, pgconn.Batch{}
	var first error // the first check that failed
	ran := 0
	err := p.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		mrr := sc.Conn().PgConn().ExecBatch(ctx, &batch)
		var failed error // the statement's own error
		for _, it := range items {
			if !mrr.NextResult() {
				break
			}
			rr := mrr.ResultReader()
			for rr.NextRow() {
				if it.each != nil && first == nil {
					vals := rr.Values()
					if err := it.each(func(dest ...any) error { return scanText(vals, dest) }); err != nil {
						first = err
					}
				}
			}
			tag, err := rr.Close()
			if err != nil {
				failed = err
				break
			}
			ran++
			if it.done != nil && first == nil {
				if err := it.done(tag.RowsAffected()); err != nil {
					first = err
				}
			}
		}
		if err := mrr.Close(); failed == nil {
			failed = err
		}
		return failed
	})
	if err != nil {
		if ran < len(items) {
			err = items[ran].fail(err)
		} else {
			err = db.internal(err, "send statements")
		}
		if err != nil {
			return err
		}
	}
	return first
}

// discard drops what is queued for tx: the statements of a tenant whose
// savepoint is rolled back.
func (db *DB) discard(tx *sql.Tx) {
	if p := pipeOf(tx); p != nil {
		p.items, p.batch = nil, pgconn.Batch{}
	}
}

// add queues query with its arguments bound as text.
func (p *pipeline) add(query string, args []any, it queued) error {
	vals := make([][]byte, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
		case string:
			vals[i] = []byte(v)
		case int:
			vals[i] = strconv.AppendInt(nil, int64(v), 10)
		case int64:
			vals[i] = strconv.AppendInt(nil, v, 10)
		case time.Time:
			vals[i] = v.AppendFormat(nil, time.RFC3339Nano)
		default:
			return it.fail(fmt.Errorf("cannot bind %T as text", a))
		}
	}
	p.batch.ExecParams(query, vals, nil, nil, nil)
	p.items = append(p.items, it)
	return nil
}

// scanText stores a row's text values into dest.
func scanText(vals [][]byte, dest []any) error {
	if len(vals) != len(dest) {
		return fmt.Errorf("%d values into %d destinations", len(vals), len(dest))
	}
	for i, d := range dest {
		v := vals[i]
		switch d := d.(type) {
		case *string:
			if v == nil {
				return fmt.Errorf("NULL in column %d", i+1)
			}
			*d = string(v)
		case *sql.NullString:
			d.String, d.Valid = string(v), v != nil
		case *any:
			if v == nil {
				*d = nil
			} else {
				*d = string(v)
			}
		case *int:
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return err
			}
			*d = n
		default:
			return fmt.Errorf("cannot scan into %T", d)
		}
	}
	return nil
}
