package capture

import (
	"context"
	"database/sql"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/fault/faulttest"
	"lifeline/internal/pgtest"
)

// itemIDs are the ids of a batch's items rows, in order, as text.
func itemIDs(b Batch) []string {
	var ids []string
	for _, c := range b.Changes {
		if c.Table != "items" {
			continue
		}
		if v := c.Row[1]; v.Kind == change.Int {
			ids = append(ids, strconv.FormatInt(v.Int, 10))
		} else {
			ids = append(ids, string(v.Bytes))
		}
	}
	return ids
}

// A SQLite Read syncs the write-ahead log before it hands changes on, after
// reading them: a change committed with synchronous=NORMAL and shipped
// could otherwise be lost to a power cut and its position given to
// another. Each sync here is raced by an application commit; a change
// committed after a read's last sync must wait for the next read. A sync
// that fails fails the read, and the changes come with the next one.
func TestSQLiteReadSyncsLogBeforeHandingOn(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0], 1)
	_, cur := x.snapshot(t, x.src)
	x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', 1), ('s000', 2)")
	syncs := 0
	x.db.SetLogSync(func(f *os.File) error {
		syncs++
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", 100+syncs)
		return f.Sync()
	})
	b, err := x.src.Read(x.ctx, cur, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if syncs == 0 {
		t.Fatal("a read handed changes on without syncing the write-ahead log")
	}
	if got := itemIDs(b); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("first read: items %v, want [1 2] (a change committed after the read's sync was handed on)", got)
	}
	next, err := x.src.Read(x.ctx, b.End, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(next); !slices.Equal(got, []string{"101"}) {
		t.Fatalf("second read: items %v, want [101]", got)
	}

	x.db.SetLogSync(func(f *os.File) error { return &fs.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO} })
	failed, err := x.src.Read(x.ctx, next.End, 1000)
	faulttest.WantCode(t, err, fault.Unavailable, "-wal")
	if len(failed.Changes) != 0 {
		t.Fatalf("a read whose sync failed handed on %d changes", len(failed.Changes))
	}
	x.db.SetLogSync((*os.File).Sync)
	again, err := x.src.Read(x.ctx, next.End, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(again); !slices.Equal(got, []string{"102"}) {
		t.Fatalf("read after the failed sync: items %v, want [102]", got)
	}
}

// A PostgreSQL Read returns once it has every transaction committed before
// it began, however long the stream pauses before the last of them: it
// does not stop at a pause of Options.Idle with some still to come (it
// used to, and TestAckBacklog failed now and then).
//
// The pause is a real one. A transaction committed with
// synchronous_commit=off is committed and visible, but the walsender
// decodes only WAL that is flushed, and the WAL writer flushes it only
// every wal_writer_delay — 10 s on a server of this test's own, where
// nothing else writes. So transaction A, committed synchronously, streams
// at once; B, committed asynchronously before the Read began, comes only
// once the test flushes the WAL by a synchronous commit a second after A
// was sent. If the WAL was flushed before that all the same (B ended a WAL
// page, which wakes the WAL writer), the round proves nothing and is tried
// again.
func TestPostgresReadWaitsOutAPauseBeforeItsStart(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, stmt := range []string{"ALTER SYSTEM SET wal_writer_delay = '10s'", "SELECT pg_reload_conf()", "CREATE DATABASE held"} {
		if err := srv.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	e := engines[1]
	e.NewDB = func(t *testing.T) (string, string, *sql.DB) {
		dsn := srv.URL("held")
		raw, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		return dsn, "", raw
	}
	x := setup(t, e, 1)
	x.exec(t, "CREATE TABLE flushes (n bigint)") // not protected: not in the stream
	x.src.Close()
	src, err := Open(x.ctx, x.db, x.l, Options{Status: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, cur := x.snapshot(t, src)
	conn, err := x.raw.Conn(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exec := func(stmt string, args ...any) {
		t.Helper()
		if _, err := conn.ExecContext(x.ctx, stmt, args...); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	lsn := func(query string) pglogrepl.LSN {
		t.Helper()
		var s string
		if err := conn.QueryRowContext(x.ctx, query).Scan(&s); err != nil {
			t.Fatal(err)
		}
		l, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	for round := 1; ; round++ {
		a, b := strconv.Itoa(2*round), strconv.Itoa(2*round+1)
		exec("SET synchronous_commit = on")
		exec("INSERT INTO items (site_id, id) VALUES ('s000', $1)", a)
		aFlushed := lsn("SELECT pg_current_wal_flush_lsn()::text")
		exec("SET synchronous_commit = off")
		exec("INSERT INTO items (site_id, id) VALUES ('s000', $1)", b)

		type read struct {
			b   Batch
			err error
		}
		done := make(chan read, 1)
		ctx, cancel := context.WithTimeout(x.ctx, 50*time.Second)
		defer cancel() // on a failure below, so that src.Close need not wait for the read
		go func() {
			b, err := src.Read(ctx, cur, 1000)
			done <- read{b, err}
		}()
		// A is on its way once the walsender has decoded past it.
		for deadline := time.Now().Add(30 * time.Second); lsn("SELECT coalesce(max(sent_lsn), '0/0')::text FROM pg_stat_replication") < aFlushed; {
			if time.Now().After(deadline) {
				t.Fatal("the walsender did not send the first transaction in 30 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second) // many times Options.Idle
		flushed := lsn("SELECT pg_current_wal_flush_lsn()::text")
		exec("SET synchronous_commit = on")
		exec("INSERT INTO flushes VALUES ($1)", round)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := itemIDs(r.b); len(got) != 2 || got[0] != a || got[1] != b {
			t.Fatalf("round %d: read items %v, want [%s %s]: both committed before the read began, the second streamed after a pause", round, got, a, b)
		}
		cur = r.b.End
		if flushed < pglogrepl.LSN(r.b.End.Src) {
			return // B was held back until the flush: the pause was real
		}
		t.Logf("round %d: the WAL was flushed (to %s) before the test flushed it; again", round, flushed)
		if round == 5 {
			t.Fatal("could not hold a transaction back from the stream in 5 rounds")
		}
	}
}
