package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
)

const opColumns = "id, action, actor, reason, targets, status, error, created, finished, owner, lease_until"

// CreateOperation records op as running, with every step pending, before any
// product database is touched. It fills ID (when empty), Created, Status,
// Owner and LeaseUntil (now+ttl) and the steps' Status.
//
// In the same transaction it locks every tenant named by the steps and
// appends the audit entry "operation.start". If another operation holds one
// of those tenants, it writes nothing and returns fault.Conflict naming that
// operation. A malformed op (no action, actor or owner, a step without
// product or tenant, a step listed twice) is fault.Invalid.
func (s *Store) CreateOperation(ctx context.Context, op *Operation, owner string, ttl time.Duration) error {
	if err := validateOperation(op, owner, ttl); err != nil {
		return err
	}
	now := s.stamp()
	if op.ID == "" {
		op.ID = NewOperationID(now)
	}
	targets, err := json.Marshal(nonNil(op.Targets))
	if err != nil {
		return err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, s.Rebind("SELECT 1 FROM operations WHERE id = ?"), op.ID).Scan(&one)
		if err == nil {
			return fault.New(fault.Conflict, "let Lifeline choose the ID (leave it empty)", "operation %s already exists", op.ID)
		} else if !isNoRows(err) {
			return fmt.Errorf("state: create operation: %w", err)
		}
		lease := now.Add(ttl)
		_, err = tx.ExecContext(ctx, s.Rebind("INSERT INTO operations ("+opColumns+") VALUES (?, ?, ?, ?, ?, ?, '', ?, 0, ?, ?)"),
			op.ID, op.Action, op.Actor, op.Reason, string(targets), string(OpRunning), Micros(now), owner, Micros(lease))
		if err != nil {
			return fmt.Errorf("state: create operation: %w", err)
		}
		for i, st := range op.Steps {
			_, err = tx.ExecContext(ctx, s.Rebind(
				"INSERT INTO operation_steps (op_id, pos, product, tenant, app, status, row_counts, error, finished) VALUES (?, ?, ?, ?, ?, ?, '{}', '', 0)"),
				op.ID, i, st.Product, st.Tenant, st.App, string(StepPending))
			if err != nil {
				return fmt.Errorf("state: create operation step: %w", err)
			}
		}
		// Lock tenants in sorted order, so two operations over overlapping
		// tenants on PostgreSQL wait for each other instead of deadlocking.
		for _, tenant := range stepTenants(op.Steps) {
			if err := s.lockTenant(ctx, tx, op.ID, tenant, now); err != nil {
				return err
			}
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{
			Actor: op.Actor, Action: "operation.start", OpID: op.ID,
			Detail: map[string]any{"action": op.Action, "reason": op.Reason, "targets": nonNil(op.Targets), "owner": owner},
		})
		return err
	})
	if err != nil {
		return err
	}
	op.Created, op.Status, op.Owner, op.LeaseUntil = now, OpRunning, owner, now.Add(ttl)
	op.Finished, op.Error = time.Time{}, ""
	op.Targets = nonNil(op.Targets)
	if op.Steps == nil {
		op.Steps = []Step{}
	}
	for i := range op.Steps {
		op.Steps[i].Status, op.Steps[i].Rows, op.Steps[i].Error, op.Steps[i].Finished = StepPending, nil, "", time.Time{}
	}
	return nil
}

