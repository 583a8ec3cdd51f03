package capture

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// TestBasic: a snapshot plus the changes after it rebuild the tables,
// including a primary-key change (recorded as delete + insert) and a
// multi-row transaction that arrives whole.
func TestBasic(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e, 3)
		x.exec(t, "INSERT INTO items (site_id, id, title, n) VALUES ('s000', 1, 'one', 1), ('s001', 2, 'two', 2)")
		m, cur := x.snapshot(t, x.src)
		x.same(t, m)

		tx, err := x.raw.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"INSERT INTO items (site_id, id, title) VALUES ('s002', 3, 'three')",
			"UPDATE items SET title = 'uno' WHERE id = 1",
			"UPDATE items SET id = 20 WHERE id = 2",
			"DELETE FROM items WHERE id = 3",
			"INSERT INTO notes (id, site_id, body, data) VALUES (1, 's000', '', NULL)",
		} {
			if _, err := tx.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		b, err := x.src.Read(x.ctx, cur, 1000)
		if err != nil {
			t.Fatal(err)
		}
		checkBatch(t, cur, b)
		var ops []string
		for _, c := range b.Changes {
			ops = append(ops, string(c.Op)+":"+c.Table)
		}
		want := "I:items U:items D:items I:items D:items I:notes"
		if got := strings.Join(ops, " "); got != want {
			t.Fatalf("ops %q, want %q", got, want)
		}
		tx0 := b.Changes[0].Tx
		for i, c := range b.Changes {
			if c.Tx != tx0 || c.TxEnd != (i == len(b.Changes)-1) {
				t.Fatalf("change %d: tx %d end %v; one transaction expected", i, c.Tx, c.TxEnd)
			}
			if c.Time.IsZero() || time.Since(c.Time) > time.Minute {
				t.Fatalf("change %d time %v", i, c.Time)
			}
		}
		m.batch(t, b)
		x.same(t, m)
		cur = x.drain(t, x.src, m, b.End)
		if err := x.src.Ack(x.ctx, cur); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReplay is the main property: a snapshot taken while writers run, plus
// every batch read after it, rebuilds the tables exactly. Concurrent writer
// goroutines commit random multi-row transactions (inserts, updates,
// deletes, key changes) across many tenants; the reader reads with random
// batch sizes, acknowledges now and then, restarts (a new Source from the
// last acknowledged cursor) and re-reads from older cursors. No change is
// lost or duplicated, positions are contiguous, and a transaction is never
// split: each writer transaction's changes share one Tx, and on PostgreSQL
// every batch ends at a transaction end.
func TestReplay(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		const sites, writers = 24, 4
		// Writers run until the reader has seen this many changes after
		// the snapshot.
		goal := uint64(1500)
		if testing.Short() {
			goal = 300
		}
		x := setup(t, e, sites)
		stop := make(chan struct{})
		rng := rand.New(rand.NewPCG(1, uint64(len(e.Name))))

		var wg sync.WaitGroup
		errs := make(chan error, writers)
		started := make(chan struct{}, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- x.writer(w, stop, rand.New(rand.NewPCG(uint64(w), 7)), started)
			}()
		}
		for range writers {
			<-started
		}
		m, cur := x.snapshot(t, x.src)
		snapPos := cur.Pos

		seen := map[uint64]change.Change{} // every change read, by position
		txOf := map[string]uint64{}        // writer transaction tag -> Tx
		batchOf := map[uint64]int{}        // Tx -> the batch it was read in
		var acked Cursor = cur
		cursors := []Cursor{cur} // batch ends since the last Ack
		src := x.src
		applied := cur.Pos
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		finished, quiet := false, 0
		for batch := 0; ; batch++ {
			if applied > snapPos+goal && stop != nil {
				close(stop)
				stop = nil
			}
			select {
			case <-done:
				finished = true
			default:
			}
			max := 1 + rng.IntN(60)
			b, err := src.Read(x.ctx, cur, max)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Changes) == 0 {
				if finished {
					if quiet++; quiet >= 2 {
						break
					}
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			quiet = 0
			checkBatch(t, cur, b)
			last := b.Changes[len(b.Changes)-1]
			if e.Name == "postgres" && !last.TxEnd {
				t.Fatalf("batch ends inside transaction %d", last.Tx)
			}
			if !last.TxEnd && len(b.Changes) < max {
				t.Fatalf("batch of %d (max %d) ends without a transaction end", len(b.Changes), max)
			}
			m.shapes(b.Tables)
			for i := range b.Changes {
				c := b.Changes[i]
				if old, ok := seen[c.Pos]; ok {
					if !sameChange(old, c) {
						t.Fatalf("position %d read again differs: %+v then %+v", c.Pos, old, c)
					}
					continue
				}
				if c.Pos != applied+1 {
					t.Fatalf("position %d applied after %d", c.Pos, applied)
				}
				applied = c.Pos
				seen[c.Pos] = c
				if bi, ok := batchOf[c.Tx]; ok && bi != batch && seen[c.Pos-1].Tx != c.Tx {
					t.Fatalf("transaction %d appears in batches %d and %d, not adjacent", c.Tx, bi, batch)
				}
				batchOf[c.Tx] = batch
				if c.Op != change.Delete && c.Table != "sites" {
					tag := c.Row[len(c.Row)-1]
					if c.Table == "items" {
						tag = c.Row[4]
					}
					if k := string(tag.Bytes); k != "" {
						if tx, ok := txOf[k]; ok && tx != c.Tx {
							t.Fatalf("writer transaction %s split across Tx %d and %d", k, tx, c.Tx)
						}
						txOf[k] = c.Tx
					}
				}
				m.apply(t, &c)
			}
			cur = b.End
			cursors = append(cursors, cur)
			switch r := rng.IntN(10); {
			case r < 3:
				if err := src.Ack(x.ctx, cur); err != nil {
					t.Fatal(err)
				}
				acked, cursors = cur, []Cursor{cur}
			case r == 3:
				// Restart from the last acknowledged cursor.
				src.Close()
				src = x.open(t)
				cur = acked
			case r == 4:
				// Re-read from an older cursor than the last Read.
				cur = cursors[rng.IntN(len(cursors))]
			}
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		x.same(t, m)
		if len(txOf) < int(goal)/10 {
			t.Fatalf("only %d tagged writer transactions were seen", len(txOf))
		}
		t.Logf("%d changes in %d writer transactions after the snapshot", applied-snapPos, len(txOf))
		// Behind the last Ack is refused, not silently skipped.
		if acked.Src > 0 && acked.Pos > 0 {
			if err := src.Ack(x.ctx, cur); err != nil {
				t.Fatal(err)
			}
			_, err := src.Read(x.ctx, Cursor{Pos: acked.Pos - 1, Src: acked.Src - 1}, 10)
			if fault.CodeOf(err) != fault.Refused {
				t.Fatalf("read behind the acknowledged cursor: %v", err)
			}
		}
	})
}

