package notify

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// queue is the part of a River client this package uses. River's client is
// generic over its driver's transaction type (*sql.Tx on SQLite, pgx.Tx on
// PostgreSQL); none of these methods involves it, so both clients satisfy
// one interface and the rest of the package is engine-blind.
type queue interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertMany(ctx context.Context, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
	JobGet(ctx context.Context, id int64) (*rivertype.JobRow, error)
	JobList(ctx context.Context, params *river.JobListParams) (*river.JobListResult, error)
}

// Queue names: email and webhooks are worked apart, so a slow webhook
// receiver never holds up mail.
const (
	QueueEmail   = "notify_email"
	QueueWebhook = "notify_webhook"
)

// openQueue applies River's migrations to the state store and builds a
// client on it. On PostgreSQL River needs a pgx pool of its own, opened from
// pgURL; the returned close function closes it.
func openQueue(ctx context.Context, st Store, pgURL string, cfg *river.Config) (queue, func(), error) {
	switch st.Engine() {
	case state.EngineSQLite:
		db := st.DB()
		client, err := newQueue(ctx, riversqlite.New(db), cfg, func(m *rivermigrate.Migrator[*sql.Tx]) error {
			// The store's SQLite transactions take the write lock at BEGIN,
			// so two processes never migrate at once.
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := m.MigrateTx(ctx, tx, rivermigrate.DirectionUp, nil); err != nil {
				return err
			}
			return tx.Commit()
		})
		return client, func() {}, err
	case state.EnginePostgres:
		if pgURL == "" {
			return nil, nil, fault.New(fault.Internal, "", "notify: the state store is PostgreSQL but no URL was given for River's pool")
		}
		pool, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			return nil, nil, fault.Wrap(err, fault.Unavailable, "check the `state:` URL in lifeline.yaml", "job queue pool")
		}
		client, err := newQueue(ctx, riverpgxv5.New(pool), cfg, func(m *rivermigrate.Migrator[pgx.Tx]) error {
			// Some of River's PostgreSQL migrations cannot share one
			// transaction (an enum value added, then used), so they run
			// one by one under a session lock that keeps other processes
			// starting at the same time waiting.
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('lifeline:river-migrate'))"); err != nil {
				return err
			}
			defer func() {
				_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext('lifeline:river-migrate'))")
			}()
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
			return err
		})
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return client, pool.Close, nil
	}
	return nil, nil, fault.New(fault.Internal, "", "notify: unknown state store engine %q", st.Engine())
}

// newQueue applies River's migrations with migrate, then builds the client.
func newQueue[TTx any](ctx context.Context, driver riverdriver.Driver[TTx], cfg *river.Config, migrate func(*rivermigrate.Migrator[TTx]) error) (*river.Client[TTx], error) {
	m, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("notify: river migrator: %w", err)
	}
	if err := migrate(m); err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "check the state store; River's tables could not be created or upgraded", "applying River's migrations")
	}
	client, err := river.NewClient(driver, cfg)
	if err != nil {
		return nil, fmt.Errorf("notify: river client: %w", err)
	}
	return client, nil
}

// Backoff is the retry schedule: Base after the first failure, doubling up
// to Max, plus up to a tenth more at random so that many notices failing
// together do not all retry in the same instant.
type Backoff struct {
	Base, Max time.Duration
	// Now is the clock retries are scheduled from; nil means time.Now.
	Now func() time.Time
}

// Delay is the wait after the n-th consecutive failure (n ≥ 1), before
// jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// NextRetry implements river.ClientRetryPolicy. The failure being handled
// is not yet in job.Errors.
func (b Backoff) NextRetry(job *rivertype.JobRow) time.Time {
	d := b.Delay(len(job.Errors) + 1)
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	return now().Add(d + rand.N(d/10+1))
}

// levelFloor drops records below min: River reports routine work at info,
// which would drown Lifeline's own log.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(as), h.min}
}

func (h levelFloor) WithGroup(name string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(name), h.min}
}
