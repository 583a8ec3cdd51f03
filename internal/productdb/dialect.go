package productdb

import (
	"context"
	"database/sql"
	"strings"
	"time"
)

// dialect is the seam between the shared logic and one engine. It is kept
// small: catalog reading, the DDL that differs, the guards (which are engine
// specific by nature) and the few statements whose shape differs.
//
// SQL passed through the shared code uses $1, $2… placeholders, which both
// drivers accept, and double-quoted identifiers.
type dialect interface {
	engine() string

	// inspect reads the user tables (Lifeline's own objects excluded).
	inspect(ctx context.Context, q queryer) (*Schema, error)
	// columns lists the stored columns of a live (trash=false) or trash
	// table; an empty list means the table does not exist.
	columns(ctx context.Context, q queryer, table string, trash bool) ([]tcol, error)

	// live and trash name a product table and its trash table, quoted and
	// qualified as the shared SQL needs them.
	live(table string) string
	trash(table string) string

	// base is the DDL of Lifeline's own tables (idempotent).
	base() []string
	// createTrash is the DDL of a new trash table for t, indexed by
	// (lifeline_tenant, lifeline_op).
	createTrash(t *Table) []string
	// addTrashColumn adds a column that appeared in the live table.
	addTrashColumn(table string, c tcol) string
	// trashType is the type a trash column gets for a live column type.
	trashType(liveType string) string
	// guards replaces every Lifeline trigger with ones for l, and reports
	// whether DROP TABLE of a protected table is refused too ("on") or why
	// not.
	guards(ctx context.Context, tx *sql.Tx, l *Layout) (dropGuard string, err error)

	// beginStep prepares a step's transaction (deferred foreign keys).
	beginStep(ctx context.Context, tx *sql.Tx) error
	// forUpdate is appended to the state read to lock the row.
	forUpdate() string
	// unlock inserts the tenant's unlock row ($1 tenant, $2 op).
	unlock() string
	// move moves the rows of m.src matching m.where into m.dst in one step
	// (no row can slip in between the copy and the delete), returning how
	// many moved.
	move(ctx context.Context, tx execer, m moveSpec) (int64, error)

	// now is the current time as a bind value for a timestamp column.
	now() any
	// constraint says whether err is a unique or foreign key violation.
	constraint(err error) bool
	// badKey says whether err is a tenant key that does not fit the
	// key column's type (PostgreSQL only: "abc" for a bigint).
	badKey(err error) bool
}

// tcol is a stored column as the trash and the moves need it.
type tcol struct {
	name, typ string
	generated bool // computed by the database: never inserted
}

// moveSpec describes one set-based move between a live and a trash table.
// where uses $1…$len(whereArgs); sel are the select expressions over the
// source columns matching dstCols, and may use the following placeholders
// for selArgs.
type moveSpec struct {
	src, where string
	whereArgs  []any
	dst        string
	dstCols    []string
	sel        []string
	selArgs    []any
	intoLive   bool // the destination is a live table (identity columns take the stored values)
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = qi(n)
	}
	return strings.Join(q, ", ")
}

// parseTime reads a timestamp scanned from either engine.
func parseTime(v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		return x
	case string:
		t, _ := time.Parse(time.RFC3339Nano, x)
		return t
	case []byte:
		t, _ := time.Parse(time.RFC3339Nano, string(x))
		return t
	}
	return time.Time{}
}
