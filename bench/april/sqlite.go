package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"lifeline/internal/demo"
)

// sqliteEngine keeps each product in its own SQLite file, copies them with
// VACUUM INTO, and measures the baseline with Litestream.
type sqliteEngine struct {
	dir        string
	dbs        map[string]*sql.DB
	litestream string
	ls         *exec.Cmd
}

func (e *sqliteEngine) setup(ctx context.Context, dir string, tenants int) {
	e.dir = dir
	check(demo.Generate(ctx, dir, demo.Options{Tenants: tenants}))
	e.dbs = map[string]*sql.DB{}
	for _, p := range products {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, p+".db")+"?_pragma=busy_timeout(30000)")
		check(err)
		e.dbs[p] = db
	}
}

// replicate starts Litestream on both files, installing it the way the
// issue names it when it is missing.
func (e *sqliteEngine) replicate() {
	litestream, err := exec.LookPath("litestream")
	if err != nil {
		fmt.Println("installing litestream v0.5.18 for the baseline (once; takes a few minutes)")
		run("go", "install", "github.com/benbjohnson/litestream/cmd/litestream@v0.5.18")
		gopath := strings.TrimSpace(string(run("go", "env", "GOPATH")))
		litestream, err = exec.LookPath(filepath.Join(gopath, "bin", "litestream"))
	}
	if err != nil {
		fmt.Println("litestream could not be installed: the baseline is skipped")
		return
	}
	e.litestream = litestream
	var cfg strings.Builder
	cfg.WriteString("dbs:\n")
	for _, p := range products {
		fmt.Fprintf(&cfg, "  - path: %s\n    replicas:\n      - type: file\n        path: %s\n", filepath.Join(e.dir, p+".db"), filepath.Join(e.dir, "litestream", p))
	}
	check(os.WriteFile(filepath.Join(e.dir, "litestream.yml"), []byte(cfg.String()), 0o644))
	e.ls = exec.Command(litestream, "replicate", "-config", filepath.Join(e.dir, "litestream.yml"))
	e.ls.Stdout, e.ls.Stderr = os.Stderr, os.Stderr
	check(e.ls.Start())
	time.Sleep(2 * time.Second)
}

func (e *sqliteEngine) db(product string) *sql.DB { return e.dbs[product] }

// keepBefore copies the databases as the reference, after letting
// Litestream sync what came before.
func (e *sqliteEngine) keepBefore() {
	time.Sleep(1500 * time.Millisecond)
	e.vacuumInto(".before.db")
}

func (e *sqliteEngine) keepDamaged() { e.vacuumInto(".damaged.db") }

func (e *sqliteEngine) vacuumInto(suffix string) {
	for _, p := range products {
		_, err := e.dbs[p].Exec("VACUUM INTO ?", filepath.Join(e.dir, p+suffix))
		check(err)
	}
}

func (e *sqliteEngine) baselineName() string { return "Litestream whole-database restore" }

func (e *sqliteEngine) limitName() string { return "INSERT … SELECT from an attached copy" }

// baseline restores each whole database with Litestream to the moment, then
// puts the keys' rows back from it.
func (e *sqliteEngine) baseline(moment time.Time, keys []string) (whole, back time.Duration, ok bool) {
	if e.ls == nil {
		return 0, 0, false
	}
	t0 := time.Now()
	for _, p := range products {
		run(e.litestream, "restore", "-config", filepath.Join(e.dir, "litestream.yml"), "-timestamp", moment.Format(time.RFC3339Nano),
			"-o", filepath.Join(e.dir, p+".litestream.db"), filepath.Join(e.dir, p+".db"))
	}
	whole = time.Since(t0)
	return whole, e.writeBack(".litestream.db", keys), true
}

func (e *sqliteEngine) limit(keys []string) time.Duration { return e.writeBack(".before.db", keys) }

// writeBack puts the keys' rows of every demo table back into a copy of the
// damaged databases from another copy, in one transaction per product, and
// returns the time it took: what a person does by hand after restoring a
// whole database elsewhere. Lifeline's triggers are dropped from the
// damaged copy first, as a database without Lifeline has none.
func (e *sqliteEngine) writeBack(from string, keys []string) time.Duration {
	in := strings.Join(keys, ",")
	var total time.Duration
	for _, p := range products {
		target := filepath.Join(e.dir, p+".writeback"+from)
		run("cp", filepath.Join(e.dir, p+".damaged.db"), target)
		db, err := sql.Open("sqlite", "file:"+target)
		check(err)
		dropAll(db, "SELECT 'DROP TRIGGER ' || name FROM sqlite_master WHERE type = 'trigger'")
		t0 := time.Now()
		conn, err := db.Conn(context.Background())
		check(err)
		_, err = conn.ExecContext(context.Background(), "ATTACH ? AS ref", filepath.Join(e.dir, p+from))
		check(err)
		_, err = conn.ExecContext(context.Background(), "BEGIN")
		check(err)
		tables := demo.Tables[p]
		for i := len(tables) - 1; i >= 0; i-- {
			_, err := conn.ExecContext(context.Background(), fmt.Sprintf("DELETE FROM main.%s WHERE %s IN (%s)", tables[i][0], tables[i][1], in))
			check(err)
		}
		for _, t := range tables {
			_, err := conn.ExecContext(context.Background(), fmt.Sprintf("INSERT INTO main.%s SELECT * FROM ref.%s WHERE %s IN (%s)", t[0], t[0], t[1], in))
			check(err)
		}
		_, err = conn.ExecContext(context.Background(), "COMMIT")
		check(err)
		total += time.Since(t0)
		conn.Close()
		db.Close()
	}
	return total
}

// exact counts the victims whose rows in every product equal the copy
// taken before the script, byte for byte.
func (e *sqliteEngine) exact(keys []string) int {
	refs := map[string]*sql.DB{}
	for _, p := range products {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, p+".before.db")+"?mode=ro")
		check(err)
		defer db.Close()
		refs[p] = db
	}
	return countEqual(keys, func(p, k string) (string, string) {
		a, _, err := demo.Digest(context.Background(), e.dbs[p], p, k)
		check(err)
		b, _, err := demo.Digest(context.Background(), refs[p], p, k)
		check(err)
		return a, b
	})
}

func (e *sqliteEngine) close() {
	if e.ls != nil {
		_ = e.ls.Process.Kill()
		_, _ = e.ls.Process.Wait()
	}
}
