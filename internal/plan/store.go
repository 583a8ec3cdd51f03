package plan

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

//go:embed migrations/*.sql
var migrations embed.FS

func migrate(ctx context.Context, store *state.Store) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return store.Migrate(ctx, "plan", sub)
}

// micros and fromMicros are the state store's time encoding, which this
// package's tables share (state.Micros).
var micros, fromMicros = state.Micros, state.FromMicros

const planColumns = `id, action, kind, reason, requester, spec, status, report, report_hash, required_role,
	approved_by, approved_role, approved_hash, approved_at, wave, phase, gate_until, promoted, runner, lease_until,
	last_progress, resumed_at, note, created, updated`

// exec runs one statement, and reports how many rows it changed.
func (s *Service) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.store().DB().ExecContext(ctx, s.store().Rebind(q), args...)
	if err != nil {
		return 0, fmt.Errorf("plan: %w", err)
	}
	return res.RowsAffected()
}

// tx runs fn in one write transaction.
func (s *Service) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.store().DB().BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("plan: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("plan: commit: %w", err)
	}
	return nil
}

// insert records a new draft plan with its audit entry, in one
// transaction.
func (s *Service) insert(ctx context.Context, p *Plan, audit state.AuditEntry) error {
	spec, err := json.Marshal(p.Spec)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.store().Rebind("INSERT INTO plans ("+planColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, '', '', '', '', '', '', 0, 0, '', 0, 0, '', 0, 0, 0, ?, ?, ?)`),
			p.ID, p.Action, string(p.Kind), p.Reason, p.Requester, string(spec), string(p.Status), p.Note, micros(p.Created), micros(p.Updated))
		if err != nil {
			return fmt.Errorf("plan: insert: %w", err)
		}
		return s.auditTx(ctx, audit)(tx)
	})
}

// execAudited runs one statement and appends its audit entry in one
// transaction, returning the rows the statement changed; with none
// changed, nothing is audited.
func (s *Service) execAudited(ctx context.Context, audit state.AuditEntry, q string, args ...any) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.store().Rebind(q), args...)
		if err != nil {
			return fmt.Errorf("plan: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return s.auditTx(ctx, audit)(tx)
	})
	return n, err
}

// saveReport records a validation: the report, its hash, the role it
// needs, and the targets with their waves, replacing earlier ones, with
// its audit entry and events in the same transaction. It only succeeds
// while the plan has status from (no step has run).
func (s *Service) saveReport(ctx context.Context, p *Plan, rep *Report, audit state.AuditEntry, to Status, from ...Status) error {
	raw, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	now := s.now()
	return s.tx(ctx, func(tx *sql.Tx) error {
		q := "UPDATE plans SET report = ?, report_hash = ?, required_role = ?, status = ?, note = '', approved_by = '', approved_role = '', approved_hash = '', approved_at = 0, updated = ? WHERE id = ? AND status IN (" + marks(len(from)) + ")"
		args := []any{string(raw), rep.Hash, string(rep.RequiredRole), string(to), micros(now), p.ID}
		for _, f := range from {
			args = append(args, string(f))
		}
		res, err := tx.ExecContext(ctx, s.store().Rebind(q), args...)
		if err != nil {
			return fmt.Errorf("plan: save report: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fault.New(fault.Conflict, "`lifeline plan show "+p.ID+"`", "plan %s changed while it was being validated", p.ID)
		}
		if _, err := tx.ExecContext(ctx, s.store().Rebind("DELETE FROM plan_targets WHERE plan_id = ?"), p.ID); err != nil {
			return fmt.Errorf("plan: save targets: %w", err)
		}
		for i, t := range rep.Targets {
			_, err := tx.ExecContext(ctx, s.store().Rebind(`INSERT INTO plan_targets (plan_id, pos, target, tenant, wave, status, runner, op_id, undo_op_id,
				restore_test, verify, digest, error, started, finished) VALUES (?, ?, ?, ?, ?, ?, '', '', '', '', '', '', '', 0, 0)`),
				p.ID, i, t.Target, t.Tenant, t.Wave, string(StepPending))
			if err != nil {
				return fmt.Errorf("plan: save targets: %w", err)
			}
		}
		if err := s.recordEvent(ctx, tx, p.ID); err != nil {
			return err
		}
		_, err = s.store().AppendAuditTx(ctx, tx, audit)
		return err
	})
}

func marks(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

// get loads a plan with its report, steps and gates.
func (s *Service) get(ctx context.Context, id string) (*Plan, error) {
	p, err := s.row(ctx, s.store().DB(), planColumns, id)
	if err != nil {
		return nil, err
	}
	if p.Steps, err = s.steps(ctx, id); err != nil {
		return nil, err
	}
	p.Progress = progressOf(p.Steps)
	if p.Gates, err = s.gates(ctx, id); err != nil {
		return nil, err
	}
	return p, nil
}

// querier is a database or a transaction: reads inside a transition see
// the transition's own writes.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// head loads a plan's own columns only: no report, steps or gates. The
// runner checks it before every tenant, so it stays cheap for big plans.
func (s *Service) head(ctx context.Context, id string) (*Plan, error) {
	return s.headIn(ctx, s.store().DB(), id)
}

func (s *Service) headIn(ctx context.Context, q querier, id string) (*Plan, error) {
	return s.row(ctx, q, strings.Replace(planColumns, "status, report, ", "status, '' AS report, ", 1), id)
}

// row loads plan id's own row: planColumns as cols, or head's cheaper
// stand-in for them.
func (s *Service) row(ctx context.Context, q querier, cols, id string) (*Plan, error) {
	rows, err := q.QueryContext(ctx, s.store().Rebind("SELECT "+cols+" FROM plans WHERE id = ?"), id)
	if err != nil {
		return nil, fmt.Errorf("plan: get: %w", err)
	}
	list, err := scanPlans(rows)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, notFound(id)
	}
	return list[0], nil
}

// list returns plans newest first, without their steps.
func (s *Service) list(ctx context.Context, limit int) ([]*Plan, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind("SELECT "+planColumns+" FROM plans ORDER BY created DESC, id DESC LIMIT ?"), limit)
	if err != nil {
		return nil, fmt.Errorf("plan: list: %w", err)
	}
	list, err := scanPlans(rows)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		steps, err := s.steps(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		p.Progress = progressOf(steps)
		p.Report = nil // the list is a summary; `plan show` has the report
	}
	return list, nil
}

func scanPlans(rows *sql.Rows) ([]*Plan, error) {
	defer rows.Close()
	var out []*Plan
	for rows.Next() {
		var p Plan
		var kind, spec, status, report, role, byRole string
		var approvedBy, approvedHash string
		var approvedAt, gateUntil, lease, progress, resumed, created, updated int64
		var wave, promoted int64
		if err := rows.Scan(&p.ID, &p.Action, &kind, &p.Reason, &p.Requester, &spec, &status, &report, &p.ReportHash, &role,
			&approvedBy, &byRole, &approvedHash, &approvedAt, &wave, &p.Phase, &gateUntil, &promoted, &p.Runner, &lease,
			&progress, &resumed, &p.Note, &created, &updated); err != nil {
			return nil, fmt.Errorf("plan: scan: %w", err)
		}
		p.Kind, p.Status, p.RequiredRole = tenant.Kind(kind), Status(status), state.Role(role)
		if err := json.Unmarshal([]byte(spec), &p.Spec); err != nil {
			return nil, fmt.Errorf("plan %s: spec: %w", p.ID, err)
		}
		if report != "" {
			p.Report = &Report{}
			if err := json.Unmarshal([]byte(report), p.Report); err != nil {
				return nil, fmt.Errorf("plan %s: report: %w", p.ID, err)
			}
		}
		if approvedBy != "" {
			p.Approval = &Approval{By: approvedBy, Role: state.Role(byRole), Hash: approvedHash, At: fromMicros(approvedAt)}
		}
		p.Wave, p.promoted = int(wave), int(promoted)
		p.GateUntil, p.leaseUntil, p.lastProgress, p.resumedAt = fromMicros(gateUntil), fromMicros(lease), fromMicros(progress), fromMicros(resumed)
		p.Created, p.Updated = fromMicros(created), fromMicros(updated)
		out = append(out, &p)
	}
	return out, rows.Err()
}

func (s *Service) steps(ctx context.Context, id string) ([]Step, error) {
	return s.stepsIn(ctx, s.store().DB(), id)
}

func (s *Service) stepsIn(ctx context.Context, q querier, id string) ([]Step, error) {
	rows, err := q.QueryContext(ctx, s.store().Rebind(`SELECT pos, target, tenant, wave, status, runner, op_id, undo_op_id, restore_test,
		verify, digest, error, started, finished FROM plan_targets WHERE plan_id = ? ORDER BY pos`), id)
	if err != nil {
		return nil, fmt.Errorf("plan: steps: %w", err)
	}
	defer rows.Close()
	out := []Step{}
	for rows.Next() {
		var st Step
		var status string
		var pos, wave, started, finished int64
		if err := rows.Scan(&pos, &st.Target, &st.Tenant, &wave, &status, &st.runner, &st.OpID, &st.UndoOpID, &st.RestoreTest,
			&st.Verify, &st.digest, &st.Error, &started, &finished); err != nil {
			return nil, fmt.Errorf("plan: steps: %w", err)
		}
		st.Pos, st.Wave, st.Status = int(pos), int(wave), StepStatus(status)
		st.Started, st.Finished = fromMicros(started), fromMicros(finished)
		out = append(out, st)
	}
	return out, rows.Err()
}

func progressOf(steps []Step) Progress {
	pr := Progress{Total: len(steps)}
	for _, st := range steps {
		switch st.Status {
		case StepPending, StepRunning:
			pr.Pending++
		case StepDone:
			pr.Done++
		case StepFailed:
			pr.Failed++
		case StepSkipped:
			pr.Skipped++
		case StepRolledBack:
			pr.RolledBack++
		}
	}
	return pr
}

// updateStep records a step's outcome.
func (s *Service) updateStep(ctx context.Context, id string, st *Step) error {
	_, err := s.exec(ctx, `UPDATE plan_targets SET status = ?, op_id = ?, undo_op_id = ?, restore_test = ?, verify = ?, digest = ?,
		error = ?, started = ?, finished = ? WHERE plan_id = ? AND pos = ?`,
		string(st.Status), st.OpID, st.UndoOpID, st.RestoreTest, st.Verify, st.digest, st.Error, micros(st.Started), micros(st.Finished), id, st.Pos)
	return err
}

// claimStep moves a step from pending to running for this runner. Only one
// runner can win it: the update is conditional on the old status.
func (s *Service) claimStep(ctx context.Context, id string, st *Step) (bool, error) {
	st.Started = s.now()
	n, err := s.exec(ctx, "UPDATE plan_targets SET status = ?, runner = ?, started = ?, digest = ? WHERE plan_id = ? AND pos = ? AND status = ?",
		string(StepRunning), s.owner(), micros(st.Started), st.digest, id, st.Pos, string(StepPending))
	if err != nil {
		return false, err
	}
	if n == 1 {
		st.Status, st.runner = StepRunning, s.owner()
	}
	return n == 1, nil
}

// reclaimStep takes over a running step from the runner that claimed it
// (whose lease this runner took), conditional on that runner still holding
// it: of two runners reconciling it, one wins.
func (s *Service) reclaimStep(ctx context.Context, id string, st *Step) (bool, error) {
	if st.runner == s.owner() {
		return true, nil
	}
	n, err := s.exec(ctx, "UPDATE plan_targets SET runner = ? WHERE plan_id = ? AND pos = ? AND status = ? AND runner = ?",
		s.owner(), id, st.Pos, string(StepRunning), st.runner)
	if err == nil && n == 1 {
		st.runner = s.owner()
	}
	return n == 1, err
}

// finishStep records the outcome of a step this runner holds. A runner
// that lost the step (its lease was taken, and the step with it) records
// nothing: the outcome is the new holder's to record.
func (s *Service) finishStep(ctx context.Context, id string, st *Step) (bool, error) {
	n, err := s.exec(ctx, `UPDATE plan_targets SET status = ?, op_id = ?, verify = ?, error = ?, finished = ?
		WHERE plan_id = ? AND pos = ? AND status = ? AND runner = ?`,
		string(st.Status), st.OpID, st.Verify, st.Error, micros(st.Finished), id, st.Pos, string(StepRunning), s.owner())
	return n == 1, err
}

// GateCheck is one gate decision between waves.
type GateCheck struct {
	Wave   int       `json:"wave"`
	At     time.Time `json:"at"`
	Result string    `json:"result"` // pass, fail, inconclusive, promoted
	Checks []Check   `json:"checks"`
}

// Check is one automatic check of a gate.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // pass, fail, inconclusive
	Detail string `json:"detail,omitempty"`
}

func (s *Service) gates(ctx context.Context, id string) ([]GateCheck, error) {
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind("SELECT wave, at, result, checks FROM plan_gates WHERE plan_id = ? ORDER BY at, wave"), id)
	if err != nil {
		return nil, fmt.Errorf("plan: gates: %w", err)
	}
	defer rows.Close()
	var out []GateCheck
	for rows.Next() {
		var g GateCheck
		var wave, at int64
		var checks string
		if err := rows.Scan(&wave, &at, &g.Result, &checks); err != nil {
			return nil, fmt.Errorf("plan: gates: %w", err)
		}
		g.Wave, g.At = int(wave), fromMicros(at)
		if err := json.Unmarshal([]byte(checks), &g.Checks); err != nil {
			return nil, fmt.Errorf("plan %s: gate checks: %w", id, err)
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// saveGate records a gate's result in tx, for also: with the change the
// result leads to.
func (s *Service) saveGate(ctx context.Context, id string, g GateCheck) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		raw, err := json.Marshal(g.Checks)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.store().Rebind("INSERT INTO plan_gates (plan_id, wave, at, result, checks) VALUES (?, ?, ?, ?, ?)"), id, g.Wave, micros(g.At), g.Result, string(raw))
		if err != nil {
			return fmt.Errorf("plan: gate: %w", err)
		}
		return nil
	}
}

// transition moves a plan from one of from to to, conditionally, so two
// people or processes racing cannot both move it; set adds column updates
// ("col = ?" with its argument). The change, its audit entry plan.<event>
// and its webhook events commit in one transaction: a failed audit append
// leaves the plan where it was. Then it tells OnChange. A plan no longer in
// from is fault.Conflict.
func (s *Service) transition(ctx context.Context, p *Plan, actor, event string, to Status, from []Status, set map[string]any, detail map[string]any) error {
	return s.transitionWith(ctx, p, actor, event, to, from, set, detail, nil)
}

// transitionWith is transition with also, which writes what else the
// transition records (a gate's result, an audit entry of what led to it)
// in its transaction, after the plan moved and its event, before the
// transition's own audit entry.
func (s *Service) transitionWith(ctx context.Context, p *Plan, actor, event string, to Status, from []Status, set, detail map[string]any,
	also func(*sql.Tx) error) error {
	now := s.now()
	cols := []string{"status = ?", "updated = ?"}
	args := []any{string(to), micros(now)}
	for _, k := range sortedKeys(set) {
		cols = append(cols, k+" = ?")
		args = append(args, set[k])
	}
	args = append(args, p.ID)
	for _, f := range from {
		args = append(args, string(f))
	}
	if detail == nil {
		detail = map[string]any{}
	}
	detail["plan"], detail["from"], detail["to"] = p.ID, string(p.Status), string(to)
	moved := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.store().Rebind("UPDATE plans SET "+strings.Join(cols, ", ")+" WHERE id = ? AND status IN ("+marks(len(from))+")"), args...)
		if err != nil {
			return fmt.Errorf("plan: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil
		}
		moved = true
		if err := s.recordEvent(ctx, tx, p.ID); err != nil {
			return err
		}
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		// Last: the audit append lock is the last lock the transaction takes.
		_, err = s.store().AppendAuditTx(ctx, tx, state.AuditEntry{Actor: actor, Action: "plan." + event, Detail: detail})
		return err
	})
	if err != nil {
		return err
	}
	if !moved {
		cur, err := s.get(ctx, p.ID)
		if err != nil {
			return err
		}
		return wrongStatus(cur, event, from...)
	}
	p.Status, p.Updated = to, now
	s.tell(ctx, p.ID)
	return nil
}

// advance changes columns of a running plan without a status change (its
// wave, its phase, a note), with also (audit entries, a gate's result,
// nil: nothing) and its webhook event in one transaction, so a crash
// cannot keep the change and lose what records it; then it tells
// OnChange. It reports whether the plan was still running.
func (s *Service) advance(ctx context.Context, id string, set map[string]any, also func(*sql.Tx) error) (bool, error) {
	ok := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if ok, err = s.setFieldsTx(ctx, tx, id, set, Running); err != nil || !ok {
			return err
		}
		if err := s.recordEvent(ctx, tx, id); err != nil {
			return err
		}
		if also == nil {
			return nil
		}
		return also(tx) // last: it may take the audit append lock
	})
	if err != nil || !ok {
		return false, err
	}
	s.tell(ctx, id)
	return true, nil
}

// auditTx appends audit entries in tx, for also: the audit append lock is
// taken last in the transaction, so nothing is written after it.
func (s *Service) auditTx(ctx context.Context, entries ...state.AuditEntry) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		for _, e := range entries {
			if _, err := s.store().AppendAuditTx(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	}
}

// tell calls OnChange with a plan's new state.
func (s *Service) tell(ctx context.Context, id string) {
	if s.OnChange == nil {
		return
	}
	p, err := s.get(context.WithoutCancel(ctx), id)
	if err != nil {
		return
	}
	p.Steps = nil
	s.OnChange(ctx, p)
}

// setFields updates columns of a plan without a status change (a
// rollback's note), only while it has status in (nil: any).
func (s *Service) setFields(ctx context.Context, id string, set map[string]any, in ...Status) (bool, error) {
	ok := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		ok, err = s.setFieldsTx(ctx, tx, id, set, in...)
		return err
	})
	return ok, err
}

// setFieldsTx is setFields in tx.
func (s *Service) setFieldsTx(ctx context.Context, tx *sql.Tx, id string, set map[string]any, in ...Status) (bool, error) {
	var cols []string
	var args []any
	for _, k := range sortedKeys(set) {
		cols = append(cols, k+" = ?")
		args = append(args, set[k])
	}
	cols = append(cols, "updated = ?")
	args = append(args, micros(s.now()), id)
	q := "UPDATE plans SET " + strings.Join(cols, ", ") + " WHERE id = ?"
	if len(in) > 0 {
		q += " AND status IN (" + marks(len(in)) + ")"
		for _, st := range in {
			args = append(args, string(st))
		}
	}
	res, err := tx.ExecContext(ctx, s.store().Rebind(q), args...)
	if err != nil {
		return false, fmt.Errorf("plan: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// frozen returns the freeze, or nil when Lifeline is not frozen.
func (s *Service) frozen(ctx context.Context) (*Freeze, error) {
	var f Freeze
	var since int64
	err := s.store().DB().QueryRowContext(ctx, "SELECT reason, actor, since FROM plan_freeze WHERE id = 1").Scan(&f.Reason, &f.Actor, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plan: freeze: %w", err)
	}
	f.On, f.Since = true, fromMicros(since)
	return &f, nil
}

// Get returns a plan with its report, steps and gates.
func (s *Service) Get(ctx context.Context, id string) (*Plan, error) { return s.get(ctx, id) }

// List returns the newest plans (at most limit, default 50), without
// reports and steps.
func (s *Service) List(ctx context.Context, limit int) ([]*Plan, error) { return s.list(ctx, limit) }