func sameChange(a, b change.Change) bool {
	if a.Pos != b.Pos || a.Tx != b.Tx || a.TxEnd != b.TxEnd || a.Table != b.Table || a.Op != b.Op || a.Tenant != b.Tenant || len(a.Row) != len(b.Row) {
		return false
	}
	for i := range a.Row {
		if !a.Row[i].Equal(b.Row[i]) {
			return false
		}
	}
	return true
}

// writer commits random transactions of 1–5 statements until stop is
// closed. Worker w owns item and note ids w*1e6…, so workers never collide
// on a key.
func (x *env) writer(w int, stop <-chan struct{}, rng *rand.Rand, started chan<- struct{}) error {
	type key struct {
		site string
		id   int
	}
	var items []key
	var notes []int
	next := w * 1000000
	site := func() string { return siteKey(rng.IntN(24)) }
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if i == 3 {
			started <- struct{}{}
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
		tag := fmt.Sprintf("w%d-t%d", w, i)
		tx, err := x.raw.BeginTx(x.ctx, nil)
		if err != nil {
			return err
		}
		ex := func(q string, args ...any) error {
			_, err := tx.Exec(q, args...)
			return err
		}
		var stmtErr error
		newItems, newNotes := items, notes
		for range 1 + rng.IntN(5) {
			switch r := rng.IntN(10); {
			case r < 3 || len(newItems) == 0:
				next++
				k := key{site(), next}
				newItems = append(newItems, k)
				stmtErr = ex("INSERT INTO items (site_id, id, title, n, tag) VALUES ($1, $2, $3, $4, $5)", k.site, k.id, fmt.Sprintf("item %d ✓", k.id), rng.Int64(), tag)
			case r < 5:
				k := newItems[rng.IntN(len(newItems))]
				stmtErr = ex("UPDATE items SET title = $1, n = $2, tag = $3 WHERE site_id = $4 AND id = $5", fmt.Sprintf("t%d", rng.IntN(1000)), rng.Int64(), tag, k.site, k.id)
			case r < 6:
				j := rng.IntN(len(newItems))
				k := newItems[j]
				next++
				newItems = append(newItems[:j:j], newItems[j+1:]...)
				newItems = append(newItems, key{k.site, next})
				stmtErr = ex("UPDATE items SET id = $1, tag = $2 WHERE site_id = $3 AND id = $4", next, tag, k.site, k.id)
			case r < 7:
				j := rng.IntN(len(newItems))
				k := newItems[j]
				newItems = append(newItems[:j:j], newItems[j+1:]...)
				stmtErr = ex("DELETE FROM items WHERE site_id = $1 AND id = $2", k.site, k.id)
			case r < 8:
				next++
				newNotes = append(newNotes, next)
				data := make([]byte, rng.IntN(40))
				for b := range data {
					data[b] = byte(rng.IntN(3))
				}
				stmtErr = ex("INSERT INTO notes (id, site_id, body, data, tag) VALUES ($1, $2, $3, $4, $5)", next, site(), "", data, tag)
			case r < 9 && len(newNotes) > 0:
				j := rng.IntN(len(newNotes))
				if rng.IntN(2) == 0 {
					stmtErr = ex("UPDATE notes SET body = $1, data = NULL, tag = $2 WHERE id = $3", strings.Repeat("é", rng.IntN(5)), tag, newNotes[j])
				} else {
					stmtErr = ex("DELETE FROM notes WHERE id = $1", newNotes[j])
					newNotes = append(newNotes[:j:j], newNotes[j+1:]...)
				}
			default:
				stmtErr = ex("UPDATE sites SET name = $1 WHERE id = $2", tag, site())
			}
			if stmtErr != nil {
				break
			}
		}
		if stmtErr != nil {
			tx.Rollback()
			return fmt.Errorf("writer %d: %w", w, stmtErr)
		}
		if rng.IntN(8) == 0 {
			// Rolled back: nothing of it may appear, and no gap either.
			if err := tx.Rollback(); err != nil {
				return err
			}
			continue
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("writer %d commit: %w", w, err)
		}
		items, notes = newItems, newNotes
	}
}

