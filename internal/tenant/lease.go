package tenant

import (
	"context"
	"time"

	"lifeline/internal/state"
)

// Operations that other packages run on tenant data (restore) use the same
// leases, take-over rules and clock as lifecycle operations; these expose
// them.

// KeepLease renews operation id's lease until the returned stop is called.
func (s *Service) KeepLease(ctx context.Context, id string) (stop func()) {
	return s.keepLease(ctx, id)
}

// Claim takes a running operation's lease for this process. A lease held by
// a process of this host that no longer exists is taken at once; a live
// runner's lease is a fault.Conflict.
func (s *Service) Claim(ctx context.Context, op *state.Operation) error { return s.claim(ctx, op) }

// Interrupted reports whether a running operation's runner is gone: its
// lease expired, or its process on this host exited (kill -9).
func (s *Service) Interrupted(op *state.Operation) bool {
	return op.LeaseUntil.Before(s.now()) || ownerGone(op.Owner)
}

// TTL is how long an operation's lease lasts without renewal (LeaseTTL or
// the default).
func (s *Service) TTL() time.Duration { return s.ttl() }

// Clock is the service's current time.
func (s *Service) Clock() time.Time { return s.now() }
