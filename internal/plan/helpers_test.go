package plan

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/demo"
	"lifeline/internal/fault/faulttest"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/restore"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var ctx = context.Background()

// clock is the tests' time: the wall clock plus whatever a test (or a
// bake, through Sleep) advanced it by, so no test waits on the wall clock,
// and times Lifeline records never fall behind the commit times change
// capture stamps (which are the database's own).
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// sleep is the plan service's Sleep: it advances the clock at once.
func (c *clock) sleep(ctx context.Context, d time.Duration) error {
	c.Advance(d)
	return ctx.Err()
}

// options shape a fixture.
type options struct {
	tenants  int
	internal int
	wikiName string // the second product's name ("wiki")
	backup   bool   // capture, a repository and a restorer
	stateDSN string // "" = SQLite in the folder
	dir      string // an existing fixture to open again (a crash test's child)
	owner    string // lease owner of both services; default "test:1"
}

// bundle is what a test needs: a demo SaaS, protected, with services.
type bundle struct {
	dir      string
	clock    *clock
	store    *state.Store
	tenants  *tenant.Service
	plans    *Service
	raw      map[string]*sql.DB
	blobDir  string
	repo     *backup.Repo
	shippers []*backup.Shipper
}

func setup(t *testing.T, o options) *bundle {
	t.Helper()
	if o.tenants == 0 {
		o.tenants = 40
	}
	if o.wikiName == "" {
		o.wikiName = "wiki"
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
		if err := demo.Generate(ctx, dir, demo.Options{Tenants: o.tenants, Internal: o.internal, Seed: 7}); err != nil {
			t.Fatal(err)
		}
	}
	if o.owner == "" {
		o.owner = "test:1"
	}
	c := &clock{}
	dsn := o.stateDSN
	if dsn == "" {
		dsn = "sqlite:state.db"
	}
	store, err := state.Open(ctx, dsn, dir, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := &bundle{dir: dir, clock: c, store: store, raw: map[string]*sql.DB{}}
	b.tenants = &tenant.Service{Store: store, Retention: 30 * 24 * time.Hour, Now: c.Now, Owner: o.owner}
	for _, pr := range []struct{ name, file string }{{"tracker", "tracker.db"}, {o.wikiName, "wiki.db"}} {
		db, err := productdb.Open(ctx, "sqlite:"+pr.file, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		spec := productdb.Spec{Product: pr.name, TenantColumn: "site_id", TenantsTable: "sites"}
		if pr.name == "tracker" {
			spec.Apps = map[string][]string{"insight": {"insight_objects", "insight_links"}}
		}
		l, err := tenant.Protect(ctx, store, db, spec, "tester")
		if err != nil {
			t.Fatal(err)
		}
		b.tenants.Products = append(b.tenants.Products, &tenant.Product{Name: pr.name, DB: db, Layout: l})
		raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, pr.file)+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		b.raw[pr.name] = raw
	}
	b.plans = &Service{Tenants: b.tenants, Sleep: c.sleep, Owner: o.owner}
	if o.backup {
		b.openBackup(t)
	}
	if _, err := OpenService(ctx, b.plans); err != nil {
		t.Fatal(err)
	}
	b.tenants.Admit = b.plans.Admit
	return b
}

// openBackup starts capture in both products, takes the first snapshots,
// and gives the plan service a restorer over them.
func (b *bundle) openBackup(t *testing.T) {
	t.Helper()
	b.blobDir = filepath.Join(b.dir, "backups")
	blobs, err := blob.Open(ctx, "file:backups", b.dir)
	if err != nil {
		t.Fatal(err)
	}
	b.repo, err = backup.OpenRepo(ctx, &backup.Repo{Blobs: blobs, State: b.store, Now: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range b.tenants.Products {
		src, err := capture.Open(ctx, p.DB, p.Layout, capture.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		b.shippers = append(b.shippers, &backup.Shipper{Repo: b.repo, Product: p.Name, Source: src})
	}
	b.ship(ctx)
	rs, err := restore.OpenService(ctx, &restore.Service{Tenants: b.tenants, Repo: b.repo, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.plans.Restorer = &Backup{Service: rs, CatchUp: b.ship}
}

// ship ships everything captured so far, as serve's shipper would.
func (b *bundle) ship(ctx context.Context) error {
	for _, s := range b.shippers {
		if _, err := s.Ship(ctx); err != nil {
			return err
		}
	}
	return nil
}

// keys makes plain keys for sites from..to.
func keys(from, to int, suffix string) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(i)+suffix)
	}
	return out
}

var (
	alice = Actor{Name: "alice", Role: state.RoleOperator}
	bob   = Actor{Name: "bob", Role: state.RoleApprover}
	carol = Actor{Name: "carol", Role: state.RoleAdmin}
)

func (b *bundle) create(t *testing.T, req CreateRequest) *Plan {
	t.Helper()
	if req.Requester == "" {
		req.Requester = alice.Name
	}
	if req.Reason == "" {
		req.Reason = "test"
	}
	p, err := b.plans.Create(ctx, req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return p
}

func (b *bundle) approve(t *testing.T, p *Plan, by Actor) *Plan {
	t.Helper()
	p, err := b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: by, Hash: p.ReportHash, Confirm: len(p.Steps)})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	return p
}

// digest is the independent observer's view of one site in one product.
func (b *bundle) digest(t *testing.T, product, key string) string {
	t.Helper()
	d, n, err := demo.Digest(ctx, b.raw[product], product, key)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s/%d", d, n)
}

// digests records every site's digest in both products.
func (b *bundle) digests(t *testing.T, n int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for p := range b.raw {
		for i := 1; i <= n; i++ {
			out[fmt.Sprintf("%s/%d", p, i)] = b.digest(t, p, fmt.Sprint(i))
		}
	}
	return out
}

func (b *bundle) state(t *testing.T, product, key string) productdb.State {
	t.Helper()
	d, err := b.tenants.Show(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return d.Products[product].State
}

func (b *bundle) appState(t *testing.T, key, app string) productdb.State {
	t.Helper()
	d, err := b.tenants.Show(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range d.Products["tracker"].Apps {
		if as.App == app {
			return as.State
		}
	}
	return productdb.Active
}

// wantCode fails unless err has code and mentions every word.
var wantCode = faulttest.WantCode

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func auditActions(t *testing.T, s *state.Store) []string {
	t.Helper()
	entries, err := s.ListAudit(ctx, "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Action)
	}
	return out
}

var errStop = errors.New("stop")
