// Package capture reads the committed changes of a product database in
// commit order, whole transactions at a time, so the shipper can put them in
// the backup repository. SQLite products are captured by triggers that
// `lifeline protect` installs; PostgreSQL products by logical decoding.
package capture

import (
	"context"
	"time"

	"lifeline/internal/change"
)

// Cursor is how far the repository has durably shipped a product's stream:
// the last position, and the source's own position of that change (SQLite:
// the change-log sequence; PostgreSQL: the commit LSN), so that a restarted
// shipper continues exactly after it, with no gap and no duplicate.
type Cursor struct {
	Pos uint64 `json:"pos"`
	Src uint64 `json:"src"`
}

// Batch is a run of whole committed transactions.
type Batch struct {
	// Changes in commit order, numbered from the cursor's Pos+1 with no gap.
	Changes []change.Change
	// Tables are the shapes of the tables the changes were captured under.
	Tables []change.Table
	// End is the cursor after the last change of the batch.
	End Cursor
}

// Source reads one product's change stream.
type Source interface {
	// Read returns the transactions committed after cur, in commit order,
	// stopping at the first transaction boundary after max changes (a
	// transaction is never split). An empty batch means nothing is pending.
	// ErrDrift means a protected table's shape changed since protect: capture
	// stops loudly rather than record rows it cannot describe.
	Read(ctx context.Context, cur Cursor, max int) (Batch, error)
	// Ack tells the source that everything up to cur is durable in the
	// repository, so it may forget it (SQLite: delete it from the change
	// log; PostgreSQL: confirm the LSN to the replication slot). Nothing is
	// forgotten before Ack.
	Ack(ctx context.Context, cur Cursor) error
	// Snapshot opens a consistent image of every protected row. The cursor
	// the change stream continues from, and the table shapes, are known
	// before any row is read (the repository writes them in the object's
	// header): no change is both in the snapshot and after the cursor, and
	// none is in neither.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Backlog reports how many changes wait to be shipped and how old the
	// oldest is: the RPO right now.
	Backlog(ctx context.Context, cur Cursor) (n int64, oldest time.Time, err error)
	Close() error
}

// Snapshot is an open, consistent image of a product's protected rows.
type Snapshot interface {
	// Cursor is where the change stream continues after this image.
	Cursor() Cursor
	// Tables are the shapes of the protected tables in the image.
	Tables() []change.Table
	// Rows streams every row once as a change with Op change.Snapshot,
	// Pos = Cursor().Pos, Tenant and Table set: grouped by tenant, tenants
	// ascending by the bytes of their key text, then by table name, then by
	// primary key. Memory stays bounded: rows are never collected.
	Rows(ctx context.Context, fn func(c *change.Change) error) error
	// Close ends the snapshot's read transaction.
	Close() error
}
