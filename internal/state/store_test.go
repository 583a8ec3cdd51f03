package state

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/fault/faulttest"
	"lifeline/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backend makes fresh, empty state store locations on one engine.
type backend struct {
	engine string
	newDSN func(t *testing.T) (dsn, baseDir string)
}

var sqliteBackend = backend{EngineSQLite, func(t *testing.T) (string, string) {
	return "sqlite:state.db", t.TempDir() // relative path: exercises baseDir
}}

var postgresBackend = backend{EnginePostgres, func(t *testing.T) (string, string) {
	return pgtest.NewDB(t), ""
}}

func TestSQLite(t *testing.T) {
	t.Parallel()
	runConformance(t, sqliteBackend)
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	runConformance(t, postgresBackend)
}

// clock is a settable clock for leases and ordering.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)}
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// env is one test's store on a fresh database.
type env struct {
	s     *Store
	clock *clock
	dsn   string
	base  string
	b     backend
}

// setup opens a store on a fresh database with a fake clock.
func setup(t *testing.T, b backend) *env {
	t.Helper()
	dsn, base := b.newDSN(t)
	e := &env{clock: newClock(), dsn: dsn, base: base, b: b}
	e.s = e.open(t)
	return e
}

// open opens another Store on the same database, as a second process would.
func (e *env) open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), e.dsn, e.base, e.clock.Now)
	if err != nil {
		t.Fatalf("Open(%s): %v", e.dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// exec runs raw SQL, bypassing the store, as a script with credentials would.
func (e *env) exec(t *testing.T, q string, args ...any) error {
	t.Helper()
	_, err := e.s.DB().Exec(e.s.Rebind(q), args...)
	return err
}

func (e *env) mustExec(t *testing.T, q string, args ...any) {
	t.Helper()
	if err := e.exec(t, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// dropTrigger removes an append-only trigger, as an attacker with owner
// rights could, so the tests can show VerifyAudit still notices.
func (e *env) dropTrigger(t *testing.T, table, name string) {
	t.Helper()
	q := "DROP TRIGGER " + name
	if e.b.engine == EnginePostgres {
		q += " ON " + table
	}
	e.mustExec(t, q)
}

func (e *env) dropAuditTriggers(t *testing.T) {
	e.dropTrigger(t, "audit_log", "audit_log_no_update")
	e.dropTrigger(t, "audit_log", "audit_log_no_delete")
}

// wantCode fails unless err has code and mentions every word.
var wantCode = faulttest.WantCode

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var ctx = context.Background()

func newOp(action string, steps ...Step) *Operation {
	var targets []string
	for _, st := range steps {
		targets = append(targets, "site:"+st.Tenant)
	}
	return &Operation{Action: action, Actor: "alice", Reason: "ticket 7", Targets: targets, Steps: steps}
}

func step(product, tenant string) Step { return Step{Product: product, Tenant: tenant} }

func runConformance(t *testing.T, b backend) {
	tests := map[string]func(t *testing.T, b backend){
		"Migrations":        testMigrations,
		"MigrateOther":      testMigrateOther,
		"OperationLife":     testOperationLifecycle,
		"OperationInvalid":  testOperationInvalid,
		"TenantLock":        testTenantLock,
		"Lease":             testLease,
		"AuditConcurrent":   testAuditConcurrent,
		"AuditEdited":       testAuditEdited,
		"AuditRemoved":      testAuditRemoved,
		"AuditReordered":    testAuditReordered,
		"AuditList":         testAuditList,
		"AppendOnly":        testAppendOnly,
		"Erasures":          testErasures,
		"Tokens":            testTokens,
		"Schema":            testSchema,
		"ConcurrentOpsLock": testConcurrentOpsLock,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

func testMigrations(t *testing.T, b backend) {
	e := setup(t, b)
	if e.s.Engine() != b.engine {
		t.Fatalf("Engine() = %q, want %q", e.s.Engine(), b.engine)
	}
	if _, _, err := e.s.CreateToken(ctx, "ci", RoleViewer); err != nil {
		t.Fatal(err)
	}
	must(t, e.s.Close())
	// Reopening applies nothing new and keeps the data.
	s2 := e.open(t)
	toks, err := s2.ListTokens(ctx)
	must(t, err)
	if len(toks) != 1 {
		t.Fatalf("after reopen: %d tokens, want 1", len(toks))
	}
	var applied int
	must(t, s2.DB().QueryRow("SELECT COUNT(*) FROM lifeline_migrations_state WHERE version_id > 0").Scan(&applied))
	if applied != 2 {
		t.Fatalf("lifeline_migrations_state lists %d migrations, want 2", applied)
	}

	// Several processes opening a fresh store at once all succeed, and
	// each migration is applied exactly once.
	dsn, base := b.newDSN(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := Open(ctx, dsn, base, nil)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	s3, err := Open(ctx, dsn, base, nil)
	must(t, err)
	defer s3.Close()
	must(t, s3.DB().QueryRow("SELECT COUNT(*) FROM lifeline_migrations_state WHERE version_id > 0").Scan(&applied))
	if applied != 2 {
		t.Fatalf("after concurrent opens lifeline_migrations_state lists %d migrations, want 2", applied)
	}
}

func testMigrateOther(t *testing.T, b backend) {
	e := setup(t, b)
	fsys := fstest.MapFS{
		"00001_things.sql": {Data: []byte("-- +goose Up\nCREATE TABLE demo_things (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n-- +goose Down\nDROP TABLE demo_things;\n")},
		"sqlite/00002_engine.sql": {Data: []byte("-- +goose Up\nCREATE TABLE demo_engine_sqlite (x INTEGER);\n" +
			"-- +goose Down\nDROP TABLE demo_engine_sqlite;\n")},
		"postgres/00002_engine.sql": {Data: []byte("-- +goose Up\nCREATE TABLE demo_engine_postgres (x INTEGER);\n" +
			"-- +goose Down\nDROP TABLE demo_engine_postgres;\n")},
	}
	must(t, e.s.Migrate(ctx, "demo", fsys))
	must(t, e.s.Migrate(ctx, "demo", fsys)) // idempotent
	e.mustExec(t, "INSERT INTO demo_things (id, name) VALUES (?, ?)", 1, "one")
	e.mustExec(t, "INSERT INTO demo_engine_"+b.engine+" (x) VALUES (1)")
	other := map[string]string{EngineSQLite: EnginePostgres, EnginePostgres: EngineSQLite}[b.engine]
	if err := e.exec(t, "SELECT x FROM demo_engine_"+other); err == nil {
		t.Fatalf("the %s-only migration ran on %s", other, b.engine)
	}
	var applied int
	must(t, e.s.DB().QueryRow("SELECT COUNT(*) FROM lifeline_migrations_demo WHERE version_id > 0").Scan(&applied))
	if applied != 2 {
		t.Fatalf("lifeline_migrations_demo lists %d migrations, want 2", applied)
	}
	wantCode(t, e.s.Migrate(ctx, "state", fsys), fault.Invalid, "reserved")
	wantCode(t, e.s.Migrate(ctx, "Bad-Name", fsys), fault.Invalid)
}

func testOperationLifecycle(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	op := newOp("delete", step("tracker", "a"), step("wiki", "a"), Step{Product: "tracker", Tenant: "b", App: "insight"})
	must(t, s.CreateOperation(ctx, op, "host1:42", time.Minute))
	if !strings.HasPrefix(op.ID, "op_") || op.Status != OpRunning || op.Owner != "host1:42" {
		t.Fatalf("created op not filled in: %+v", op)
	}
	if !op.Created.Equal(e.clock.Now().Truncate(time.Microsecond)) || !op.LeaseUntil.Equal(op.Created.Add(time.Minute)) {
		t.Fatalf("Created %v LeaseUntil %v, clock %v", op.Created, op.LeaseUntil, e.clock.Now())
	}
	got, err := s.GetOperation(ctx, op.ID)
	must(t, err)
	if !reflect.DeepEqual(got, op) {
		t.Fatalf("GetOperation:\n got %+v\nwant %+v", got, op)
	}

	e.clock.Advance(time.Second)
	must(t, s.UpdateStep(ctx, op.ID, Step{Product: "tracker", Tenant: "a", Status: StepDone, Rows: map[string]int64{"issues": 12, "comments": 1 << 40}}))
	must(t, s.UpdateStep(ctx, op.ID, Step{Product: "tracker", Tenant: "b", App: "insight", Status: StepFailed, Error: "boom"}))
	wantCode(t, s.UpdateStep(ctx, op.ID, Step{Product: "tracker", Tenant: "b", Status: StepDone}), fault.NotFound, "tracker/b")
	wantCode(t, s.UpdateStep(ctx, "op_nope", Step{Product: "tracker", Tenant: "a", Status: StepDone}), fault.NotFound)
	wantCode(t, s.UpdateStep(ctx, op.ID, Step{Product: "tracker", Tenant: "a", Status: "weird"}), fault.Invalid)

	got, err = s.GetOperation(ctx, op.ID)
	must(t, err)
	if st := got.Steps[0]; st.Status != StepDone || st.Rows["comments"] != 1<<40 || st.Rows["issues"] != 12 || !st.Finished.Equal(got.Created.Add(time.Second)) {
		t.Fatalf("step 0 after update: %+v", st)
	}
	if st := got.Steps[1]; st.Status != StepPending || st.Product != "wiki" || !st.Finished.IsZero() {
		t.Fatalf("step 1 changed: %+v", st)
	}
	if st := got.Steps[2]; st.Status != StepFailed || st.Error != "boom" || st.App != "insight" {
		t.Fatalf("step 2 after update: %+v", st)
	}

	e.clock.Advance(time.Second)
	must(t, s.FinishOperation(ctx, op.ID, OpFailed, "tracker/b/insight: boom"))
	got, err = s.GetOperation(ctx, op.ID)
	must(t, err)
	if got.Status != OpFailed || got.Error != "tracker/b/insight: boom" || !got.Finished.Equal(got.Created.Add(2*time.Second)) || !got.LeaseUntil.IsZero() {
		t.Fatalf("after finish: %+v", got)
	}
	wantCode(t, s.FinishOperation(ctx, op.ID, OpDone, ""), fault.Conflict, "already failed")
	wantCode(t, s.FinishOperation(ctx, op.ID, OpRunning, ""), fault.Invalid)
	wantCode(t, s.FinishOperation(ctx, "op_nope", OpDone, ""), fault.NotFound)
	// A later operation that undoes it marks it rolled_back, keeping why it failed.
	must(t, s.FinishOperation(ctx, op.ID, OpRolledBack, ""))
	got, _ = s.GetOperation(ctx, op.ID)
	if got.Status != OpRolledBack || got.Error != "tracker/b/insight: boom" {
		t.Fatalf("after rollback: %+v", got)
	}
	wantCode(t, s.FinishOperation(ctx, op.ID, OpRolledBack, ""), fault.Conflict)

	// Listing: newest first, filters, limit.
	e.clock.Advance(time.Second)
	op2 := newOp("deactivate", step("tracker", "c"))
	must(t, s.CreateOperation(ctx, op2, "host1:42", time.Minute))
	e.clock.Advance(time.Second)
	op3 := newOp("deactivate", step("tracker", "a"))
	must(t, s.CreateOperation(ctx, op3, "host1:42", time.Minute))
	must(t, s.FinishOperation(ctx, op3.ID, OpDone, ""))

	ids := func(ops []Operation, err error) string {
		t.Helper()
		must(t, err)
		var out []string
		for _, o := range ops {
			out = append(out, o.ID)
		}
		return strings.Join(out, ",")
	}
	if got, want := ids(s.ListOperations(ctx, OpFilter{})), op3.ID+","+op2.ID+","+op.ID; got != want {
		t.Fatalf("ListOperations = %s, want %s", got, want)
	}
	if got, want := ids(s.ListOperations(ctx, OpFilter{Tenant: "a"})), op3.ID+","+op.ID; got != want {
		t.Fatalf("ListOperations(tenant a) = %s, want %s", got, want)
	}
	if got, want := ids(s.ListOperations(ctx, OpFilter{Status: OpRunning})), op2.ID; got != want {
		t.Fatalf("ListOperations(running) = %s, want %s", got, want)
	}
	if got, want := ids(s.ListOperations(ctx, OpFilter{Limit: 1})), op3.ID; got != want {
		t.Fatalf("ListOperations(limit 1) = %s, want %s", got, want)
	}
	list, err := s.ListOperations(ctx, OpFilter{Tenant: "a"})
	must(t, err)
	if len(list[1].Steps) != 3 || len(list[0].Steps) != 1 {
		t.Fatalf("listed operations lack their steps: %+v", list)
	}
	if ops, err := s.ListOperations(ctx, OpFilter{Tenant: "nobody"}); err != nil || len(ops) != 0 {
		t.Fatalf("ListOperations(unknown tenant) = %v, %v", ops, err)
	}

	_, err = s.GetOperation(ctx, "op_missing")
	wantCode(t, err, fault.NotFound, "op_missing", "lifeline ops list")

	// The audit log tells the story of the operation.
	audit, err := s.ListAudit(ctx, op.ID, 0)
	must(t, err)
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action)
		if a.Actor != "alice" {
			t.Errorf("audit %s actor %q, want alice", a.Action, a.Actor)
		}
	}
	if got, want := strings.Join(actions, ","), "operation.start,operation.finish,operation.finish"; got != want {
		t.Fatalf("audit of %s: %s, want %s", op.ID, got, want)
	}
	if audit[1].Detail["status"] != "failed" || audit[0].Detail["action"] != "delete" {
		t.Fatalf("audit detail: %+v / %+v", audit[0].Detail, audit[1].Detail)
	}
}

func testOperationInvalid(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	for _, op := range []*Operation{
		nil,
		{Actor: "a"},       // no action
		{Action: "delete"}, // no actor
		newOp("delete", step("tracker", "")),
		newOp("delete", step("", "a")),
		newOp("delete", step("tracker", "a"), step("tracker", "a")),
	} {
		wantCode(t, s.CreateOperation(ctx, op, "me", time.Minute), fault.Invalid)
	}
	wantCode(t, s.CreateOperation(ctx, newOp("delete"), "", time.Minute), fault.Invalid)
	wantCode(t, s.CreateOperation(ctx, newOp("delete"), "me", 0), fault.Invalid)
	op := newOp("delete", step("tracker", "a"))
	must(t, s.CreateOperation(ctx, op, "me", time.Minute))
	dup := newOp("delete", step("tracker", "z"))
	dup.ID = op.ID
	wantCode(t, s.CreateOperation(ctx, dup, "me", time.Minute), fault.Conflict, op.ID)
	if n := len(must2(s.ListAudit(ctx, "", 0))(t)); n != 1 {
		t.Fatalf("refused operations wrote %d audit entries, want only the one that was created", n)
	}
}

func must2[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		must(t, err)
		return v
	}
}

func testTenantLock(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	op1 := newOp("delete", step("tracker", "a"), step("wiki", "b"))
	must(t, s.CreateOperation(ctx, op1, "host1", time.Minute))
	auditBefore := len(must2(s.ListAudit(ctx, "", 0))(t))

	op2 := newOp("purge", step("tracker", "c"), step("wiki", "b"))
	err := s.CreateOperation(ctx, op2, "host2", time.Minute)
	wantCode(t, err, fault.Conflict, op1.ID, "tenant b", "lifeline ops resume "+op1.ID)
	// Nothing of op2 was written: not the operation, not its steps, not its
	// lock on c, not an audit entry.
	if op2.ID != "" {
		if _, err := s.GetOperation(ctx, op2.ID); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("refused operation %s was stored: %v", op2.ID, err)
		}
	}
	if ops := must2(s.ListOperations(ctx, OpFilter{}))(t); len(ops) != 1 {
		t.Fatalf("%d operations stored, want 1", len(ops))
	}
	if n := len(must2(s.ListAudit(ctx, "", 0))(t)); n != auditBefore {
		t.Fatalf("refused operation appended audit entries: %d, want %d", n, auditBefore)
	}
	var steps int
	must(t, s.DB().QueryRow("SELECT COUNT(*) FROM operation_steps").Scan(&steps))
	if steps != 2 {
		t.Fatalf("%d steps stored, want 2", steps)
	}
	op3 := newOp("delete", step("tracker", "c"))
	must(t, s.CreateOperation(ctx, op3, "host2", time.Minute)) // c was not left locked

	// Once the lease expires, the conflict says the holder was interrupted.
	e.clock.Advance(2 * time.Minute)
	err = s.CreateOperation(ctx, newOp("purge", step("wiki", "b")), "host2", time.Minute)
	wantCode(t, err, fault.Conflict, "interrupted", "lifeline ops resume "+op1.ID)

	// Finishing releases the locks, and only that operation's.
	must(t, s.FinishOperation(ctx, op1.ID, OpDone, ""))
	must(t, s.CreateOperation(ctx, newOp("purge", step("wiki", "b"), step("tracker", "a")), "host2", time.Minute))
	err = s.CreateOperation(ctx, newOp("purge", step("tracker", "c")), "host2", time.Minute)
	wantCode(t, err, fault.Conflict, op3.ID)
}

// testConcurrentOpsLock races operations over the same tenant from two
// stores (two processes): exactly one wins each tenant.
func testConcurrentOpsLock(t *testing.T, b backend) {
	e := setup(t, b)
	stores := []*Store{e.s, e.open(t)}
	const racers = 8
	var wg sync.WaitGroup
	results := make(chan error, racers)
	for i := range racers {
		wg.Go(func() {
			op := newOp("delete", step("tracker", "shared"), step("tracker", fmt.Sprintf("own%d", i)))
			results <- stores[i%2].CreateOperation(ctx, op, fmt.Sprintf("p%d", i), time.Minute)
		})
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		if err == nil {
			won++
		} else if fault.CodeOf(err) != fault.Conflict {
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d operations took the same tenant, want 1", won)
	}
	var locks int
	must(t, e.s.DB().QueryRow("SELECT COUNT(*) FROM tenant_locks").Scan(&locks))
	if locks != 2 {
		t.Fatalf("%d tenant locks held, want 2 (the winner's)", locks)
	}
	n, err := e.s.VerifyAudit(ctx)
	must(t, err)
	if n != 1 {
		t.Fatalf("audit has %d entries, want 1", n)
	}
}

func testLease(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	op := newOp("delete", step("tracker", "a"))
	must(t, s.CreateOperation(ctx, op, "A", time.Minute))

	err := s.ClaimOperation(ctx, op.ID, "B", time.Minute)
	wantCode(t, err, fault.Conflict, "being run by A until")
	e.clock.Advance(50 * time.Second)
	must(t, s.ClaimOperation(ctx, op.ID, "A", time.Minute)) // renewal
	got := must2(s.GetOperation(ctx, op.ID))(t)
	if want := e.clock.Now().Truncate(time.Microsecond).Add(time.Minute); !got.LeaseUntil.Equal(want) || got.Owner != "A" {
		t.Fatalf("after renewal: owner %s lease %v, want A %v", got.Owner, got.LeaseUntil, want)
	}
	e.clock.Advance(50 * time.Second) // the original lease would have expired
	wantCode(t, s.ClaimOperation(ctx, op.ID, "B", time.Minute), fault.Conflict, "being run by A")

	e.clock.Advance(11 * time.Second) // now the renewed one has too
	must(t, s.ClaimOperation(ctx, op.ID, "B", 2*time.Minute))
	got = must2(s.GetOperation(ctx, op.ID))(t)
	if got.Owner != "B" {
		t.Fatalf("owner after takeover = %s, want B", got.Owner)
	}
	wantCode(t, s.ClaimOperation(ctx, op.ID, "A", time.Minute), fault.Conflict, "being run by B")
	audit := must2(s.ListAudit(ctx, op.ID, 0))(t)
	if last := audit[len(audit)-1]; last.Action != "operation.claim" || last.Detail["previous_owner"] != "A" || last.Detail["owner"] != "B" {
		t.Fatalf("takeover not audited: %+v", last)
	}
	if len(audit) != 2 {
		t.Fatalf("renewals should not be audited: %d entries", len(audit))
	}

	// A runner known to be dead is taken over without waiting for its lease,
	// but only from that runner.
	must(t, s.ClaimOperation(ctx, op.ID, "B", time.Minute))
	wantCode(t, s.TakeOverOperation(ctx, op.ID, "A", "C", time.Minute), fault.Conflict, "being run by B")
	must(t, s.TakeOverOperation(ctx, op.ID, "B", "C", time.Minute))
	if got := must2(s.GetOperation(ctx, op.ID))(t); got.Owner != "C" {
		t.Fatalf("owner after take-over from a dead runner = %s, want C", got.Owner)
	}
	wantCode(t, s.TakeOverOperation(ctx, op.ID, "", "D", time.Minute), fault.Invalid, "previous owner")

	// A runner that stops without finishing releases its lease: another
	// takes the operation over at once, with no time passing. A release by
	// a runner that no longer holds the lease changes nothing.
	must(t, s.ReleaseOperation(ctx, op.ID, "B"))
	wantCode(t, s.ClaimOperation(ctx, op.ID, "D", time.Minute), fault.Conflict, "being run by C")
	must(t, s.ReleaseOperation(ctx, op.ID, "C"))
	if got := must2(s.GetOperation(ctx, op.ID))(t); !got.LeaseUntil.Before(e.clock.Now()) {
		t.Fatalf("released lease runs until %v, want before now %v", got.LeaseUntil, e.clock.Now())
	}
	must(t, s.ClaimOperation(ctx, op.ID, "D", time.Minute))

	wantCode(t, s.ClaimOperation(ctx, "op_unknown", "A", time.Minute), fault.NotFound, "lifeline ops list")
	must(t, s.FinishOperation(ctx, op.ID, OpDone, ""))
	wantCode(t, s.ClaimOperation(ctx, op.ID, "B", time.Minute), fault.Conflict, "not running")
}

func testAuditConcurrent(t *testing.T, b backend) {
	e := setup(t, b)
	// Two stores on one database stand for two processes.
	stores := []*Store{e.s, e.open(t)}
	const writers, each = 6, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			s := stores[w%2]
			for i := range each {
				var err error
				if i%4 == 3 {
					err = s.RecordErasure(ctx, &Erasure{Tenant: fmt.Sprint("t", w), Product: "tracker", Reason: "gdpr", Rows: map[string]int64{"x": 1}})
				} else {
					_, err = s.AppendAudit(ctx, AuditEntry{Actor: fmt.Sprint("w", w), Action: "test.append", Detail: map[string]any{"i": i}})
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	n, err := e.s.VerifyAudit(ctx)
	must(t, err)
	if n != writers*each {
		t.Fatalf("VerifyAudit checked %d entries, want %d", n, writers*each)
	}
	entries := must2(e.s.ListAudit(ctx, "", 0))(t)
	for i, en := range entries {
		if en.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d", i, en.Seq)
		}
		if i > 0 && en.PrevHash != entries[i-1].Hash {
			t.Fatalf("entry %d does not chain", en.Seq)
		}
	}
	ers := must2(e.s.Erasures(ctx, ""))(t)
	for i, er := range ers {
		if er.ID != int64(i+1) {
			t.Fatalf("erasure ids not consecutive: %d at %d", er.ID, i)
		}
	}
}

// appendN appends n entries and returns them.
func appendN(t *testing.T, s *Store, n int) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	for i := range n {
		en, err := s.AppendAudit(ctx, AuditEntry{Actor: "alice", Action: "test", OpID: "op_x", Detail: map[string]any{"i": i, "big": int64(1) << 60}})
		must(t, err)
		out = append(out, en)
	}
	return out
}

func testAuditEdited(t *testing.T, b backend) {
	for name, edit := range map[string]string{
		"detail": `UPDATE audit_log SET detail = '{"big":1152921504606846976,"i":99}' WHERE seq = 3`,
		"actor":  `UPDATE audit_log SET actor = 'mallory' WHERE seq = 3`,
		"time":   `UPDATE audit_log SET at = at + 1 WHERE seq = 3`,
		"mangle": `UPDATE audit_log SET detail = '{not json' WHERE seq = 3`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, b)
			appendN(t, e.s, 5)
			n, err := e.s.VerifyAudit(ctx)
			if err != nil || n != 5 {
				t.Fatalf("untouched log: %d, %v", n, err)
			}
			e.dropAuditTriggers(t)
			e.mustExec(t, edit)
			n, err = e.s.VerifyAudit(ctx)
			wantCode(t, err, fault.Refused, "entry 3 was edited")
			if n != 2 {
				t.Fatalf("VerifyAudit checked %d entries before the bad one, want 2", n)
			}
		})
	}
}

func testAuditRemoved(t *testing.T, b backend) {
	t.Run("middle", func(t *testing.T) {
		t.Parallel()
		e := setup(t, b)
		appendN(t, e.s, 5)
		e.dropAuditTriggers(t)
		e.mustExec(t, "DELETE FROM audit_log WHERE seq = 3")
		_, err := e.s.VerifyAudit(ctx)
		wantCode(t, err, fault.Refused, "entry 3 was removed")
	})
	t.Run("renumbered", func(t *testing.T) {
		t.Parallel()
		e := setup(t, b)
		appendN(t, e.s, 5)
		e.dropAuditTriggers(t)
		e.mustExec(t, "DELETE FROM audit_log WHERE seq = 3")
		e.mustExec(t, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
		e.mustExec(t, "UPDATE audit_log SET seq = 4 WHERE seq = 5")
		_, err := e.s.VerifyAudit(ctx)
		wantCode(t, err, fault.Refused, "entry 3 does not follow entry 2", "removed")
	})
	t.Run("first", func(t *testing.T) {
		t.Parallel()
		e := setup(t, b)
		appendN(t, e.s, 3)
		e.dropAuditTriggers(t)
		e.mustExec(t, "DELETE FROM audit_log WHERE seq = 1")
		_, err := e.s.VerifyAudit(ctx)
		wantCode(t, err, fault.Refused, "entry 1 was removed")
	})
}

func testAuditReordered(t *testing.T, b backend) {
	e := setup(t, b)
	appendN(t, e.s, 5)
	e.dropAuditTriggers(t)
	e.mustExec(t, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
	e.mustExec(t, "UPDATE audit_log SET seq = 2 WHERE seq = 4")
	e.mustExec(t, "UPDATE audit_log SET seq = 4 WHERE seq = -1")
	n, err := e.s.VerifyAudit(ctx)
	wantCode(t, err, fault.Refused, "reordered", "entry 2")
	if n != 1 {
		t.Fatalf("checked %d before the reordering, want 1", n)
	}
}

func testAuditList(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	en, err := s.AppendAudit(ctx, AuditEntry{Action: "x"})
	must(t, err)
	if en.Actor != "lifeline" || en.Seq != 1 || en.PrevHash != "" || len(en.Hash) != 64 {
		t.Fatalf("first entry: %+v", en)
	}
	en2, err := s.AppendAudit(WithActor(ctx, "bob"), AuditEntry{Action: "y", OpID: "op_1", Detail: map[string]any{"k": "v", "n": 2.5}})
	must(t, err)
	if en2.Actor != "bob" || en2.PrevHash != en.Hash || !en2.At.Equal(e.clock.Now().Truncate(time.Microsecond)) {
		t.Fatalf("second entry: %+v", en2)
	}
	for i := range 3 {
		_, err := s.AppendAudit(ctx, AuditEntry{Action: "z", OpID: "op_1", Detail: map[string]any{"i": i}})
		must(t, err)
	}
	all := must2(s.ListAudit(ctx, "", 0))(t)
	if len(all) != 5 || !reflect.DeepEqual(all[1], en2) {
		t.Fatalf("ListAudit all: %+v", all)
	}
	tail := must2(s.ListAudit(ctx, "", 2))(t)
	if len(tail) != 2 || tail[0].Seq != 4 || tail[1].Seq != 5 {
		t.Fatalf("ListAudit limit 2: %+v", tail)
	}
	byOp := must2(s.ListAudit(ctx, "op_1", 0))(t)
	if len(byOp) != 4 || byOp[0].Seq != 2 {
		t.Fatalf("ListAudit op_1: %+v", byOp)
	}
	_, err = s.AppendAudit(ctx, AuditEntry{Actor: "a"})
	wantCode(t, err, fault.Invalid)
	_, err = s.AppendAudit(ctx, AuditEntry{Action: "x", Detail: map[string]any{"f": func() {}}})
	wantCode(t, err, fault.Invalid)

	// The hash is reproducible from the documented recipe.
	canon := fmt.Sprintf(`{"seq":2,"at":%q,"actor":"bob","action":"y","op_id":"op_1","detail":{"k":"v","n":2.5}}`,
		en2.At.Format("2006-01-02T15:04:05.000000Z"))
	if h := hashSecret(en.Hash + canon); h != en2.Hash {
		t.Fatalf("hash of %s = %s, stored %s", canon, h, en2.Hash)
	}
}

func testAppendOnly(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	er := &Erasure{Actor: "alice", Reason: "gdpr request 9", OpID: "op_1", Tenant: "a", Product: "tracker", Rows: map[string]int64{"issues": 3}}
	must(t, s.RecordErasure(ctx, er))
	for _, q := range []string{
		"UPDATE erasure_ledger SET reason = 'nothing to see'",
		"DELETE FROM erasure_ledger",
		"UPDATE audit_log SET actor = 'mallory'",
		"DELETE FROM audit_log",
	} {
		err := e.exec(t, q)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: got %v, want the database to refuse it as append-only", q, err)
		}
	}
	if b.engine == EnginePostgres {
		for _, q := range []string{"TRUNCATE erasure_ledger", "TRUNCATE audit_log"} {
			if err := e.exec(t, q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: got %v, want it refused", q, err)
			}
		}
	}
	ers := must2(s.Erasures(ctx, ""))(t)
	if len(ers) != 1 || ers[0].Reason != "gdpr request 9" {
		t.Fatalf("ledger changed: %+v", ers)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 1 {
		t.Fatalf("audit after refused edits: %d, %v", n, err)
	}
}

func testErasures(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	var recorded []Erasure
	for i, tenant := range []string{"a", "b", "a"} {
		e.clock.Advance(time.Minute)
		er := &Erasure{Reason: "retention", OpID: fmt.Sprint("op_", i), Tenant: tenant, Product: "tracker", App: "insight", Rows: map[string]int64{"t": int64(i)}}
		must(t, s.RecordErasure(WithActor(ctx, "scheduler"), er))
		if er.ID != int64(i+1) || !er.At.Equal(e.clock.Now().Truncate(time.Microsecond)) || er.Actor != "scheduler" {
			t.Fatalf("recorded erasure not filled: %+v", er)
		}
		recorded = append(recorded, *er)
	}
	all := must2(s.Erasures(ctx, ""))(t)
	if !reflect.DeepEqual(all, recorded) {
		t.Fatalf("Erasures(\"\"):\n got %+v\nwant %+v", all, recorded)
	}
	forA := must2(s.Erasures(ctx, "a"))(t)
	if len(forA) != 2 || forA[0].ID != 1 || forA[1].ID != 3 {
		t.Fatalf("Erasures(a): %+v", forA)
	}
	if got := must2(s.Erasures(ctx, "zzz"))(t); len(got) != 0 {
		t.Fatalf("Erasures(unknown): %+v", got)
	}
	audit := must2(s.ListAudit(ctx, "op_1", 0))(t)
	if len(audit) != 1 || audit[0].Action != "erasure" || audit[0].Detail["tenant"] != "b" || audit[0].Actor != "scheduler" {
		t.Fatalf("erasure audit: %+v", audit)
	}
	wantCode(t, s.RecordErasure(ctx, &Erasure{Product: "tracker"}), fault.Invalid)
}

var secretPattern = regexp.MustCompile(`^ll_[0-9a-hjkmnp-tv-z]{12}_[0-9a-hjkmnp-tv-z]{52}$`)

func testTokens(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	secret, tok, err := s.CreateToken(WithActor(ctx, "root"), "deploy-bot", RoleOperator)
	must(t, err)
	if !secretPattern.MatchString(secret) || !strings.Contains(secret, "_"+tok.ID+"_") {
		t.Fatalf("secret %q does not have the documented form", secret)
	}
	if tok.Name != "deploy-bot" || tok.Role != RoleOperator || tok.Revoked || !tok.Created.Equal(e.clock.Now().Truncate(time.Microsecond)) {
		t.Fatalf("token: %+v", tok)
	}
	got, err := s.Authenticate(ctx, secret)
	must(t, err)
	if !reflect.DeepEqual(got, tok) {
		t.Fatalf("Authenticate = %+v, want %+v", got, tok)
	}
	e.clock.Advance(time.Second)
	secret2, tok2, err := s.CreateToken(ctx, "viewer", RoleViewer)
	must(t, err)
	if tok2.ID == tok.ID || secret2 == secret {
		t.Fatal("two tokens share an ID or secret")
	}

	// The secret is stored nowhere, only its hash.
	var n int
	must(t, s.DB().QueryRow(s.Rebind("SELECT COUNT(*) FROM api_tokens WHERE secret_hash = ? OR id = ? OR name = ?"), secret, secret, secret).Scan(&n))
	if n != 0 {
		t.Fatal("the secret is stored in plain in api_tokens")
	}
	var details []string
	rows, err := s.DB().Query("SELECT detail FROM audit_log")
	must(t, err)
	for rows.Next() {
		var d string
		must(t, rows.Scan(&d))
		details = append(details, d)
	}
	rows.Close()
	if all := strings.Join(details, "\n"); strings.Contains(all, secret[len(secret)-20:]) || len(details) != 2 {
		t.Fatalf("audit details leak the secret or are missing: %s", all)
	}
	audit := must2(s.ListAudit(ctx, "", 0))(t)
	if audit[0].Action != "token.create" || audit[0].Actor != "root" || audit[0].Detail["token"] != tok.ID || audit[0].Detail["role"] != "operator" {
		t.Fatalf("token.create audit: %+v", audit[0])
	}

	wrong := secret[:len(secret)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(secret, "a")]
	for name, bad := range map[string]string{
		"wrong secret": wrong,
		"other id":     "ll_" + tok2.ID + secret[len("ll_")+12:],
		"unknown id":   "ll_000000000000" + secret[len("ll_")+12:],
		"malformed":    "hunter2",
		"empty":        "",
		"bad chars":    "ll_" + tok.ID + "_" + strings.Repeat("!", 52),
		"truncated":    secret[:len(secret)-1],
		"prefix only":  "ll_" + tok.ID,
	} {
		_, err := s.Authenticate(ctx, bad)
		if fault.CodeOf(err) != fault.Unauthorized {
			t.Errorf("%s: Authenticate(%q) = %v, want unauthorized", name, bad, err)
		}
	}

	must(t, s.RevokeToken(ctx, tok.ID))
	must(t, s.RevokeToken(ctx, tok.ID)) // idempotent
	_, err = s.Authenticate(ctx, secret)
	wantCode(t, err, fault.Unauthorized, "revoked")
	if _, err := s.Authenticate(ctx, secret2); err != nil {
		t.Fatalf("revoking one token affected another: %v", err)
	}
	toks := must2(s.ListTokens(ctx))(t)
	if len(toks) != 2 || toks[0].ID != tok.ID || !toks[0].Revoked || toks[1].Revoked {
		t.Fatalf("ListTokens: %+v", toks)
	}
	wantCode(t, s.RevokeToken(ctx, "nope"), fault.NotFound)
	_, _, err = s.CreateToken(ctx, "x", "superuser")
	wantCode(t, err, fault.Invalid, "superuser", "viewer, operator, approver, admin")
	_, _, err = s.CreateToken(ctx, " ", RoleAdmin)
	wantCode(t, err, fault.Invalid)
	actions := []string{}
	for _, a := range must2(s.ListAudit(ctx, "", 0))(t) {
		actions = append(actions, a.Action)
	}
	if got := strings.Join(actions, ","); got != "token.create,token.create,token.revoke" {
		t.Fatalf("token audit trail: %s", got)
	}
}

func testSchema(t *testing.T, b backend) {
	e := setup(t, b)
	s := e.s
	_, err := s.LoadSchema(ctx, "tracker")
	wantCode(t, err, fault.NotFound, "product tracker has not been protected yet", "run `lifeline protect`")

	schema, _ := json.Marshal(map[string]any{"tables": []string{"issues", "sites"}, "note": "ünïcode"})
	rec := SchemaRecord{Product: "tracker", Fingerprint: "sha256:aaa", Schema: schema}
	must(t, s.SaveSchema(ctx, rec))
	got := must2(s.LoadSchema(ctx, "tracker"))(t)
	rec.Protected = e.clock.Now().Truncate(time.Microsecond)
	if !reflect.DeepEqual(*got, rec) {
		t.Fatalf("LoadSchema:\n got %+v\nwant %+v", got, rec)
	}
	e.clock.Advance(time.Hour)
	rec2 := SchemaRecord{Product: "tracker", Fingerprint: "sha256:bbb", Schema: []byte(`{"tables":[]}`), Protected: e.clock.Now().Truncate(time.Microsecond)}
	must(t, s.SaveSchema(ctx, rec2))
	must(t, s.SaveSchema(ctx, SchemaRecord{Product: "wiki", Fingerprint: "sha256:ccc", Schema: []byte(`{}`)}))
	got = must2(s.LoadSchema(ctx, "tracker"))(t)
	if !reflect.DeepEqual(*got, rec2) {
		t.Fatalf("after upsert:\n got %+v\nwant %+v", got, rec2)
	}
	wantCode(t, s.SaveSchema(ctx, SchemaRecord{Product: "x"}), fault.Invalid)
	wantCode(t, s.SaveSchema(ctx, SchemaRecord{Product: "x", Fingerprint: "f", Schema: []byte{0xff, 0xfe}}), fault.Invalid)
}

// Engine-independent tests.

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	_, err := Open(ctx, "mysql://x", "", nil)
	wantCode(t, err, fault.Invalid, "sqlite:", "postgres://")
	_, err = Open(ctx, "sqlite:", "", nil)
	wantCode(t, err, fault.Invalid)
	_, err = Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "missing", "dir", "state.db"), "", nil)
	wantCode(t, err, fault.Unavailable, "folder exists")
	_, err = Open(ctx, "postgres://lifeline:s3cret@127.0.0.1:1/state?sslmode=disable&connect_timeout=2", "", nil)
	wantCode(t, err, fault.Unavailable, "PostgreSQL is running")
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestSQLiteAbsolutePathAndWAL(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "abs.db")
	s, err := Open(ctx, "sqlite:"+path, "/somewhere/else", nil)
	must(t, err)
	defer s.Close()
	var mode string
	var fk int
	must(t, s.DB().QueryRow("PRAGMA journal_mode").Scan(&mode))
	must(t, s.DB().QueryRow("PRAGMA foreign_keys").Scan(&fk))
	if mode != "wal" || fk != 1 {
		t.Fatalf("journal_mode %s foreign_keys %d, want wal 1", mode, fk)
	}
	// Foreign keys are enforced: a step must belong to an operation.
	_, err = s.DB().Exec("INSERT INTO operation_steps (op_id, pos, product, tenant, status) VALUES ('op_none', 0, 'p', 't', 'pending')")
	if err == nil {
		t.Fatal("a step without an operation was accepted")
	}
}

