package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"lifeline/internal/demo"
	"lifeline/internal/pgtest"
)

// pgEngine keeps each product in its own database on a throwaway PostgreSQL
// server. The reference is a pg_dump -Fc taken before the script, and the
// baseline restores it with pg_restore -j2, as a user would today.
type pgEngine struct {
	// stats loads pg_stat_statements (-pgstat), to list what the server
	// spends its time on during Lifeline's restore.
	stats bool
	// settings are more server settings (-pgsettings), the same for
	// Lifeline and the baselines.
	settings []string
	dir      string
	srv      *pgtest.Server
	bin      string
	dbs      map[string]*sql.DB
}

// setup generates the demo's SQLite products and loads them into PostgreSQL
// (internal/demo writes SQLite only), then writes a lifeline.yaml pointing
// at the PostgreSQL databases.
func (e *pgEngine) setup(ctx context.Context, dir string, tenants int) {
	e.dir = dir
	var err error
	e.bin, err = pgtest.BinDir()
	check(err)
	var settings []string
	if e.stats {
		settings = []string{"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all", "pg_stat_statements.track_planning=on"}
	}
	e.srv, err = pgtest.Start(append(settings, e.settings...)...)
	check(err)
	gen := filepath.Join(dir, "generated")
	check(demo.Generate(ctx, gen, demo.Options{Tenants: tenants}))
	cfg := demo.Config
	e.dbs = map[string]*sql.DB{}
	for _, p := range products {
		check(e.srv.Exec("CREATE DATABASE " + p))
		check(demo.LoadPostgres(ctx, filepath.Join(gen, p+".db"), e.srv.URL(p), demo.Tables[p]))
		cfg = strings.Replace(cfg, "sqlite:"+p+".db", e.srv.URL(p), 1)
		e.dbs[p] = e.open(p)
	}
	check(os.WriteFile(filepath.Join(dir, "lifeline.yaml"), []byte(cfg), 0o644))
	check(os.RemoveAll(gen))
}

func (e *pgEngine) open(name string) *sql.DB {
	db, err := sql.Open("pgx", e.srv.URL(name))
	check(err)
	return db
}

// replicate has nothing to start: the baseline is a dump.
func (e *pgEngine) replicate() {}

func (e *pgEngine) db(product string) *sql.DB { return e.dbs[product] }

func (e *pgEngine) dump(product string) string { return filepath.Join(e.dir, product+".dump") }

// keepBefore takes the whole-database dump a user would have, untimed.
func (e *pgEngine) keepBefore() {
	for _, p := range products {
		run(filepath.Join(e.bin, "pg_dump"), "-Fc", "-f", e.dump(p), "-d", e.srv.URL(p))
	}
}

// keepDamaged makes two copies of each damaged database, one for each
// write-back, without Lifeline's triggers, as a database without Lifeline
// has none. A template copy needs the source idle, so the pool is closed
// around it.
func (e *pgEngine) keepDamaged() {
	for _, p := range products {
		check(e.dbs[p].Close())
		for _, name := range []string{p + "_baseline", p + "_limit"} {
			check(e.srv.Exec("CREATE DATABASE " + name + " TEMPLATE " + p))
			db := e.open(name)
			dropAll(db, "SELECT format('DROP TRIGGER %I ON %s', tgname, tgrelid::regclass) FROM pg_trigger WHERE NOT tgisinternal")
			check(db.Close())
		}
		e.dbs[p] = e.open(p)
	}
}

func (e *pgEngine) baselineName() string { return "pg_restore -j2 of the pg_dump -Fc taken before" }

func (e *pgEngine) limitName() string { return "COPY of rows already read out" }

// baseline restores each dump into a fresh database, then reads the keys'
// rows out of it and puts them back into a copy of the damaged database.
// The restored databases stay: they are the reference for exact.
func (e *pgEngine) baseline(moment time.Time, keys []string) (whole, back time.Duration, ok bool) {
	t0 := time.Now()
	for _, p := range products {
		check(e.srv.Exec("CREATE DATABASE " + p + "_restored"))
		run(filepath.Join(e.bin, "pg_restore"), "-j2", "-d", e.srv.URL(p+"_restored"), e.dump(p))
	}
	whole = time.Since(t0)
	for _, p := range products {
		t1 := time.Now()
		rows := e.extract(p, keys)
		back += time.Since(t1) + e.putBack(p+"_baseline", p, rows, keys)
	}
	return whole, back, true
}

// limit puts the same rows, read out of the restored database beforehand
// (untimed), back into the other copy of the damaged database.
func (e *pgEngine) limit(keys []string) time.Duration {
	var total time.Duration
	for _, p := range products {
		total += e.putBack(p+"_limit", p, e.extract(p, keys), keys)
	}
	return total
}

