package productdb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// Capture objects. Protect installs, next to the guards, what internal/capture
// needs to read every committed change of the protected tables:
//
//   - lifeline_capture_shapes(tbl, from_seq, shape): the shape (columns,
//     primary key, tenant column) each protected table had when capture was
//     installed for it, as JSON of a change.Table. On SQLite a table keeps
//     its older shapes while change-log rows written under them are pending,
//     and a NULL shape marks a table no longer captured; on PostgreSQL it is
//     the baseline the replication stream's relation messages are compared
//     with.
//   - SQLite: the change log lifeline_changes and four triggers per table
//     (capture_sqlite.go).
//   - PostgreSQL: the publication lifeline_<product> and REPLICA IDENTITY
//     FULL on every protected table (capture_postgres.go). The replication
//     slot of the same name is created by capture's Snapshot, which needs the
//     snapshot it exports.

// ChangeLog is the SQLite change log table. Its c0…cN columns hold a row's
// values in column order; see capture_sqlite.go.
const ChangeLog = "lifeline_changes"

// LogColumn names the change-log column holding a row's i-th value.
func LogColumn(i int) string { return fmt.Sprintf("c%d", i) }

// CaptureName is the PostgreSQL publication and replication slot name of a
// product: lifeline_ and the product name reduced to what slot names allow
// (lower-case letters, digits, underscores), with a hash when that changed it
// so two products cannot share a slot.
func CaptureName(product string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(product) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name != product {
		sum := sha256.Sum256([]byte(product))
		name += "_" + hex.EncodeToString(sum[:3])
	}
	return pgName("lifeline_", name)
}

// CapturedShape is one recorded shape of a protected table.
type CapturedShape struct {
	Name string
	// FromSeq is the first SQLite change-log sequence captured under this
	// shape (0 on PostgreSQL).
	FromSeq int64
	// Table is nil when the table is not captured from FromSeq on.
	Table *change.Table
}

// CapturedShapes returns what Protect recorded, sorted by table and FromSeq,
// read through tx when it is not nil (so a reader sees them in its own
// snapshot). A product without capture is a fault.Refused saying to run
// protect.
func (db *DB) CapturedShapes(ctx context.Context, tx *sql.Tx) ([]CapturedShape, error) {
	var q queryer = db.db
	if tx != nil {
		q = tx
	}
	rows, err := q.QueryContext(ctx, "SELECT tbl, from_seq, shape FROM lifeline_capture_shapes ORDER BY tbl, from_seq")
	if err != nil {
		if cols, cerr := db.d.columns(ctx, q, "lifeline_capture_shapes", false); cerr == nil && len(cols) == 0 {
			return nil, fault.New(fault.Refused, "run `lifeline protect`; it installs change capture with the guards",
				"product database %s has no change capture installed", db.name)
		}
		return nil, db.unavailable(err)
	}
	defer rows.Close()
	var out []CapturedShape
	for rows.Next() {
		var s CapturedShape
		var js sql.NullString
		if err := rows.Scan(&s.Name, &s.FromSeq, &js); err != nil {
			return nil, db.unavailable(err)
		}
		if js.Valid {
			s.Table = new(change.Table)
			if err := json.Unmarshal([]byte(js.String), s.Table); err != nil {
				return nil, db.internal(err, "decode the captured shape of "+s.Name)
			}
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, db.unavailable(err)
	}
	if len(out) == 0 {
		return nil, fault.New(fault.Refused, "run `lifeline protect`; it installs change capture with the guards",
			"product database %s has no change capture installed", db.name)
	}
	return out, nil
}

// LiveShapes returns the current shape of every table of l, in l's order,
// read through tx when it is not nil. Generated columns are left out: the
// database computes them, and PostgreSQL's logical decoding does not send
// them. A table that is gone, or lost its primary key or tenant column, is a
// fault.Refused.
func (db *DB) LiveShapes(ctx context.Context, tx *sql.Tx, l *Layout) ([]change.Table, error) {
	var q queryer = db.db
	if tx != nil {
		q = tx
	}
	s, err := db.d.inspect(ctx, q)
	if err != nil {
		return nil, db.unavailable(err)
	}
	out := make([]change.Table, 0, len(l.Tables))
	for _, name := range l.Tables {
		st := s.Table(name)
		if st == nil {
			return nil, fault.New(fault.Refused, "run `lifeline protect` to protect the tables as they are now",
				"product %s: protected table %s no longer exists", l.Product, name)
		}
		cols, err := db.d.columns(ctx, q, name, false)
		if err != nil {
			return nil, db.unavailable(err)
		}
		t := change.Table{Name: name, Tenant: -1}
		tenant := l.TenantColumn
		if name == l.TenantsTable {
			tenant = l.KeyColumn
		}
		for _, c := range cols {
			if c.generated {
				continue
			}
			if c.name == tenant {
				t.Tenant = len(t.Columns)
			}
			t.Columns = append(t.Columns, change.Column{Name: c.name, Type: c.typ})
		}
		for _, k := range st.PrimaryKey {
			i := slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == k })
			if i < 0 {
				return nil, fault.New(fault.Refused, "make the primary key a stored column, then run `lifeline protect`",
					"product %s: table %s: primary key column %s is not a stored column", l.Product, name, k)
			}
			t.PrimaryKey = append(t.PrimaryKey, i)
		}
		if len(t.PrimaryKey) == 0 || t.Tenant < 0 {
			return nil, fault.New(fault.Refused, "run `lifeline protect` to resolve the layout against the current schema",
				"product %s: table %s has no primary key or no tenant column %s any more", l.Product, name, tenant)
		}
		out = append(out, t)
	}
	return out, nil
}