func validateOperation(op *Operation, owner string, ttl time.Duration) error {
	const hint = "this is a bug in the caller of CreateOperation"
	switch {
	case op == nil:
		return fault.New(fault.Invalid, hint, "no operation given")
	case op.Action == "":
		return fault.New(fault.Invalid, hint, "operation without an action")
	case op.Actor == "":
		return fault.New(fault.Invalid, "say who is acting (--actor, or the token's name)", "operation %s without an actor", op.Action)
	case owner == "":
		return fault.New(fault.Invalid, hint, "operation %s without an owner process", op.Action)
	case ttl <= 0:
		return fault.New(fault.Invalid, hint, "operation %s with a non-positive lease %s", op.Action, ttl)
	}
	seen := map[[3]string]bool{}
	for _, st := range op.Steps {
		if st.Product == "" || st.Tenant == "" {
			return fault.New(fault.Invalid, hint, "operation %s has a step without product or tenant (%q, %q)", op.Action, st.Product, st.Tenant)
		}
		k := [3]string{st.Product, st.Tenant, st.App}
		if seen[k] {
			return fault.New(fault.Invalid, "list each product/tenant/app once", "operation %s lists step %s more than once", op.Action, stepName(st))
		}
		seen[k] = true
	}
	return nil
}

func stepName(st Step) string {
	s := st.Product + "/" + st.Tenant
	if st.App != "" {
		s += "/" + st.App
	}
	return s
}