// extract reads the keys' rows of every table of product out of its
// restored database, in COPY's text format.
func (e *pgEngine) extract(product string, keys []string) map[string][]byte {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.srv.URL(product+"_restored"))
	check(err)
	defer conn.Close(ctx)
	out := map[string][]byte{}
	for _, t := range demo.Tables[product] {
		var buf bytes.Buffer
		_, err := conn.PgConn().CopyTo(ctx, &buf, fmt.Sprintf("COPY (SELECT * FROM %s WHERE %s IN (%s)) TO STDOUT", t[0], t[1], strings.Join(keys, ",")))
		check(err)
		out[t[0]] = buf.Bytes()
	}
	return out
}

// putBack replaces the keys' rows in database target with rows, in one
// transaction: deletes children first, then COPY parents first. It returns
// the time taken.
func (e *pgEngine) putBack(target, product string, rows map[string][]byte, keys []string) time.Duration {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.srv.URL(target))
	check(err)
	defer conn.Close(ctx)
	t0 := time.Now()
	tx, err := conn.Begin(ctx)
	check(err)
	tables := demo.Tables[product]
	for i := len(tables) - 1; i >= 0; i-- {
		_, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s IN (%s)", tables[i][0], tables[i][1], strings.Join(keys, ",")))
		check(err)
	}
	for _, t := range tables {
		_, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(rows[t[0]]), "COPY "+t[0]+" FROM STDIN")
		check(err)
	}
	check(tx.Commit(ctx))
	return time.Since(t0)
}

// exact compares each key's rows, as PostgreSQL prints them, in the live
// database with the restored dump taken before the script.
func (e *pgEngine) exact(keys []string) int {
	refs := map[string]*sql.DB{}
	for _, p := range products {
		refs[p] = e.open(p + "_restored")
		defer refs[p].Close()
	}
	return countEqual(keys, func(p, k string) (string, string) {
		return pgDigest(e.dbs[p], p, k), pgDigest(refs[p], p, k)
	})
}

// pgDigest hashes every row of one tenant in one demo product, in key order.
func pgDigest(db *sql.DB, product, key string) string {
	h := sha256.New()
	for _, t := range demo.Tables[product] {
		var rows string
		check(db.QueryRow(fmt.Sprintf("SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '') FROM %s x WHERE x.%s = $1::bigint", t[0], t[1]), key).Scan(&rows))
		fmt.Fprintf(h, "%s\n%s\n", t[0], rows)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// resetStats clears the statement statistics before the restore
// (-pgstat). The extension lives in the maintenance database, out of the
// products' way; its view covers every database.
func (e *pgEngine) resetStats() {
	check(e.srv.Exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
	check(e.srv.Exec("SELECT pg_stat_statements_reset()"))
}

// printStats lists the statements that took the server most time since
// resetStats, over every database: calls, planning and execution time
// (which includes the triggers' statements, listed on their own too).
func (e *pgEngine) printStats() {
	// Statements that differ only in their number of rows (VALUES lists)
	// count as one: grouped by their first 100 characters.
	db := e.open("postgres")
	defer db.Close()
	rows, err := db.Query(`SELECT sum(calls), sum(total_plan_time), sum(total_exec_time), sum(rows),
		sum(shared_blks_hit), sum(shared_blks_read), sum(shared_blks_dirtied), sum(shared_blks_written), (sum(wal_bytes) / 1024)::bigint, q FROM
		(SELECT *, left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS q FROM pg_stat_statements) s
		GROUP BY q ORDER BY sum(total_plan_time + total_exec_time) DESC LIMIT 25`)
	check(err)
	defer rows.Close()
	fmt.Printf("\nserver time by statement during Lifeline's restore (pg_stat_statements, both products; shared buffers hit, read from\nthe system, dirtied and written out by the statement's own backend to make room; WAL written):\n"+
		"%8s %9s %9s %8s %8s %8s %8s %8s %8s  %s\n", "calls", "plan ms", "exec ms", "rows", "hit", "read", "dirtied", "written", "WAL KiB", "statement")
	for rows.Next() {
		var calls, n, hit, read, dirtied, written, wal int64
		var plan, exec float64
		var q string
		check(rows.Scan(&calls, &plan, &exec, &n, &hit, &read, &dirtied, &written, &wal, &q))
		fmt.Printf("%8d %9.0f %9.0f %8d %8d %8d %8d %8d %8d  %s\n", calls, plan, exec, n, hit, read, dirtied, written, wal, q)
	}
	check(rows.Err())
}

func (e *pgEngine) close() {
	for _, db := range e.dbs {
		_ = db.Close()
	}
	if e.srv != nil {
		e.srv.Stop()
	}
}
