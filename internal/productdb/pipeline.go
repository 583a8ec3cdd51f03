package productdb

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// A swap on PostgreSQL is bound by round trips: each statement waits for
// the server's answer before the next is sent, and a tenant's swap is a
// dozen statements or more (its savepoint, unlock, state, marker, reads and
// writes). Most of them do not need the answer of the one before, only to
// run after it. So inside SwapAll, on PostgreSQL, such statements are
// queued (later, queryLater) and sent together when a result is needed
// (flush): one round trip for all of them, run by the server in order
// (pgx's pipeline mode, one Sync at the end; pgx prepares a statement the
// first time it sees its text on a connection, and keeps it, as it does
// any statement: the fixed ones are parsed once). The server
// stops at the first that fails and the transaction is aborted until
// SwapAll rolls the tenant's savepoint back, as after any failed
// statement; flush returns that statement's own error (the table and what
// failed, as swapError names them), and the checks of the statements
// before it have run. On SQLite, in process, and on PostgreSQL outside
// SwapAll, each statement runs when it is queued, exactly as before.
//
// Values are bound and results read as for any statement through pgx
// (the swap's statements bind row values as text and cast them to their
// columns' types).

// swapTx is a transaction and the statements queued for it. On
// PostgreSQL inside SwapAll (beginPipelined) conn is set and later and
// queryLater queue; elsewhere (SQLite, a lifecycle step) conn is nil and
// each statement runs when it is queued.
type swapTx struct {
	tx    *sql.Tx
	conn  *sql.Conn // the transaction's connection, when pipelined
	batch pgx.Batch
	items []queued
	sends int // round trips flush has made (a small swap's count is tested)
}

// runNow is a swapTx whose statements run when they are queued.
func runNow(tx *sql.Tx) *swapTx { return &swapTx{tx: tx} }

// queued is one statement waiting in a pipeline.
type queued struct {
	// each gets every row the statement returns, through scan (nil: none
	// expected); done the rows it changed (nil: not checked).
	each func(scan func(dest ...any) error) error
	done func(affected int64) error
	// fail says what the statement's failure means.
	fail func(error) error
}

// beginPipelined begins a transaction on a connection of its own whose
// statements later and queryLater queue. end releases it, after the
// transaction is over.
func (db *DB) beginPipelined(ctx context.Context) (stx *swapTx, end func(), err error) {
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return nil, nil, db.unavailable(err)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, db.unavailable(err)
	}
	return &swapTx{tx: tx, conn: conn}, func() { conn.Close() }, nil
}

// later runs a statement of tx whose result nothing waits for: queued if tx
// is pipelined, else now. done, if set, checks the rows it changed; fail
// makes the error of its failure.
func (db *DB) later(ctx context.Context, tx *swapTx, fail func(error) error, done func(int64) error, query string, args ...any) error {
	if tx.conn != nil {
		tx.add(query, args, queued{done: done, fail: fail})
		return nil
	}
	res, err := db.txExec(ctx, tx.tx, query, args...)
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
// which reads it with scan.
// A data exception from binding its arguments (badKey) means no rows.
func (db *DB) queryLater(ctx context.Context, tx *swapTx, fail func(error) error, each func(scan func(dest ...any) error) error, query string, args ...any) error {
	if tx.conn != nil {
		tx.add(query, args, queued{each: each, fail: func(err error) error {
			if db.d.badKey(err) {
				return nil
			}
			return fail(err)
		}})
		return nil
	}
	var rows *sql.Rows
	st, err := db.txStmt(ctx, tx.tx, query)
	if err == nil && st != nil {
		defer st.Close()
		rows, err = st.QueryContext(ctx, args...)
	} else if err == nil {
		rows, err = tx.tx.QueryContext(ctx, query, args...)
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

// flush sends what is queued for tx, in one round trip (two when some
// statement's text is new to the connection: pgx prepares those first and
// keeps them, as it does any statement), and runs the statements' checks
// in order. It returns the first error: a statement's failure (through its
// fail), or a check's.
func (db *DB) flush(ctx context.Context, tx *swapTx) error {
	if len(tx.items) == 0 {
		return nil
	}
	items, batch := tx.items, tx.batch
	tx.items, tx.batch = nil, pgx.Batch{}
	tx.sends++
	var first error // the first check that failed
	ran := 0
	err := tx.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		br := sc.Conn().SendBatch(ctx, &batch)
		for _, it := range items {
			var n int64
			if it.each != nil {
				rows, err := br.Query()
				if err != nil {
					br.Close()
					return err
				}
				for rows.Next() {
					if err := it.each(rows.Scan); err != nil && first == nil {
						first = err
					}
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					br.Close()
					return err
				}
			} else {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return err
				}
				n = tag.RowsAffected()
			}
			ran++
			if it.done != nil && first == nil {
				first = it.done(n)
			}
		}
		return br.Close()
	})
	if err != nil {
		if ran >= len(items) {
			return db.internal(err, "send statements")
		}
		if ferr := items[ran].fail(err); ferr != nil {
			return ferr
		}
		if ran+1 < len(items) { // a failure that means no rows, but the server skipped the rest
			return db.internal(err, "run the statements after one that failed")
		}
	}
	return first
}

// discard drops what is queued for tx: the statements of a tenant whose
// savepoint is rolled back.
func (tx *swapTx) discard() {
	tx.items, tx.batch = nil, pgx.Batch{}
}

func (tx *swapTx) add(query string, args []any, it queued) {
	tx.batch.Queue(query, args...)
	tx.items = append(tx.items, it)
}
