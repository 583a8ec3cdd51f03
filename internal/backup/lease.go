package backup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/tenant"
)

// Lease is who ships a product: one shipper per product, however many
// `lifeline serve` processes share the state store.
type Lease struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// claimLease takes or renews product's shipping lease for owner until
// now+ttl. It succeeds when owner holds it, when nobody does, when it
// expired, or when its holder is a process of this host that is gone
// (kill -9), with the same take-over rules as operation and plan leases
// (tenant.OwnerGone). Otherwise it is a fault.Conflict naming the holder.
// Each update is conditional on what was read, so of two processes
// claiming at once only one wins.
//
// renewed is true when owner was still the lease's owner: no other process
// claimed it since owner last did (every claim writes its owner), so
// whatever owner knows of the repository is current. Otherwise the lease
// was taken, and another process may have shipped in between. epoch is the
// lease's count of changes of hands, the same for as long as owner keeps
// renewing it; fences carry it (fence.check).
func (r *Repo) claimLease(ctx context.Context, product, owner string, ttl time.Duration) (epoch int64, renewed bool, err error) {
	db, now := r.State.DB(), r.Now()
	until := micros(now.Add(ttl))
	// Renewing is one statement; the row is created on the first claim.
	// Taking the lease over counts one more epoch.
	update := func(set, cond string, args ...any) (int64, bool, error) {
		var epoch int64
		err := db.QueryRowContext(ctx, r.State.Rebind(`UPDATE backup_leases SET owner = ?, lease_until = ?`+set+` WHERE product = ? AND `+cond+` RETURNING epoch`),
			append([]any{owner, until, product}, args...)...).Scan(&epoch)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("backup lease: %w", err)
		}
		return epoch, true, nil
	}
	const takeOver = ", epoch = epoch + 1"
	if epoch, ok, err := update("", "owner = ?", owner); err != nil || ok {
		return epoch, ok, err
	}
	if epoch, ok, err := update(takeOver, "lease_until <= ?", micros(now)); err != nil || ok {
		return epoch, false, err
	}
	res, err := db.ExecContext(ctx, r.State.Rebind(`INSERT INTO backup_leases (product, owner, lease_until, epoch) VALUES (?, ?, ?, 1)
		ON CONFLICT (product) DO NOTHING`), product, owner, until)
	if err != nil {
		return 0, false, fmt.Errorf("backup lease: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return 1, false, nil
	}
	held, err := r.Lease(ctx, product)
	if err != nil {
		return 0, false, err
	}
	if tenant.OwnerGone(held.Owner) {
		if epoch, ok, err := update(takeOver, "owner = ? AND lease_until = ?", held.Owner, micros(held.Until)); err != nil || ok {
			return epoch, false, err
		}
		if held, err = r.Lease(ctx, product); err != nil {
			return 0, false, err
		}
	}
	return 0, false, fault.New(fault.Conflict, "nothing to do: that process ships it; stop it first to ship from here",
		"%s is shipped by %s (lease until %s)", product, held.Owner, held.Until.Format(time.RFC3339))
}

// releaseLease gives product's lease up if owner holds it, so another
// process takes over at once instead of waiting for it to expire.
func (r *Repo) releaseLease(ctx context.Context, product, owner string) error {
	_, err := r.State.DB().ExecContext(ctx, r.State.Rebind(`UPDATE backup_leases SET lease_until = 0 WHERE product = ? AND owner = ?`), product, owner)
	if err != nil {
		return fmt.Errorf("backup lease: %w", err)
	}
	return nil
}

// Lease returns who holds product's shipping lease and until when (the
// zero Lease when nobody ever shipped it).
func (r *Repo) Lease(ctx context.Context, product string) (Lease, error) {
	var l Lease
	var until int64
	err := r.State.DB().QueryRowContext(ctx, r.State.Rebind(`SELECT owner, lease_until FROM backup_leases WHERE product = ?`), product).Scan(&l.Owner, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, nil
	}
	if err != nil {
		return Lease{}, fmt.Errorf("backup lease: %w", err)
	}
	l.Until = fromMicros(until)
	return l, nil
}

