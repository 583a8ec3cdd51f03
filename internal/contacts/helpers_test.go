package contacts

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/fault/faulttest"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backend makes a fresh vault location and a fresh state store on one engine.
type backend struct {
	engine string
	newDSN func(t *testing.T) (vault, stateDSN, dir string)
}

var sqliteBackend = backend{EngineSQLite, func(t *testing.T) (string, string, string) {
	return "sqlite:contacts.db", "sqlite:state.db", t.TempDir()
}}

var postgresBackend = backend{EnginePostgres, func(t *testing.T) (string, string, string) {
	db := pgtest.NewDB(t)
	return db, db, t.TempDir() // one database, as in a shared deployment: the vault keeps to its schema
}}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// directory is a fake tenant directory: key -> product -> state.
type directory struct {
	mu     sync.Mutex
	states map[string]map[string]productdb.State
	err    error
}

func (d *directory) List(context.Context) ([]tenant.Summary, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	var out []tenant.Summary
	for k, st := range d.states {
		cp := map[string]productdb.State{}
		for p, v := range st {
			cp[p] = v
		}
		out = append(out, tenant.Summary{Key: k, Name: "Site " + k, States: cp})
	}
	return out, nil
}

func (d *directory) set(key, product string, st productdb.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.states[key] == nil {
		d.states[key] = map[string]productdb.State{}
	}
	d.states[key][product] = st
}

// mail is one message the fake mailer took.
type mail struct{ to, subject, text string }

// mailer is a fake Mailer; addresses in refuse bounce for good.
type mailer struct {
	mu     sync.Mutex
	sent   []mail
	refuse map[string]bool
}

func (m *mailer) Send(_ context.Context, to, subject, text string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuse[to] {
		return fmt.Errorf("550 no such user: %w", ErrUndeliverable)
	}
	m.sent = append(m.sent, mail{to, subject, text})
	return nil
}

// link pulls the verification link out of the last message to addr.
func (m *mailer) link(t *testing.T, addr string) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.sent) - 1; i >= 0; i-- {
		if m.sent[i].to == addr {
			for _, f := range strings.Fields(m.sent[i].text) {
				if strings.Contains(f, VerifyPath) {
					return f
				}
			}
		}
	}
	t.Fatalf("no verification link sent to %s", addr)
	return ""
}

// env is one test's vault, ledger, repository, product and clock.
type env struct {
	t       *testing.T
	b       backend
	ctx     context.Context
	dir     string
	vault   string
	ledger  *state.Store
	store   *Store
	svc     *Service
	clock   *clock
	dirs    *directory
	mail    *mailer
	blobs   blob.Store
	product *sql.DB
	key     []byte
	logs    *syncBuffer // everything the service logged
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup makes a vault with a product of n tenants, each with an admin
// (admin-N@site-N.example) and, for even N, a billing contact.
func setup(t *testing.T, b backend, n int) *env {
	t.Helper()
	vault, stateDSN, dir := b.newDSN(t)
	e := &env{t: t, b: b, ctx: context.Background(), dir: dir, vault: vault,
		clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		dirs:  &directory{states: map[string]map[string]productdb.State{}},
		mail:  &mailer{refuse: map[string]bool{}}, logs: &syncBuffer{}}
	var err error
	if e.ledger, err = state.Open(e.ctx, stateDSN, dir, e.clock.Now); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ledger.Close() })
	if e.blobs, err = blob.OpenFile(filepath.Join(dir, "backups")); err != nil {
		t.Fatal(err)
	}
	e.product, err = sql.Open("sqlite", filepath.Join(dir, "tracker.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.product.Close() })
	e.productExec("CREATE TABLE site_admins (site_id INTEGER NOT NULL, email TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL)")
	for i := 1; i <= n; i++ {
		e.productExec("INSERT INTO site_admins VALUES (?, ?, ?, 'admin')", i, fmt.Sprintf("admin-%d@site-%d.example", i, i), fmt.Sprintf("Admin %d", i))
		if i%2 == 0 {
			e.productExec("INSERT INTO site_admins VALUES (?, ?, ?, 'billing')", i, fmt.Sprintf("billing-%d@site-%d.example", i, i), fmt.Sprintf("Billing %d", i))
		}
		e.dirs.set(fmt.Sprint(i), "tracker", productdb.Active)
	}
	e.open()
	return e
}

// open (re)opens the vault and its service, as a new process would.
func (e *env) open() {
	e.t.Helper()
	if e.store != nil {
		e.store.Close()
	}
	s, err := OpenStore(e.ctx, e.vault, e.dir)
	if err != nil {
		e.t.Fatalf("OpenStore(%s): %v", e.vault, err)
	}
	e.store = s
	e.t.Cleanup(func() { s.Close() })
	e.svc, err = New(Config{Store: s, Ledger: e.ledger, Directory: e.dirs, Blobs: e.blobs, Key: e.key, Mailer: e.mail,
		LinkBase: "https://ll.example", Now: e.clock.Now, Retention: 30 * 24 * time.Hour,
		Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		e.t.Fatal(err)
	}
}

// lose destroys the vault entirely: the file, or the schema.
func (e *env) lose() {
	e.t.Helper()
	e.store.Close()
	e.store = nil
	if e.b.engine == EngineSQLite {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(filepath.Join(e.dir, "contacts.db") + suffix); err != nil && !os.IsNotExist(err) {
				e.t.Fatal(err)
			}
		}
	} else {
		db, err := sql.Open("pgx", e.vault)
		if err != nil {
			e.t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("DROP SCHEMA " + Schema + " CASCADE"); err != nil {
			e.t.Fatal(err)
		}
	}
	e.open()
}

func (e *env) productExec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.product.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) source() Source {
	return Source{Name: "sync:tracker", Product: "tracker", DB: e.product, Query: "SELECT site_id AS tenant, email, name, role FROM site_admins"}
}

// sync runs a sync that must succeed and returns its one Changes.
func (e *env) sync(o SyncOptions) *Changes {
	e.t.Helper()
	if o.Actor == "" {
		o.Actor = "tester"
	}
	chs, err := e.svc.Sync(e.ctx, []Source{e.source()}, o)
	if err != nil {
		e.t.Fatalf("sync: %v", err)
	}
	return chs[0]
}

// revision reads the vault's revision.
func (e *env) revision() int64 {
	e.t.Helper()
	var rev int64
	must(e.t, e.store.read(e.ctx, func(t *tx) error {
		var err error
		rev, err = t.revision()
		return err
	}))
	return rev
}

// count counts rows of a vault table.
func (e *env) count(table string) int {
	e.t.Helper()
	var n int
	must(e.t, e.store.read(e.ctx, func(t *tx) error {
		return t.QueryRowContext(t.ctx, "SELECT count(*) FROM "+table).Scan(&n)
	}))
	return n
}

// wantCode fails unless err has code and mentions every word.
var wantCode = faulttest.WantCode

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