func stepTenants(steps []Step) []string {
	var out []string
	for _, st := range steps {
		out = append(out, st.Tenant)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// lockTenant takes tenant for opID, or explains who holds it.
func (s *Store) lockTenant(ctx context.Context, tx *sql.Tx, opID, tenant string, now time.Time) error {
	for attempt := 0; attempt < 3; attempt++ {
		res, err := tx.ExecContext(ctx, s.Rebind("INSERT INTO tenant_locks (tenant, op_id, since) VALUES (?, ?, ?) ON CONFLICT (tenant) DO NOTHING"),
			tenant, opID, Micros(now))
		if err != nil {
			return fmt.Errorf("state: lock tenant %s: %w", tenant, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var holder, action, actor, owner string
		var lease int64
		err = tx.QueryRowContext(ctx, s.Rebind(
			"SELECT o.id, o.action, o.actor, o.owner, o.lease_until FROM tenant_locks l JOIN operations o ON o.id = l.op_id WHERE l.tenant = ?"),
			tenant).Scan(&holder, &action, &actor, &owner, &lease)
		if isNoRows(err) {
			continue // released between our insert and this read: try again
		}
		if err != nil {
			return fmt.Errorf("state: lock tenant %s: %w", tenant, err)
		}
		msg := fmt.Sprintf("tenant %s is locked by operation %s (%s by %s)", tenant, holder, action, actor)
		hint := fmt.Sprintf("wait for operation %s to finish (`lifeline ops show %s`)", holder, holder)
		finish := FinishCommand(holder, action)
		if lu := FromMicros(lease); !lu.After(now) {
			msg += fmt.Sprintf(", whose runner %s stopped renewing its lease at %s", owner, lu.Format(time.RFC3339))
			hint = fmt.Sprintf("operation %s was interrupted: finish it with %s", holder, finish)
		} else {
			hint += ", or if it was interrupted, " + finish
		}
		return fault.New(fault.Conflict, hint, "%s", msg)
	}
	return fault.New(fault.Conflict, "retry", "tenant %s is being locked and released by other operations", tenant)
}

// FinishCommand says what finishes interrupted operation id of action:
// `lifeline ops resume ID`, except for an undo of a restore, which only the
// same `lifeline restore --undo` finishes (ops resume refuses it). Every
// hint about an interrupted operation takes its wording from here.
func FinishCommand(id, action string) string {
	if action == "restore-undo" {
		return "the same `lifeline restore --undo` again (`lifeline ops show " + id + "` names the restore)"
	}
	return "`lifeline ops resume " + id + "`"
}

// UpdateStep records a step's new Status, Rows and Error, matched by
// (Product, Tenant, App). A step leaving pending without a Finished time
// gets the store's clock. fault.NotFound if the operation has no such step;
// fault.Invalid for an unknown status.
func (s *Store) UpdateStep(ctx context.Context, opID string, st Step) error {
	return s.UpdateSteps(ctx, opID, []Step{st})
}

// UpdateSteps records several steps of opID as UpdateStep does, in one
// transaction: a restore records a batch of tenants with one write.
func (s *Store) UpdateSteps(ctx context.Context, opID string, steps []Step) error {
	type update struct {
		st       Step
		rows     string
		finished int64
	}
	var ups []update
	for _, st := range steps {
		switch st.Status {
		case StepPending, StepDone, StepFailed, StepSkipped:
		default:
			return fault.New(fault.Invalid, "use pending, done, failed or skipped", "unknown step status %q", st.Status)
		}
		rows, err := json.Marshal(st.Rows)
		if err != nil {
			return err
		}
		if st.Rows == nil {
			rows = []byte("{}")
		}
		finished := Micros(st.Finished)
		if finished == 0 && st.Status != StepPending {
			finished = Micros(s.stamp())
		}
		ups = append(ups, update{st, string(rows), finished})
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, u := range ups {
			st := u.st
			res, err := tx.ExecContext(ctx, s.Rebind(
				"UPDATE operation_steps SET status = ?, row_counts = ?, error = ?, finished = ? WHERE op_id = ? AND product = ? AND tenant = ? AND app = ?"),
				string(st.Status), u.rows, st.Error, u.finished, opID, st.Product, st.Tenant, st.App)
			if err != nil {
				return fmt.Errorf("state: update step: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fault.New(fault.NotFound, fmt.Sprintf("see its steps with `lifeline ops show %s`", opID),
					"operation %s has no step %s", opID, stepName(st))
			}
		}
		return nil
	})
}

// FinishOperation ends an operation: it sets its final status (done, failed
// or rolled_back), Finished and Error, releases its tenant locks and appends
// "operation.finish", in one transaction. A finished operation may later be
// marked rolled_back (by the operation that undid it); any other change to
// a finished operation is fault.Conflict. fault.NotFound for an unknown id,
// fault.Invalid for a status that is not final.
func (s *Store) FinishOperation(ctx context.Context, opID string, status OpStatus, errText string) error {
	switch status {
	case OpDone, OpFailed, OpRolledBack:
	default:
		return fault.New(fault.Invalid, "finish with done, failed or rolled_back", "%q is not a final operation status", status)
	}
	now := s.stamp()
	return s.write(ctx, func(tx *sql.Tx) error {
		var cur, actor, oldErr string
		var finished int64
		err := tx.QueryRowContext(ctx, s.Rebind("SELECT status, actor, error, finished FROM operations WHERE id = ?"+s.forUpdate()), opID).
			Scan(&cur, &actor, &oldErr, &finished)
		if isNoRows(err) {
			return opNotFound(opID)
		}
		if err != nil {
			return fmt.Errorf("state: finish operation: %w", err)
		}
		if OpStatus(cur) != OpRunning && (status != OpRolledBack || OpStatus(cur) == OpRolledBack) {
			return fault.New(fault.Conflict, "a finished operation can only be marked rolled_back",
				"operation %s is already %s", opID, cur)
		}
		if finished == 0 {
			finished = Micros(now)
		}
		if errText == "" {
			errText = oldErr // marking rolled_back keeps why it failed
		}
		_, err = tx.ExecContext(ctx, s.Rebind("UPDATE operations SET status = ?, finished = ?, error = ?, lease_until = 0 WHERE id = ?"),
			string(status), finished, errText, opID)
		if err != nil {
			return fmt.Errorf("state: finish operation: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.Rebind("DELETE FROM tenant_locks WHERE op_id = ?"), opID); err != nil {
			return fmt.Errorf("state: release tenant locks: %w", err)
		}
		detail := map[string]any{"status": string(status)}
		if errText != "" && errText != oldErr {
			detail["error"] = errText
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "operation.finish", OpID: opID, Detail: detail})
		return err
	})
}

// KeepLease calls renew, in a goroutine of its own, every third of ttl (a
// lease of that length survives two failed renewals) until the returned
// stop is called; stop returns once no renewal is running.
func KeepLease(ctx context.Context, ttl time.Duration, renew func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renew(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// ClaimOperation takes or renews the lease on a running operation for
// owner, until now+ttl. It succeeds when owner already holds the lease or
// the lease has expired (the previous runner died); taking over from
// another owner is audited as "operation.claim". Otherwise it is
// fault.Conflict ("operation X is being run by OWNER until T"). An unknown
// id is fault.NotFound; an operation that is no longer running is
// fault.Conflict.
func (s *Store) ClaimOperation(ctx context.Context, id, owner string, ttl time.Duration) error {
	return s.claim(ctx, id, owner, "", ttl)
}

// TakeOverOperation claims a running operation from a runner known to be
// dead (its process is gone), without waiting for its lease to expire. It
// succeeds if the lease is held by from or owner, or has expired; otherwise
// fault.Conflict, as for ClaimOperation.
func (s *Store) TakeOverOperation(ctx context.Context, id, from, owner string, ttl time.Duration) error {
	if from == "" {
		return fault.New(fault.Invalid, "this is a bug in the caller of TakeOverOperation", "take-over of %s without a previous owner", id)
	}
	return s.claim(ctx, id, owner, from, ttl)
}

func (s *Store) claim(ctx context.Context, id, owner, from string, ttl time.Duration) error {
	if owner == "" || ttl <= 0 {
		return fault.New(fault.Invalid, "this is a bug in the caller of ClaimOperation", "claim of %s without an owner or with lease %s", id, ttl)
	}
	now := s.stamp()
	return s.write(ctx, func(tx *sql.Tx) error {
		var status, actor, cur string
		var lease int64
		err := tx.QueryRowContext(ctx, s.Rebind("SELECT status, actor, owner, lease_until FROM operations WHERE id = ?"+s.forUpdate()), id).
			Scan(&status, &actor, &cur, &lease)
		if isNoRows(err) {
			return opNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("state: claim operation: %w", err)
		}
		if OpStatus(status) != OpRunning {
			return fault.New(fault.Conflict, fmt.Sprintf("nothing to resume; see `lifeline ops show %s`", id),
				"operation %s is %s, not running", id, status)
		}
		until := FromMicros(lease)
		if cur != owner && (from == "" || cur != from) && until.After(now) {
			return fault.New(fault.Conflict,
				fmt.Sprintf("wait for it to finish, or for its lease to expire at %s if that process died", until.Format(time.RFC3339)),
				"operation %s is being run by %s until %s", id, cur, until.Format(time.RFC3339))
		}
		_, err = tx.ExecContext(ctx, s.Rebind("UPDATE operations SET owner = ?, lease_until = ? WHERE id = ?"),
			owner, Micros(now.Add(ttl)), id)
		if err != nil {
			return fmt.Errorf("state: claim operation: %w", err)
		}
		if cur == owner {
			return nil
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "operation.claim", OpID: id,
			Detail: map[string]any{"owner": owner, "previous_owner": cur, "previous_lease_until": until.Format(time.RFC3339Nano)}})
		return err
	})
}

// ReleaseOperation gives up owner's lease on a running operation that it
// stopped running without finishing (a cancelled restore), so that a resume
// in a process that stays alive (a plan, `serve`) takes it over at once
// instead of waiting for the lease to lapse. The lease is set to have ended
// just before now, which every test of it reads as expired. It changes
// nothing if owner no longer holds the lease (another runner took the
// operation over) or the operation is no longer running.
func (s *Store) ReleaseOperation(ctx context.Context, id, owner string) error {
	ended := Micros(s.stamp()) - 1
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.Rebind("UPDATE operations SET lease_until = ? WHERE id = ? AND owner = ? AND status = ?"),
			ended, id, owner, string(OpRunning))
		if err != nil {
			return fmt.Errorf("state: release operation %s: %w", id, err)
		}
		return nil
	})
}

func opNotFound(id string) error {
	return fault.New(fault.NotFound, "list operations with `lifeline ops list`", "operation %q not found", id)
}

// GetOperation returns one operation with its steps. fault.NotFound for an
// unknown id.
func (s *Store) GetOperation(ctx context.Context, id string) (*Operation, error) {
	var op *Operation
	err := s.read(ctx, func(tx *sql.Tx) error {
		ops, err := s.queryOperations(ctx, tx, " WHERE id = ?", []any{id})
		if err != nil {
			return err
		}
		if len(ops) == 0 {
			return opNotFound(id)
		}
		op = &ops[0]
		return nil
	})
	return op, err
}

// ListOperations returns operations newest first, with their steps. A
// Tenant filter keeps operations with a step on that tenant; Limit defaults
// to 50.
func (s *Store) ListOperations(ctx context.Context, f OpFilter) ([]Operation, error) {
	var where []string
	var args []any
	if f.Tenant != "" {
		where = append(where, "id IN (SELECT op_id FROM operation_steps WHERE tenant = ?)")
		args = append(args, f.Tenant)
	}
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, string(f.Status))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	q := ""
	if len(where) > 0 {
		q = " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created DESC, id DESC LIMIT ?"
	args = append(args, limit)
	var out []Operation
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.queryOperations(ctx, tx, q, args)
		return err
	})
	return out, err
}

