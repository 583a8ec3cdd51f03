// Package restore rebuilds chosen tenants, in chosen products, as of a
// moment in the backup window, and puts them back: into the live product
// databases (in place, one verified transaction per tenant and product, as
// an operation that can be resumed and undone) or into a separate empty
// database (out of place, for drills and side-by-side validation).
//
// Its cost follows what is restored: only the chosen tenants' byte ranges
// of the backup objects are read, and memory does not grow with a tenant's
// size. docs/restore.md describes the whole mechanism.
package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Service restores tenants. Fill the fields, call OpenService (once per
// state store, it prepares the tables restore keeps there), then Run.
type Service struct {
	// Tenants gives the products, the state store, the lease owner and the
	// clock; restore runs as one of its operations.
	Tenants *tenant.Service
	Repo    *backup.Repo
	// Workers is how many tenants are rebuilt at once, and applied at once
	// on PostgreSQL (SQLite has one writer per database). Default
	// runtime.NumCPU().
	Workers int
	// ChunkRows bounds each staging transaction (default 5,000 rows), so
	// a huge tenant never needs one huge client transaction; and, with
	// BatchTenants (default 32), how many tenants' rows one swap
	// transaction takes.
	ChunkRows    int
	BatchTenants int
	// DirectRows is the most rows of one table that a tenant may have to
	// be swapped directly, without staging (policy replace; see
	// productdb.SwapSpec.Rows): default productdb.DirectMaxRows, at most
	// that; negative stages every tenant.
	DirectRows int
	// TxBudget is about how long one SQLite write transaction of the
	// restore holds the write lock (default 4ms), and Pause how long the
	// lock is then left free (default 8ms): meanwhile the application's
	// writers, waiting for SQLite's one write lock, get it. SQLite's busy
	// handler tries again 1, 3, 8, then 18 ms after a writer found the lock
	// taken: after a 4 ms transaction, an 8 ms pause always holds one of
	// those tries, with slack for a transaction that overran its budget;
	// a writer that misses a pause sleeps through the next transaction
	// too. Longer transactions restore faster and make those writers wait
	// longer (docs/restore.md, Batches).
	TxBudget, Pause time.Duration
	// Progress, if set, is called as work advances (from several
	// goroutines, never at once).
	Progress func(Progress)
	// BeforeStep, if set, runs before each tenant's swap; tests crash the
	// process there. Nil in production.
	BeforeStep func(state.Step)
	Log        *slog.Logger

	progressMu sync.Mutex
	progress   Progress
	hookMu     sync.Mutex
}

// OpenService prepares the state store's restore tables and returns s.
func OpenService(ctx context.Context, s *Service) (*Service, error) {
	if err := migrate(ctx, s.Tenants.Store); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) workers() int {
	if s.Workers > 0 {
		return s.Workers
	}
	return max(1, runtime.NumCPU())
}

func (s *Service) batchTenants() int {
	if s.BatchTenants > 0 {
		return s.BatchTenants
	}
	return 32
}

func (s *Service) pause() time.Duration {
	if s.Pause > 0 {
		return s.Pause
	}
	return 8 * time.Millisecond
}

func (s *Service) txBudget() time.Duration {
	if s.TxBudget > 0 {
		return s.TxBudget
	}
	return 4 * time.Millisecond
}

// directRows is the most rows of rt a tenant swapped directly may have.
func (s *Service) directRows(rt *productdb.RestoreTable) int {
	if s.DirectRows != 0 {
		return min(s.DirectRows, productdb.DirectMaxRows(rt))
	}
	return productdb.DirectMaxRows(rt)
}

func (s *Service) chunkRows() int {
	if s.ChunkRows > 0 {
		return s.ChunkRows
	}
	return 5000
}

// Request is one restore, as `lifeline restore` takes it.
type Request struct {
	// Tenants are plain tenant keys ("site:" is accepted and dropped).
	Tenants []string
	// To restores as of this moment; or Before, as of just before an
	// operation ("op_…": its start) or a change position ("pos:N", a raw
	// script Lifeline did not run; one product only). Exactly one is set.
	To     time.Time
	Before string
	// Products restricts the restore to these products; empty means every
	// product (a tenant need not live in all of them).
	Products []string
	// Into is the DSN of an empty database to restore into, out of place
	// (one product only); IntoBase is the folder sqlite: paths are
	// relative to.
	Into, IntoBase string
	Policy         productdb.Policy // default Replace
	DryRun         bool
	// SkipBroken restores the tenants whose backup objects are readable
	// and reports the others, instead of refusing.
	SkipBroken bool
	// AllowDrift restores tables that lost a column since the moment,
	// leaving that column's old values out, instead of refusing.
	AllowDrift bool
	Actor      string
	Reason     string

	resume string // Resume: the interrupted operation this must take over
}

// Report is the outcome of a restore (or of a dry run), for people and for
// --json.
type Report struct {
	Operation string           `json:"operation,omitempty"`
	Status    string           `json:"status"` // done, failed, interrupted, refused, planned
	DryRun    bool             `json:"dry_run"`
	Policy    productdb.Policy `json:"policy"`
	Moment    Moment           `json:"moment"`
	Into      string           `json:"into,omitempty"`
	// Objects are the backup objects the restore reads, and Bytes the
	// stored bytes of the chosen tenants in them.
	Objects []ObjectRead   `json:"objects"`
	Bytes   int64          `json:"bytes"`
	Tenants []TenantReport `json:"tenants"`
	// Rows is how many rows the restored tenants hold at the moment.
	Rows    int64   `json:"rows"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
	Hint    string  `json:"hint,omitempty"`
}

// Moment is the moment restored, per product.
type Moment struct {
	Time     *time.Time        `json:"time,omitempty"`
	Before   string            `json:"before,omitempty"`
	Undoes   string            `json:"undoes,omitempty"` // the restore an undo takes back
	Products map[string]string `json:"products"`         // product -> time or position restored
}

// ObjectRead is one backup object a restore reads.
type ObjectRead struct {
	Product string `json:"product"`
	Key     string `json:"key"`
	Kind    string `json:"kind"`
	Size    int64  `json:"size"`
}

// TenantReport is one tenant across the products restored.
type TenantReport struct {
	Tenant   string        `json:"tenant"`
	Products []*StepReport `json:"products"`
}

// StepReport is one tenant in one product.
type StepReport struct {
	Product string `json:"product"`
	// Status: restored, failed, skipped (broken backup), erased (in the
	// erasure ledger: never restored), interrupted (not reached before the
	// restore was cancelled: left as it was), planned (dry run), loaded
	// (--into).
	Status string          `json:"status"`
	State  productdb.State `json:"state,omitempty"`
	Tables []TableReport   `json:"tables,omitempty"`
	Rows   int64           `json:"rows"`
	// Hash is "verified" when every table's rows hashed to the rebuilt
	// ones, "mismatch" when they did not (the tenant was rolled back).
	Hash    string   `json:"hash,omitempty"`
	Seconds float64  `json:"seconds"`
	Bytes   int64    `json:"bytes"`
	Error   string   `json:"error,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Resumed: committed by an earlier, interrupted run of this restore.
	Resumed bool `json:"resumed,omitempty"`
}

// TableReport is one table of one tenant in one product.
type TableReport struct {
	Table string `json:"table"`
	productdb.TableResult
	Unchanged int64 `json:"unchanged,omitempty"` // dry run: rows already as at the moment
}

// Progress is how far a restore is.
type Progress struct {
	Phase     string    `json:"phase"` // rebuild, apply, load, plan
	Steps     int       `json:"steps"`
	StepsDone int       `json:"steps_done"`
	Rows      int64     `json:"rows"`
	Started   time.Time `json:"started"`
}

// step is one tenant in one product, as planned.
type step struct {
	product *tenant.Product
	tenant  string
	tables  []productdb.RestoreTable // restored tables, parents first
	report  *StepReport
	want    map[string]*productdb.TableHash
	// rows are the rebuilt rows of a tenant swapped directly, without
	// staging (see productdb.SwapSpec.Rows); nil: staged.
	rows []productdb.Batch
	skip bool // erased, broken or already done: nothing to apply
	done bool
}

// plan is a validated request, ready to run.
type plan struct {
	req      Request
	products []*tenant.Product
	readings map[string]*backup.Reading
	uptos    map[string]backup.Upto
	tables   map[string][]productdb.RestoreTable
	schemas  map[string]*productdb.Schema
	steps    []*step
	report   *Report
	resume   *state.Operation
	key      string
}

// Run restores req's tenants, or with DryRun only plans it. It refuses
// (fault.Refused, NotFound, Conflict, Invalid: exit 2) before changing
// anything when the request is wrong, a tenant is unknown or busy, the
// moment is outside the window, a backup object is missing or corrupt
// (unless SkipBroken), the schema drifted, or the --into target is not
// empty. A tenant that fails after that (verification mismatch, a key
// conflict) is rolled back and reported, and Run returns a failure (exit
// 1); the others stay restored. Cancelling ctx stops an in-place restore
// between transactions and leaves its operation running, to be resumed
// (report status interrupted, exit 1). The report is returned in every
// case.
func (s *Service) Run(ctx context.Context, req Request) (*Report, error) {
	start := time.Now()
	pl, err := s.prepare(ctx, req)
	rep := pl.report
	if err == nil {
		switch {
		case req.DryRun:
			err = s.dryRun(ctx, pl)
		case req.Into != "":
			err = s.into(ctx, pl)
		default:
			err = s.inPlace(ctx, pl)
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	for _, t := range rep.Tenants {
		for _, p := range t.Products {
			rep.Rows += p.Rows
		}
	}
	if err != nil {
		rep.Error, rep.Hint = err.Error(), fault.HintOf(err)
		if rep.Status == "" || rep.Status == "planned" {
			rep.Status = "failed"
			if fault.ExitStatus(err) == 2 {
				rep.Status = "refused"
			}
		}
		return rep, err
	}
	return rep, nil
}

// prepare validates the request and everything it names, without writing.
func (s *Service) prepare(ctx context.Context, req Request) (*plan, error) {
	if req.Policy == "" {
		req.Policy = productdb.Replace
	}
	rep := &Report{DryRun: req.DryRun, Policy: req.Policy, Into: req.Into, Objects: []ObjectRead{}, Tenants: []TenantReport{},
		Moment: Moment{Before: req.Before, Products: map[string]string{}}}
	if !req.To.IsZero() {
		t := req.To.UTC()
		rep.Moment.Time = &t
	}
	pl := &plan{req: req, report: rep, readings: map[string]*backup.Reading{}, uptos: map[string]backup.Upto{},
		tables: map[string][]productdb.RestoreTable{}, schemas: map[string]*productdb.Schema{}}
	if err := s.checkRequest(ctx, pl); err != nil {
		return pl, err
	}
	if err := s.openReadings(ctx, pl); err != nil {
		return pl, err
	}
	if err := s.planSteps(ctx, pl); err != nil {
		return pl, err
	}
	return pl, nil
}

// checkRequest checks the flags and resolves the tenants, products and
// moment.
func (s *Service) checkRequest(ctx context.Context, pl *plan) error {
	req := &pl.req
	switch req.Policy {
	case productdb.Replace, productdb.MissingOnly:
	default:
		return fault.New(fault.Invalid, "use --policy replace (exactly as at the moment) or missing-only (only rows absent now)", "unknown restore policy %q", req.Policy)
	}
	if req.To.IsZero() == (req.Before == "") {
		return fault.New(fault.Invalid, "give --to 2026-04-05T08:00:00Z, or --before OPERATION-ID, or --before pos:N", "say which moment to restore to, exactly once")
	}
	var op *state.Operation
	if strings.HasPrefix(req.Before, "op_") {
		var err error
		if op, err = s.Tenants.Store.GetOperation(ctx, req.Before); err != nil {
			return err
		}
		if len(req.Tenants) == 0 {
			for _, st := range op.Steps {
				req.Tenants = append(req.Tenants, st.Tenant)
			}
		}
	}
	keys, err := tenantKeys(req.Tenants)
	if err != nil {
		return err
	}
	req.Tenants = keys
	for _, name := range req.Products {
		if !slices.ContainsFunc(s.Tenants.Products, func(p *tenant.Product) bool { return p.Name == name }) {
			return fault.New(fault.NotFound, "configured products: "+strings.Join(productNames(s.Tenants.Products), ", "), "no product named %q", name)
		}
	}
	for _, p := range s.Tenants.Products {
		if len(req.Products) == 0 || slices.Contains(req.Products, p.Name) {
			pl.products = append(pl.products, p)
		}
	}
	if req.Into != "" && len(pl.products) != 1 {
		return fault.New(fault.Invalid, "add --products with one product; restore each product into its own database",
			"--into restores one product at a time, and %d are chosen (%s)", len(pl.products), strings.Join(productNames(pl.products), ", "))
	}
	var upto backup.Upto
	switch {
	case !req.To.IsZero():
		upto = backup.Upto{Time: req.To}
	case op != nil:
		// Capture stamps SQLite changes to the millisecond: step back one
		// whole millisecond before the operation was recorded, which was
		// before it touched anything.
		upto = backup.Upto{Time: op.Created.Truncate(time.Millisecond).Add(-time.Millisecond)}
	case strings.HasPrefix(req.Before, "pos:"):
		n, err := strconv.ParseUint(strings.TrimPrefix(req.Before, "pos:"), 10, 64)
		if err != nil || n < 2 {
			return fault.New(fault.Invalid, "write it as pos:N with N the change position the script started at (`lifeline backup list` and `backup status` show positions)",
				"bad change position %q", req.Before)
		}
		if len(pl.products) != 1 {
			return fault.New(fault.Invalid, "add --products with the product the position belongs to",
				"positions are per product, and %d products are chosen (%s)", len(pl.products), strings.Join(productNames(pl.products), ", "))
		}
		upto = backup.Upto{Pos: n - 1}
	default:
		return fault.New(fault.Invalid, "give an operation ID (op_…) or pos:N", "--before %q names neither an operation nor a change position", req.Before)
	}
	for _, p := range pl.products {
		pl.uptos[p.Name] = upto
		pl.report.Moment.Products[p.Name] = upto.String()
	}
	return nil
}

// tenantKeys cleans the tenant list: plain keys, "site:" accepted, other
// kinds refused, duplicates dropped, order kept.
func tenantKeys(raw []string) ([]string, error) {
	var out []string
	for _, k := range raw {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(k, "site:"); ok {
			k = rest
		} else if kind, _, typed := strings.Cut(k, ":"); typed && (kind == "app" || kind == "product") {
			return nil, fault.New(fault.Invalid, "--tenants takes tenant keys; use --products to choose products",
				"%q is a %s target, not a tenant key", k, kind)
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fault.New(fault.Invalid, "give --tenants KEY[,KEY…] or --tenants @FILE (one key per line)", "no tenants to restore")
	}
	return out, nil
}

func productNames(ps []*tenant.Product) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

// broken says whether err means a backup object cannot be read: missing,
// corrupt or of an unknown version. A wrong key, or a moment outside the
// window, is not "broken": skipping would not help.
func broken(err error) bool {
	return errors.Is(err, format.ErrCorrupt) || errors.Is(err, format.ErrVersion) || errors.Is(err, blob.ErrNotFound)
}

// openReadings opens, per product, the objects that rebuild the moment.
func (s *Service) openReadings(ctx context.Context, pl *plan) error {
	var brokenProducts []string
	for _, p := range pl.products {
		rd, err := s.Repo.OpenAt(ctx, p.Name, pl.uptos[p.Name])
		if err != nil {
			if !broken(err) {
				return err
			}
			if !pl.req.SkipBroken {
				return fault.Wrap(err, fault.Refused, "run `lifeline backup verify` to list the damage; --skip-broken restores what is readable and reports the rest",
					"the backup of %s cannot be read", p.Name)
			}
			brokenProducts = append(brokenProducts, p.Name)
			pl.readings[p.Name] = nil
			continue
		}
		if t := pl.uptos[p.Name].Time; !t.IsZero() {
			// The repository may not hold every change committed up to t
			// yet: restoring "to t" would then quietly restore an older
			// moment. It is complete up to when the shipper last found
			// nothing waiting.
			st, err := s.Repo.Status(ctx, p.Name, 0)
			if err != nil {
				return err
			}
			if t.Truncate(time.Microsecond).After(st.Newest) { // the catalog keeps microseconds
				return fault.New(fault.Refused, "run `lifeline backup run` (or let `lifeline serve` ship) and try again, or choose a moment up to "+st.Newest.UTC().Format(time.RFC3339Nano),
					"the backup of %s is known complete only up to %s (%d changes were waiting when last checked); changes committed before %s may not be in it yet",
					p.Name, st.Newest.UTC().Format(time.RFC3339Nano), st.Backlog, t.UTC().Format(time.RFC3339Nano))
			}
		}
		pl.readings[p.Name] = rd
		for _, o := range rd.Objects() {
			pl.report.Objects = append(pl.report.Objects, ObjectRead{Product: p.Name, Key: o.Key, Kind: o.KindName, Size: o.Size})
		}
	}
	if len(brokenProducts) == len(pl.products) {
		return fault.New(fault.Refused, "run `lifeline backup verify` to list the damage", "no chosen product's backup can be read (%s)", strings.Join(brokenProducts, ", "))
	}
	return nil
}

// planSteps decides, per tenant and product, what will be restored, and
// refuses unknown or busy tenants, drift and a non-empty --into target.
func (s *Service) planSteps(ctx context.Context, pl *plan) error {
	req := pl.req
	var unknown, busy, gone []string
	busyHint := ""
	// One query per product and one for the ledger, whatever the number
	// of tenants: a restore of hundreds of tenants plans in milliseconds.
	all, err := s.Tenants.Store.Erasures(ctx, "")
	if err != nil {
		return err
	}
	erasures := map[string][]state.Erasure{}
	for _, e := range all {
		erasures[e.Tenant] = append(erasures[e.Tenant], e)
	}
	known := map[string]map[string]productdb.State{} // product -> tenant -> state
	for _, p := range pl.products {
		rts, schema, err := p.DB.RestoreTables(ctx, p.Layout)
		if err != nil {
			return err
		}
		pl.tables[p.Name], pl.schemas[p.Name] = rts, schema
		if req.Into == "" {
			if err := checkDrift(ctx, s.Tenants.Store, p); err != nil {
				return err
			}
		}
		list, err := p.DB.Tenants(ctx, p.Layout)
		if err != nil {
			return err
		}
		known[p.Name] = map[string]productdb.State{}
		for _, t := range list {
			known[p.Name][t.Key] = t.State
		}
	}
	for _, key := range req.Tenants {
		tr := TenantReport{Tenant: key}
		found := false
		for _, p := range pl.products {
			rd := pl.readings[p.Name]
			liveState, live := known[p.Name][key]
			inBackup := rd != nil && rd.Cost(key) > 0
			found = found || live || inBackup
			if !live && !inBackup && rd != nil {
				continue // the tenant does not live in this product
			}
			sr := &StepReport{Product: p.Name}
			st := &step{product: p, tenant: key, report: sr}
			switch {
			case rd == nil:
				sr.Status, st.skip = "skipped", true
				sr.Error = "the backup of " + p.Name + " cannot be read (see `lifeline backup verify`)"
			case erased(erasures[key], p.Name, ""):
				sr.Status, st.skip = "erased", true
				sr.Notes = append(sr.Notes, "purged for erasure: the erasure ledger keeps it from ever coming back")
			case live && !inBackup && req.Into == "":
				gone = append(gone, fmt.Sprintf("%s in %s", key, p.Name))
				continue
			default:
				sr.Bytes = rd.Cost(key)
				pl.report.Bytes += sr.Bytes
				skipTables := map[string]bool{}
				for _, e := range erasures[key] {
					if e.Product == p.Name && e.App != "" {
						for _, t := range p.Layout.AppTables(e.App, false) {
							skipTables[t] = true
						}
						sr.Notes = append(sr.Notes, "app "+e.App+" was purged for erasure: its tables are not restored")
					}
				}
				captured := map[string]bool{}
				for _, t := range rd.Tables() {
					captured[t.Name] = true
				}
				for _, rt := range pl.tables[p.Name] {
					switch {
					case skipTables[rt.Name]:
					case !captured[rt.Name]:
						// Protected since: the backup cannot say what the
						// tenant had there, so the table is left as it is.
						sr.Notes = append(sr.Notes, "table "+rt.Name+" was not captured at the moment: left as it is")
					default:
						st.tables = append(st.tables, rt)
					}
				}
				if live && liveState == productdb.Purged {
					sr.Status, st.skip = "erased", true
					sr.Notes = append(sr.Notes, "purged: not restored")
				}
			}
			pl.steps = append(pl.steps, st)
			tr.Products = append(tr.Products, sr)
		}
		if !found {
			unknown = append(unknown, key)
			continue
		}
		pl.report.Tenants = append(pl.report.Tenants, tr)
	}
	if len(unknown) > 0 {
		return fault.New(fault.NotFound, "`lifeline tenants list` shows the known tenants; check the keys (a file given with @FILE holds one key per line)",
			"unknown tenants (in no chosen product and not in the backup): %s", strings.Join(unknown, ", "))
	}
	if len(gone) > 0 {
		return fault.New(fault.Refused, "leave those products out with --products, or choose a later moment",
			"at the moment chosen these tenants had no rows in the backup, but have rows now; restoring would remove them all: %s", strings.Join(gone, "; "))
	}
	if req.Into != "" {
		return s.checkTarget(ctx, pl)
	}
	pl.key = runKey(pl)
	running, err := s.Tenants.Store.ListOperations(ctx, state.OpFilter{Status: state.OpRunning, Limit: math.MaxInt32})
	if err != nil {
		return err
	}
	opsOf := map[string][]*state.Operation{} // tenant -> its running operations
	for i := range running {
		op := &running[i]
		for _, st := range op.Steps {
			if ops := opsOf[st.Tenant]; len(ops) == 0 || ops[len(ops)-1] != op {
				opsOf[st.Tenant] = append(ops, op)
			}
		}
	}
	for _, key := range req.Tenants {
		for _, op := range opsOf[key] {
			if op.Action == "restore" && !req.DryRun && s.Tenants.Interrupted(op) {
				if k, err := loadRun(ctx, s.Tenants.Store, op.ID); err == nil && k == pl.key {
					pl.resume = op
					continue
				}
			}
			busy = append(busy, fmt.Sprintf("%s (%s %s, %s)", key, op.ID, op.Action, op.Status))
			busyHint = "wait for it to finish (`lifeline ops show " + op.ID + "`), or if it was interrupted, finish it with `lifeline ops resume " + op.ID + "` or by running its command again"
			if op.Action == "restore" {
				busyHint = "wait for it to finish (`lifeline ops show " + op.ID + "`), or if it was interrupted, run the same `lifeline restore` command again: it resumes it"
			}
		}
	}
	if len(busy) > 0 {
		return fault.New(fault.Conflict, busyHint, "tenants already have an operation running: %s", strings.Join(busy, "; "))
	}
	if req.resume != "" && (pl.resume == nil || pl.resume.ID != req.resume) {
		return fault.New(fault.Conflict, "see `lifeline ops show "+req.resume+"`",
			"restore %s cannot be taken over: its tenants, products or moment no longer resolve to what it was started with", req.resume)
	}
	return nil
}

// checkTarget refuses an --into database that is not empty, or whose engine
// differs from the product's.
func (s *Service) checkTarget(ctx context.Context, pl *plan) error {
	if pl.req.Into == "" {
		return nil
	}
	target, err := productdb.OpenTarget(ctx, pl.req.Into, pl.req.IntoBase)
	if err != nil {
		return err
	}
	defer target.Close()
	p := pl.products[0]
	if target.Engine() != p.DB.Engine() {
		return fault.New(fault.Invalid, "restore a "+p.DB.Engine()+" product into a "+p.DB.Engine()+" database",
			"--into %s is %s, but product %s is %s", target, target.Engine(), p.Name, p.DB.Engine())
	}
	tables, err := target.Tables(ctx)
	if err != nil {
		return err
	}
	if len(tables) > 0 {
		return fault.New(fault.Conflict, "give a new file or an empty database; Lifeline never overwrites one",
			"--into %s is not empty: it holds %s", target, strings.Join(head(tables, 5), ", "))
	}
	return nil
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

func erased(list []state.Erasure, product, app string) bool {
	for _, e := range list {
		if e.Product == product && e.App == app {
			return true
		}
	}
	return false
}

// checkDrift refuses a product whose protected tables changed since
// protect: their trash and staging may not fit them any more. Only the
// protected tables count: tables the restore never touches (a tool's own,
// such as Litestream's _litestream_seq) are not drift for it.
func checkDrift(ctx context.Context, store *state.Store, p *tenant.Product) error {
	rec, err := store.LoadSchema(ctx, p.Name)
	if err != nil {
		return err
	}
	var old productdb.Schema
	if err := json.Unmarshal(rec.Schema, &old); err != nil {
		return fault.Wrap(err, fault.Internal, "run `lifeline protect` again", "the recorded schema of %s is unreadable", p.Name)
	}
	live, err := p.DB.Inspect(ctx)
	if err != nil {
		return err
	}
	d := productdb.Diff(only(&old, p.Layout.Tables), only(live, p.Layout.Tables))
	if len(d) > 0 {
		return fault.New(fault.Refused, "review the change, then run `lifeline protect` to protect the new schema",
			"the protected tables of %s changed since `lifeline protect`: %s", p.Name, strings.Join(d, "; "))
	}
	return nil
}

// only is s restricted to the named tables.
func only(s *productdb.Schema, names []string) *productdb.Schema {
	out := &productdb.Schema{}
	for _, t := range s.Tables {
		if slices.Contains(names, t.Name) {
			out.Tables = append(out.Tables, t)
		}
	}
	return out
}

// advance records progress and reports it.
func (s *Service) advance(phase string, steps, done int, rows int64) {
	if s.Progress == nil {
		return
	}
	s.progressMu.Lock()
	defer s.progressMu.Unlock()
	if s.progress.Phase != phase {
		s.progress = Progress{Phase: phase, Started: time.Now(), Steps: steps}
	}
	s.progress.StepsDone += done
	s.progress.Rows += rows
	s.Progress(s.progress)
}
