package status

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Rate limits that every serve process sharing the state store draws from:
// the public forms' limit per client address holds however many processes
// serve them. Each bucket is one row and one statement per request, using
// the generic cell rate algorithm: the row holds the bucket's theoretical
// arrival time (TAT); a request is allowed when TAT - now <= (burst-1) ×
// every, and moves TAT to max(TAT, now) + every. The upsert is atomic on
// both engines, so two processes cannot both take the last token.

// Rate is a token bucket: one token every Every, at most Burst at once.
type Rate struct {
	Every time.Duration
	Burst int
}

// Take takes a token from bucket. When there is none, it returns false and
// how long until there is one.
func (s *Service) Take(ctx context.Context, bucket string, r Rate) (bool, time.Duration, error) {
	now, every := s.now().UnixMicro(), r.Every.Microseconds()
	slack := int64(max(r.Burst, 1)-1) * every
	var tat int64
	err := s.db.st.DB().QueryRowContext(ctx, s.db.q(`INSERT INTO status_rate_buckets (bucket, tat) VALUES (?, ?)
		ON CONFLICT (bucket) DO UPDATE SET tat = (CASE WHEN status_rate_buckets.tat > ? THEN status_rate_buckets.tat ELSE ? END) + ?
		WHERE status_rate_buckets.tat - ? <= ?
		RETURNING tat`), bucket, now+every, now, now, every, now, slack).Scan(&tat)
	if err == nil {
		return true, 0, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, 0, storeErr(err)
	}
	// Refused: the row was left alone; say when the next token comes.
	if err := s.db.st.DB().QueryRowContext(ctx, s.db.q("SELECT tat FROM status_rate_buckets WHERE bucket = ?"), bucket).Scan(&tat); err != nil {
		return false, 0, storeErr(err)
	}
	return false, time.Duration(max(tat-now-slack, 1)) * time.Microsecond, nil
}

// PruneRates deletes the buckets that are full again, which are the same
// as none: the table holds only the clients seen within one refill.
func (s *Service) PruneRates(ctx context.Context) error {
	_, err := s.db.st.DB().ExecContext(ctx, s.db.q("DELETE FROM status_rate_buckets WHERE tat <= ?"), s.now().UnixMicro())
	return storeErr(err)
}