// fence is the lease a process must still hold for what it writes to the
// catalog to count: a shipper's uploads, and every change a maintenance
// pass makes (Shipper.fence).
type fence struct {
	product, owner string
	// epoch is the lease's epoch when the fence was made, before whatever
	// the write is based on was read: a holder that lost the lease and
	// took it back since holds a later one.
	epoch int64
	ttl   time.Duration
	// upload is set for a shipper's upload, which must continue the
	// catalog: top is the catalog's last position it continues (-1: the
	// catalog must be empty). Maintenance changes nothing past the
	// catalog's end and leaves it unset.
	upload bool
	top    int64
}

// errCatalogMoved: another process (`backup list` or another `backup run`
// rescanning) adopted an upload of the positions a shipper was about to
// record.
var errCatalogMoved = errors.New("the catalog moved on")

// check renews the fence's lease inside tx and fails with a fault.Conflict
// wrapping ErrLeased when its owner no longer holds it, or holds it again
// after losing it (a later epoch): another process claimed the lease since,
// and may have shipped the same positions or maintained the repository from
// its own reading of the catalog. The
// update also locks the lease row until tx ends, so a concurrent claim
// waits for tx and then finds the lease renewed. For an upload it fails
// wrapping errCatalogMoved when the catalog no longer ends at f.top.
func (f *fence) check(ctx context.Context, r *Repo, tx *sql.Tx) error {
	now := r.Now()
	res, err := tx.ExecContext(ctx, r.State.Rebind(`UPDATE backup_leases SET lease_until = ? WHERE product = ? AND owner = ? AND epoch = ?`),
		micros(now.Add(f.ttl)), f.product, f.owner, f.epoch)
	if err != nil {
		return fmt.Errorf("backup lease: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		what := "maintenance pass stops; what it had not recorded yet is left out"
		if f.upload {
			what = "upload is left out of the repository"
		}
		return fault.Wrap(ErrLeased, fault.Conflict, "nothing to do: the process that took the lease over ships and maintains the product",
			"%s: %s lost the shipping lease to another process; its %s", f.product, f.owner, what)
	}
	if !f.upload {
		return nil
	}
	var top int64
	if err := tx.QueryRowContext(ctx, r.State.Rebind(`SELECT coalesce(max(last_pos), -1) FROM backup_objects WHERE product = ?`), f.product).Scan(&top); err != nil {
		return fmt.Errorf("backup catalog: %w", err)
	}
	if top != f.top {
		return fault.Wrap(errCatalogMoved, fault.Conflict, "nothing to do: the next round continues from the catalog",
			"%s: the catalog reached position %d while an upload continuing %d was in flight; that object is left out", f.product, top, f.top)
	}
	return nil
}

// keepLease renews the product's lease every third of its TTL while a
// long step runs between two claims: the first snapshot of a large
// product takes minutes to build and upload, and a standby process would
// otherwise take the lapsed lease over and ship the same positions, only
// for one of the two snapshots to be thrown away. When a renewal finds the
// lease taken, ctx is cancelled. kept, deferred by the step (on the
// caller's goroutine), stops the renewals and, if the lease was lost, sets
// *err to the fault (a fault.Conflict wrapping ErrLeased).
func (s *Shipper) keepLease(ctx context.Context) (_ context.Context, kept func(err *error)) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.leaseTTL() / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_, renewed, err := s.Repo.claimLease(ctx, s.Product, s.owner(), s.leaseTTL())
			if fault.CodeOf(err) == fault.Conflict || err == nil && !renewed {
				cancel(fault.Wrap(ErrLeased, fault.Conflict, "nothing to do: the process that took the lease over ships the product",
					"%s: %s lost the shipping lease while it built a snapshot; the snapshot is left out", s.Product, s.owner()))
				return
			}
			// Another error (the state store unreachable): the lease may
			// lapse; the fenced record of the snapshot tells.
		}
	}()
	return ctx, func(err *error) {
		cancel(nil)
		<-done
		if lost := context.Cause(ctx); errors.Is(lost, ErrLeased) {
			s.held, s.ready = false, false
			*err = lost
		}
	}
}