func TestRebind(t *testing.T) {
	t.Parallel()
	pg := &Store{engine: EnginePostgres}
	lite := &Store{engine: EngineSQLite}
	q := `SELECT '?', "a?b", x FROM t -- why?
WHERE a = ? AND b = ? /* c? */ AND c = 'it''s?' AND d = ?`
	want := `SELECT '?', "a?b", x FROM t -- why?
WHERE a = $1 AND b = $2 /* c? */ AND c = 'it''s?' AND d = $3`
	if got := pg.Rebind(q); got != want {
		t.Fatalf("Rebind:\n got %s\nwant %s", got, want)
	}
	if got := lite.Rebind(q); got != q {
		t.Fatalf("sqlite Rebind changed the query: %s", got)
	}
}

func TestNewOperationID(t *testing.T) {
	t.Parallel()
	pattern := regexp.MustCompile(`^op_[0-9a-hjkmnp-tv-z]{20}$`)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		id := NewOperationID(base.Add(time.Duration(i) * time.Millisecond))
		if !pattern.MatchString(id) {
			t.Fatalf("%q does not look like an operation ID", id)
		}
		if id <= prev {
			t.Fatalf("IDs do not sort by time: %s after %s", id, prev)
		}
		prev = id
		seen[id] = true
		if dup := NewOperationID(base.Add(time.Duration(i) * time.Millisecond)); seen[dup] {
			t.Fatalf("same-instant IDs collide: %s", dup)
		} else {
			seen[dup] = true
		}
	}
	// A later time in a different year still sorts after.
	if a, b := NewOperationID(base), NewOperationID(base.AddDate(3, 0, 0)); a >= b {
		t.Fatalf("%s >= %s", a, b)
	}
}