// TestChildWriter is the writer process TestKillWriter starts and kills:
// it opens a transaction, writes, says so, and waits to be killed.
func TestChildWriter(t *testing.T) {
	dsn := os.Getenv("LIFELINE_CAPTURE_CHILD")
	if dsn == "" {
		t.Skip("run by TestKillWriter")
	}
	driver := "pgx"
	if strings.HasPrefix(dsn, "file:") {
		driver = "sqlite"
	}
	db, err := openRaw(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := tx.Exec("INSERT INTO notes (id, site_id, body, tag) VALUES ($1, 's000', 'never committed', 'killed')", 900000+i); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

// TestKillWriter: a writer process killed with SIGKILL in the middle of a
// transaction ships nothing of it, and capture goes on without a gap.
func TestKillWriter(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e, 2)
		m, cur := x.snapshot(t, x.src)
		x.exec(t, "INSERT INTO notes (id, site_id, body) VALUES (1, 's001', 'before')")

		childDSN := x.dsn
		if e.Name == "sqlite" {
			childDSN = "file:" + x.base + "/product.db?_pragma=busy_timeout(20000)&_txlock=immediate"
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildWriter$", "-test.v")
		cmd.Env = append(os.Environ(), "LIFELINE_CAPTURE_CHILD="+childDSN)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "ready" {
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		x.exec(t, "INSERT INTO notes (id, site_id, body) VALUES (2, 's001', 'after')")
		cur = x.drain(t, x.src, m, cur)
		for _, r := range m.rows["notes"] {
			if string(r[4].Bytes) == "killed" {
				t.Fatal("a change of the killed transaction was captured")
			}
		}
		if len(m.rows["notes"]) != 2 {
			t.Fatalf("%d notes captured, want 2", len(m.rows["notes"]))
		}
		x.same(t, m)
		_ = cur
	})
}