// CaptureProblems lists, one line each, what is missing of the capture
// objects Protect installed for tables: SQLite triggers dropped (a table
// rebuilt by a migration loses them), a PostgreSQL table left out of the
// publication or without REPLICA IDENTITY FULL. No lines: capture is intact.
func (db *DB) CaptureProblems(ctx context.Context, tx *sql.Tx, product string, tables []string) ([]string, error) {
	var q queryer = db.db
	if tx != nil {
		q = tx
	}
	cd, ok := db.d.(captureDialect)
	if !ok {
		return nil, fmt.Errorf("no change capture for engine %s", db.d.engine())
	}
	p, err := cd.captureProblems(ctx, q, product, tables)
	if err != nil {
		return nil, db.unavailable(err)
	}
	return p, nil
}

// captureDialect is the engine side of capture installation.
type captureDialect interface {
	// captureBefore reads what capture looked like before Protect's guards
	// step dropped Lifeline's triggers.
	captureBefore(ctx context.Context, tx *sql.Tx, l *Layout) (captureState, error)
	// installCapture installs or updates capture for l's tables, whose
	// current shapes are given. It returns the tables that were captured
	// but whose capture objects were gone: a migration rebuilt them.
	installCapture(ctx context.Context, tx *sql.Tx, l *Layout, shapes []change.Table, before captureState) (rebuilt []string, err error)
	// captureProblems: see DB.CaptureProblems.
	captureProblems(ctx context.Context, q queryer, product string, tables []string) ([]string, error)
	// uninstall removes guards and capture (not trash, states or markers).
	uninstall(ctx context.Context, db *DB, product string) error
}

// Both engines capture.
var (
	_ captureDialect = sqliteDialect{}
	_ captureDialect = pgDialect{}
)

// captureState is what captureBefore found.
type captureState struct {
	hasLog   bool                     // SQLite: the change log existed
	intact   map[string]bool          // SQLite: tables whose capture triggers were all there
	latest   map[string]*change.Table // the last recorded shape per table (nil: tombstone)
	lastFrom map[string]int64
}

const captureShapesDDL = `CREATE TABLE IF NOT EXISTS lifeline_capture_shapes (
	tbl TEXT NOT NULL,
	from_seq BIGINT NOT NULL,
	shape TEXT,
	PRIMARY KEY (tbl, from_seq))`

// captureBefore is Protect's first capture hook, run before the guards are
// replaced.
func (db *DB) captureBefore(ctx context.Context, tx *sql.Tx, l *Layout) (captureState, error) {
	cd, ok := db.d.(captureDialect)
	if !ok {
		return captureState{}, nil
	}
	if _, err := tx.ExecContext(ctx, captureShapesDDL); err != nil {
		return captureState{}, db.internal(err, "create lifeline_capture_shapes")
	}
	st, err := cd.captureBefore(ctx, tx, l)
	if err != nil {
		return st, db.internal(err, "read the installed capture")
	}
	st.latest, st.lastFrom = map[string]*change.Table{}, map[string]int64{}
	rows, err := tx.QueryContext(ctx, "SELECT tbl, from_seq, shape FROM lifeline_capture_shapes ORDER BY tbl, from_seq")
	if err != nil {
		return st, db.internal(err, "read lifeline_capture_shapes")
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var from int64
		var js sql.NullString
		if err := rows.Scan(&name, &from, &js); err != nil {
			return st, db.internal(err, "read lifeline_capture_shapes")
		}
		var t *change.Table
		if js.Valid {
			t = new(change.Table)
			if err := json.Unmarshal([]byte(js.String), t); err != nil {
				return st, db.internal(err, "decode the captured shape of "+name)
			}
		}
		st.latest[name], st.lastFrom[name] = t, from
	}
	return st, rows.Err()
}