// queryOperations loads operations matching the query tail, then their steps.
func (s *Store) queryOperations(ctx context.Context, tx *sql.Tx, tail string, args []any) ([]Operation, error) {
	rows, err := tx.QueryContext(ctx, s.Rebind("SELECT "+opColumns+" FROM operations"+tail), args...)
	if err != nil {
		return nil, fmt.Errorf("state: list operations: %w", err)
	}
	defer rows.Close()
	out := []Operation{}
	index := map[string]int{}
	for rows.Next() {
		var op Operation
		var targets, status string
		var created, finished, lease int64
		if err := rows.Scan(&op.ID, &op.Action, &op.Actor, &op.Reason, &targets, &status, &op.Error,
			&created, &finished, &op.Owner, &lease); err != nil {
			return nil, fmt.Errorf("state: list operations: %w", err)
		}
		if err := json.Unmarshal([]byte(targets), &op.Targets); err != nil {
			return nil, fmt.Errorf("state: operation %s targets: %w", op.ID, err)
		}
		op.Targets = nonNil(op.Targets)
		op.Status = OpStatus(status)
		op.Created, op.Finished, op.LeaseUntil = FromMicros(created), FromMicros(finished), FromMicros(lease)
		op.Steps = []Step{}
		index[op.ID] = len(out)
		out = append(out, op)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]any, 0, len(out))
	for _, op := range out {
		ids = append(ids, op.ID)
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
	srows, err := tx.QueryContext(ctx, s.Rebind(
		"SELECT op_id, product, tenant, app, status, row_counts, error, finished FROM operation_steps WHERE op_id IN ("+marks+") ORDER BY op_id, pos"), ids...)
	if err != nil {
		return nil, fmt.Errorf("state: list steps: %w", err)
	}
	defer srows.Close()
	for srows.Next() {
		var opID, status, counts string
		var finished int64
		var st Step
		if err := srows.Scan(&opID, &st.Product, &st.Tenant, &st.App, &status, &counts, &st.Error, &finished); err != nil {
			return nil, fmt.Errorf("state: list steps: %w", err)
		}
		st.Status, st.Finished = StepStatus(status), FromMicros(finished)
		if counts != "{}" && counts != "" {
			if err := json.Unmarshal([]byte(counts), &st.Rows); err != nil {
				return nil, fmt.Errorf("state: operation %s step rows: %w", opID, err)
			}
		}
		i := index[opID]
		out[i].Steps = append(out[i].Steps, st)
	}
	return out, srows.Err()
}
