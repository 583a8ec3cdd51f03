// Package capture reads the committed changes of a product database in
// commit order, whole transactions at a time, so the shipper can put them in
// the backup repository. SQLite products are captured by triggers that
// `lifeline protect` installs (sqlite.go); PostgreSQL products by logical
// decoding (postgres.go). docs/capture.md explains both and why.
package capture

import (
	"context"
	"log/slog"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// Cursor is how far the repository has durably shipped a product's stream:
// the last position, and the source's own position of that change (SQLite:
// the change-log sequence; PostgreSQL: the end LSN of the commit), so that a
// restarted shipper continues exactly after it, with no gap and no duplicate.
type Cursor struct {
	Pos uint64 `json:"pos"`
	Src uint64 `json:"src"`
}

// Batch is a run of whole committed transactions.
type Batch struct {
	// Changes in commit order, numbered from the cursor's Pos+1 with no gap.
	Changes []change.Change
	// Tables are the shapes of the tables the changes were captured under,
	// one per table (a batch never mixes two shapes of one table), and the
	// current shape of every other captured table.
	Tables []change.Table
	// End is the cursor after the last change of the batch.
	End Cursor
	// Behind says that changes committed before the read began may still
	// be pending after End (SQLite, when the read could not record where
	// the newest transactions end): the next read is due by their age,
	// not by this read's start.
	Behind bool
}

// Source reads one product's change stream. Its methods may be called from
// several goroutines; they run one at a time, except that on SQLite Read and
// Backlog of cursors not older than an Ack's run while it deletes.
type Source interface {
	// Read returns the transactions committed after cur, in commit order,
	// stopping at the first transaction boundary after max changes (a
	// transaction is never split). An empty batch means nothing is pending.
	// Reading from a cursor older than the last Read returns the same
	// changes at the same positions again; a cursor older than the last Ack
	// is refused (fault.Refused), because those changes are forgotten. (On
	// PostgreSQL a new Source cannot know an earlier process's Acks and
	// trusts the cursor; the repository's cursor is never behind an Ack.)
	//
	// On SQLite a transaction is a commit group: the changes that became
	// visible between two reads, always whole transactions (see sqlite.go);
	// only a backlog with no known boundary within 4×max changes is cut
	// without one, and the batch's last change then has TxEnd false.
	//
	// ErrDrift means a protected table's shape changed since protect in a
	// way capture cannot describe: capture stops loudly rather than record
	// rows without a column. Other errors: fault.Unavailable (the database
	// cannot be reached), fault.Refused (capture is not installed, the slot
	// is gone, the change log has a gap the cursor cannot bridge).
	Read(ctx context.Context, cur Cursor, max int) (Batch, error)
	// Ack tells the source that everything up to cur is durable in the
	// repository, so it may forget it (SQLite: delete it from the change
	// log; PostgreSQL: confirm the LSN to the replication slot, which may
	// then recycle WAL). Nothing is forgotten before Ack.
	Ack(ctx context.Context, cur Cursor) error
	// Snapshot opens a consistent image of every protected row and the
	// cursor the change stream continues from: no change is both in the
	// snapshot and after the cursor, and none is in neither. On PostgreSQL
	// it (re)creates the replication slot, whose exported snapshot the rows
	// are read in. Close the Snapshot when done.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Backlog reports how many changes wait to be shipped and how old the
	// oldest is: the RPO right now. PostgreSQL cannot count pending changes
	// without decoding them: n is -1 when some may be pending (see
	// Lagger for the slot's byte lag) and oldest is then the commit time of
	// the oldest change read but not acknowledged, or else the last moment
	// the source knew it had read everything (an upper bound of the age).
	Backlog(ctx context.Context, cur Cursor) (n int64, oldest time.Time, err error)
	Close() error
}

// Snapshot is a consistent image being read. Cursor and Tables are known
// before any row, so a writer can start its object first.
type Snapshot interface {
	// Cursor is the position of the image: the change stream continues
	// after it.
	Cursor() Cursor
	// Tables are the shapes of the protected tables in the image.
	Tables() []change.Table
	// Rows streams every row once, grouped by tenant in ascending byte order
	// of the tenant key's text; within a tenant by table name, then by
	// primary key (SQLite: storage class, then numeric or byte order;
	// PostgreSQL: the byte order of each key column's text). Each change
	// has Op Snapshot, Pos Cursor().Pos and the snapshot's time; it and its
	// Row are valid only during the call. Memory stays bounded whatever the
	// table sizes.
	Rows(ctx context.Context, fn func(*change.Change) error) error
	Close() error
}

// Refresher is implemented by sources whose database can ask for a fresh
// snapshot: protect asks when it found a protected table rebuilt by a
// migration, because what the rebuild deleted was never captured.
type Refresher interface {
	// SnapshotWanted says why a fresh snapshot is wanted, or "".
	SnapshotWanted(ctx context.Context) (string, error)
	// SnapshotTaken withdraws the request why, once a snapshot taken after
	// it is durable in the repository.
	SnapshotTaken(ctx context.Context, why string) error
}

// Lagger is implemented by sources that can say how much the database holds
// for them beyond what was acknowledged, in bytes: the PostgreSQL slot's lag
// (pg_current_wal_lsn() - confirmed_flush_lsn), which is WAL the server
// cannot recycle. The metrics export it; Backlog logs a warning past
// Options.LagWarn.
type Lagger interface {
	LagBytes(ctx context.Context) (int64, error)
}

// ErrDrift is wrapped by every error that stops capture because the schema
// changed since `lifeline protect` (test with errors.Is). It is a
// fault.Refused: running protect again re-installs capture for the new
// shape.
var ErrDrift error = fault.New(fault.Refused,
	"run `lifeline protect`: it re-installs capture for the new shape; changes made meanwhile are kept",
	"capture stopped: the schema changed since `lifeline protect`")

// Options tune a Source. The zero value is fine.
type Options struct {
	// Idle is how long a PostgreSQL Read waits for the next message
	// before it asks the server how far decoding has come (default
	// 150 ms). A Read returns once it has every transaction committed
	// before it began, so Idle bounds how long it takes to learn that
	// nothing more is pending, not what it returns.
	Idle time.Duration
	// Status is how often a PostgreSQL Read reports progress to the server
	// while it waits (default 10 s; the server drops a silent replication
	// connection after wal_sender_timeout, 60 s by default).
	Status time.Duration
	// LagWarn is the slot lag in bytes above which Backlog logs a warning
	// (default 1 GiB).
	LagWarn int64
	// Log receives warnings; nil discards them.
	Log *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Idle <= 0 {
		o.Idle = 150 * time.Millisecond
	}
	if o.Status <= 0 {
		o.Status = 10 * time.Second
	}
	if o.LagWarn <= 0 {
		o.LagWarn = 1 << 30
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Open returns the Source of a protected product, by its engine. layout is
// the product's resolved layout; it names the product (the PostgreSQL slot
// and publication) and says which tables should be captured, so a table
// that gained the tenant column since protect stops capture (ErrDrift)
// instead of being missed. Capture not installed is a fault.Refused.
func Open(ctx context.Context, db *productdb.DB, layout *productdb.Layout, opts Options) (Source, error) {
	opts = opts.withDefaults()
	shapes, err := db.CapturedShapes(ctx, nil)
	if err != nil {
		return nil, err
	}
	switch db.Engine() {
	case productdb.SQLite:
		return openSQLite(db, layout, opts), nil
	case productdb.Postgres:
		return openPostgres(db, layout, opts, shapes), nil
	}
	return nil, fault.New(fault.Invalid, "", "product database %s: no change capture for engine %s", db, db.Engine())
}
