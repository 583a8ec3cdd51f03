package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// ExpireTrash applies the retention of soft-deleted rows
// (retention.deleted, the tenant service's Retention) to what restores
// kept: in every product, the trash rows of a restore or of a restore's
// undo that finished longer ago than that are removed for good, like a
// deleted tenant's rows once it is purged. A restore whose trash is gone
// can no longer be undone (Undo refuses, naming a restore to before it
// instead). It returns how many rows it removed. `lifeline serve` runs it
// every hour.
func (s *Service) ExpireTrash(ctx context.Context) (int64, error) {
	store := s.Tenants.Store
	cutoff := s.Tenants.Clock().Add(-s.Tenants.Retention)
	var total int64
	for _, p := range s.Tenants.Products {
		ops, err := p.DB.TrashOps(ctx, p.Layout)
		if err != nil {
			return total, err
		}
		for _, id := range ops {
			op, err := store.GetOperation(ctx, id)
			if fault.CodeOf(err) == fault.NotFound {
				continue
			}
			if err != nil {
				return total, err
			}
			if (op.Action != "restore" && op.Action != "restore-undo") || op.Status == state.OpRunning || op.Finished.IsZero() || !op.Finished.Before(cutoff) {
				continue
			}
			n, err := p.DB.DropTrash(ctx, p.Layout, id)
			if err != nil {
				return total, err
			}
			total += n
			if op.Action == "restore" {
				if _, err := store.DB().ExecContext(ctx, store.Rebind(`UPDATE restore_runs SET trash_expired = ? WHERE op_id = ? AND trash_expired = 0`),
					store.Now().UnixMicro(), id); err != nil {
					return total, fmt.Errorf("restore: record the trash of %s as expired: %w", id, err)
				}
			}
			if s.Log != nil {
				s.Log.Info("restore trash expired", "op", id, "product", p.Name, "rows", n, "finished", op.Finished.UTC().Format(time.RFC3339))
			}
		}
	}
	return total, nil
}

// trashExpired says when retention removed restore opID's trash (zero:
// it has not).
func trashExpired(ctx context.Context, store *state.Store, opID string) (time.Time, error) {
	var at int64
	err := store.DB().QueryRowContext(ctx, store.Rebind(`SELECT trash_expired FROM restore_runs WHERE op_id = ?`), opID).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && at == 0) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("restore: read the trash state of %s: %w", opID, err)
	}
	return time.UnixMicro(at), nil
}
