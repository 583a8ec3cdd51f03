package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"lifeline/internal/fault"
)

// RecordErasure adds e to the erasure ledger and fills its ID (consecutive
// from 1) and At. In the same transaction it appends the audit entry
// "erasure". The ledger is never updated or deleted: the database refuses
// both. An erasure without tenant or product is fault.Invalid; an empty Actor
// is taken from WithActor.
func (s *Store) RecordErasure(ctx context.Context, e *Erasure) error {
	if e == nil || e.Tenant == "" || e.Product == "" {
		return fault.New(fault.Invalid, "name the tenant and product whose rows were erased", "erasure without tenant or product")
	}
	if e.Actor == "" {
		e.Actor = actorOf(ctx)
	}
	if e.Rows == nil {
		e.Rows = map[string]int64{}
	}
	counts, err := json.Marshal(e.Rows)
	if err != nil {
		return err
	}
	at := s.stamp()
	var id int64
	err = s.write(ctx, func(tx *sql.Tx) error {
		// Ids are consecutive, so they are taken under the append lock.
		if err := s.lockAppend(ctx, tx); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) + 1 FROM erasure_ledger").Scan(&id); err != nil {
			return fmt.Errorf("state: erasure id: %w", err)
		}
		_, err := tx.ExecContext(ctx, s.Rebind(
			"INSERT INTO erasure_ledger (id, at, actor, reason, op_id, tenant, product, app, row_counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
			id, Micros(at), e.Actor, e.Reason, e.OpID, e.Tenant, e.Product, e.App, string(counts))
		if err != nil {
			return fmt.Errorf("state: record erasure: %w", err)
		}
		detail := map[string]any{"erasure": id, "tenant": e.Tenant, "product": e.Product, "rows": e.Rows, "reason": e.Reason}
		if e.App != "" {
			detail["app"] = e.App
		}
		_, err = s.appendAudit(ctx, tx, AuditEntry{Actor: e.Actor, Action: "erasure", OpID: e.OpID, Detail: detail})
		return err
	})
	if err != nil {
		return err
	}
	e.ID, e.At = id, at
	return nil
}

// Erasures returns the ledger oldest first: all of it, or one tenant's
// entries when tenant is not "".
func (s *Store) Erasures(ctx context.Context, tenant string) ([]Erasure, error) {
	q := "SELECT id, at, actor, reason, op_id, tenant, product, app, row_counts FROM erasure_ledger"
	var args []any
	if tenant != "" {
		q += " WHERE tenant = ?"
		args = append(args, tenant)
	}
	rows, err := s.db.QueryContext(ctx, s.Rebind(q+" ORDER BY id"), args...)
	if err != nil {
		return nil, fmt.Errorf("state: list erasures: %w", err)
	}
	defer rows.Close()
	out := []Erasure{}
	for rows.Next() {
		var e Erasure
		var at int64
		var counts string
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Reason, &e.OpID, &e.Tenant, &e.Product, &e.App, &counts); err != nil {
			return nil, fmt.Errorf("state: list erasures: %w", err)
		}
		e.At = FromMicros(at)
		if err := json.Unmarshal([]byte(counts), &e.Rows); err != nil {
			return nil, fmt.Errorf("state: erasure %d rows: %w", e.ID, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