// installCapture is Protect's second capture hook, run after the guards.
func (db *DB) installCapture(ctx context.Context, tx *sql.Tx, l *Layout, before captureState) error {
	cd, ok := db.d.(captureDialect)
	if !ok {
		return nil
	}
	shapes, err := db.LiveShapes(ctx, tx, l)
	if err != nil {
		return err
	}
	rebuilt, err := cd.installCapture(ctx, tx, l, shapes, before)
	if err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return err
		}
		return db.internal(err, "install change capture")
	}
	if len(rebuilt) > 0 {
		// What the rebuild deleted was never captured, so the repository
		// needs the tables' rows as they are: a fresh snapshot. Asked for
		// in protect's own transaction, so no protect forgets to.
		why := fmt.Sprintf("protect at %s found %s rebuilt", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(rebuilt, ", "))
		if _, err := tx.ExecContext(ctx, `INSERT INTO lifeline_meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, metaSnapshotWanted, why); err != nil {
			return db.internal(err, "ask for a fresh snapshot")
		}
	}
	return nil
}

// metaSnapshotWanted is the lifeline_meta key under which protect asks the
// shipper for a fresh snapshot.
const metaSnapshotWanted = "snapshot_wanted"

// SnapshotWanted returns why protect asked for a fresh snapshot of the
// product (it found a protected table rebuilt), or "" when nothing is
// asked.
func (db *DB) SnapshotWanted(ctx context.Context) (string, error) {
	var why string
	err := db.db.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = $1", metaSnapshotWanted).Scan(&why)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", db.unavailable(err)
	}
	return why, nil
}

// SnapshotTaken withdraws the request why once its snapshot is in the
// repository; a newer request (a later protect) stays.
func (db *DB) SnapshotTaken(ctx context.Context, why string) error {
	_, err := db.db.ExecContext(ctx, "DELETE FROM lifeline_meta WHERE key = $1 AND value = $2", metaSnapshotWanted, why)
	if err != nil {
		return db.unavailable(err)
	}
	return nil
}

// recordShape writes one shape row (t nil: a tombstone).
func recordShape(ctx context.Context, tx *sql.Tx, name string, from int64, t *change.Table) error {
	var js any
	if t != nil {
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		js = string(b)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO lifeline_capture_shapes (tbl, from_seq, shape) VALUES ($1, $2, $3)
		ON CONFLICT (tbl, from_seq) DO UPDATE SET shape = excluded.shape`, name, from, js)
	return err
}

// SameShape says whether two shapes describe rows identically.
func SameShape(a, b *change.Table) bool {
	return a != nil && b != nil && a.Name == b.Name && slices.Equal(a.Columns, b.Columns) &&
		slices.Equal(a.PrimaryKey, b.PrimaryKey) && a.Tenant == b.Tenant
}

// Unprotect removes what Protect installed to guard and capture: every
// Lifeline trigger, the SQLite change log, and on PostgreSQL the event
// trigger, the publication and the replication slot (REPLICA IDENTITY goes
// back to what it was). Trash tables, tenant states and step markers stay:
// they hold soft-deleted rows and history. Afterwards the product counts as
// not protected. Changes made after Unprotect are not captured; a later
// protect needs a new snapshot in the repository. A slot still in use is a
// fault.Conflict: stop `lifeline serve` first.
func (db *DB) Unprotect(ctx context.Context) error {
	if db.missingTable(ctx) {
		return nil
	}
	var product string
	err := db.db.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = 'product'").Scan(&product)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return db.unavailable(err)
	}
	cd, ok := db.d.(captureDialect)
	if !ok {
		return fmt.Errorf("no change capture for engine %s", db.d.engine())
	}
	if err := cd.uninstall(ctx, db, product); err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return err
		}
		return db.internal(err, "unprotect")
	}
	db.protected.Store(false)
	return nil
}

// unprotectMeta forgets that protect ran.
const unprotectMeta = `DELETE FROM lifeline_meta WHERE key IN ('version', 'fingerprint', 'drop_guard', 'protected_at', 'replica_identity', '` + metaSnapshotWanted + `')`

// ReplicationConn opens a PostgreSQL replication connection
// (replication=database) to the product database with the pool's own
// settings (host, user, password, TLS) plus params as startup parameters.
func (db *DB) ReplicationConn(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
	if db.d.engine() != Postgres {
		return nil, fmt.Errorf("product database %s: replication connections exist on PostgreSQL only", db.name)
	}
	c, err := db.db.Conn(ctx)
	if err != nil {
		return nil, db.unavailable(err)
	}
	var cfg *pgconn.Config
	err = c.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		cfg = sc.Conn().Config().Config.Copy()
		return nil
	})
	c.Close()
	if err != nil {
		return nil, db.internal(err, "read the connection settings")
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable,
			"the product database user needs the REPLICATION attribute (or superuser) and pg_hba.conf must allow its replication connections; wal_level must be logical",
			"product database %s: cannot open a replication connection", db.name)
	}
	return conn, nil
}
