package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/change"
	"lifeline/internal/config"
	"lifeline/internal/productdb/productdbtest"
	"lifeline/internal/state"
)

// Property 1 end to end: writers change many tenants concurrently while the
// real binary ships and is killed with SIGKILL at random moments and right
// after an upload. Afterwards the repository verifies, and every tenant
// rebuilt from it equals the live database exactly.
func TestShippingSurvivesKill9WithConcurrentWriters(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 30)
	bin := buildLifeline(t)
	dir := filepath.Dir(c.config)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "tracker.db")+"?_pragma=busy_timeout(20000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	stopWriters := startWriters(t, db, 4, 30, 400)

	ship := func(env ...string) (killed bool) {
		cmd := exec.Command(bin, "--config", c.config, "backup", "run")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return true
		}
		if err != nil {
			t.Errorf("backup run: %v\n%s", err, out)
		}
		return false
	}
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for round := 0; round < 12; round++ {
		if round%3 == 1 {
			// Die right after an object is durable, before the catalog and
			// the source know.
			if ship("LIFELINE_TEST_CRASH_AFTER_UPLOAD=1") {
				kills++
			}
			continue
		}
		cmd := exec.Command(bin, "--config", c.config, "backup", "run")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			kills++
		}
		_ = cmd.Wait()
	}
	stopWriters()
	if ship() {
		t.Fatal("the final backup run died")
	}
	if kills == 0 {
		t.Fatal("no shipper was killed: the test proved nothing")
	}
	c.must("backup", "verify")

	repositoryEqualsLive(t, c, db, 30)
}

// startWriters runs n writers that commit multi-statement transactions on
// random sites 1..sites of the demo tracker, each at most txs times, until
// the returned stop is called; stop fails the test on a writer's error.
func startWriters(t *testing.T, db *sql.DB, n, sites, txs int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ctx.Err() == nil && i < txs; i++ {
				site := 1 + rng.IntN(sites)
				tx, err := db.Begin()
				if err != nil {
					errs <- err
					return
				}
				// A multi-statement transaction: never shipped in halves.
				_, err1 := tx.Exec("UPDATE issues SET priority = ?, estimate = ? WHERE site_id = ? AND id % 3 = ?", rng.IntN(5), rng.Float64()*100, site, i%3)
				_, err2 := tx.Exec("INSERT INTO comments (site_id, issue_id, author, body) SELECT site_id, id, 'w', ? FROM issues WHERE site_id = ? LIMIT 1", fmt.Sprint("c", w, "-", i), site)
				_, err3 := tx.Exec("DELETE FROM comments WHERE id = (SELECT min(id) FROM comments WHERE site_id = ? AND parent_id IS NOT NULL)", site)
				if err := firstErr(err1, err2, err3); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	return func() {
		t.Helper()
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writer: %v", err)
		}
	}
}

// repositoryEqualsLive rebuilds sites 1..sites of the demo tracker from the
// repository at its newest position and compares them with the live rows.
func repositoryEqualsLive(t *testing.T, c *cli, db *sql.DB, sites int) {
	t.Helper()
	cfg, err := config.Load(c.config)
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(context.Background(), cfg.State, cfg.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	blobs, err := blob.Open(context.Background(), cfg.Backups, cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := backup.OpenRepo(context.Background(), &backup.Repo{Blobs: blobs, State: store})
	if err != nil {
		t.Fatal(err)
	}
	cur, _, err := repo.Cursor(context.Background(), "tracker")
	if err != nil {
		t.Fatal(err)
	}
	rd, err := repo.OpenAt(context.Background(), "tracker", backup.Upto{Pos: cur.Pos})
	if err != nil {
		t.Fatal(err)
	}
	for site := 1; site <= sites; site++ {
		got := map[string][]string{}
		err := rd.Tenant(context.Background(), fmt.Sprint(site), func(tb *change.Table, ch *change.Change) error {
			got[tb.Name] = append(got[tb.Name], rowText(ch.Row))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"issues", "comments", "attachments", "projects", "sites"} {
			want := liveRows(t, db, table, site)
			if !slices.Equal(got[table], want) {
				t.Fatalf("site %d table %s: the repository has %d rows, the database %d, or they differ", site, table, len(got[table]), len(want))
			}
		}
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// rowText renders a row with each value's kind, so 1 and '1' differ.
func rowText(row []change.Value) string {
	s := ""
	for _, v := range row {
		switch v.Kind {
		case change.Null:
			s += "|null"
		case change.Int:
			s += fmt.Sprintf("|i%d", v.Int)
		case change.Float:
			s += fmt.Sprintf("|f%b", v.Float)
		case change.Blob:
			s += fmt.Sprintf("|b%x", v.Bytes)
		default:
			s += fmt.Sprintf("|t%q", v.Bytes)
		}
	}
	return s
}

// liveRows reads a tenant's rows of one demo table, in primary key order,
// rendered as rowText renders rebuilt ones.
func liveRows(t *testing.T, db *sql.DB, table string, site int) []string {
	t.Helper()
	col := "site_id"
	if table == "sites" {
		col = "id"
	}
	rows, err := db.Query(fmt.Sprintf("SELECT * FROM %s WHERE %s = ? ORDER BY id", table, col), site)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, vals := range productdbtest.Values(t, rows) {
		row := make([]change.Value, len(vals))
		for i, v := range vals {
			switch x := v.(type) {
			case nil:
				row[i] = change.Value{Kind: change.Null}
			case int64:
				row[i] = change.Value{Kind: change.Int, Int: x}
			case float64:
				row[i] = change.Value{Kind: change.Float, Float: x}
			case []byte:
				row[i] = change.Value{Kind: change.Blob, Bytes: x}
			case string:
				row[i] = change.Value{Kind: change.Text, Bytes: []byte(x)}
			default:
				t.Fatalf("unexpected %T", v)
			}
		}
		out = append(out, rowText(row))
	}
	return out
}
