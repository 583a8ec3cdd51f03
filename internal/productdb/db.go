package productdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"lifeline/internal/fault"
)

// DB is one open product database.
type DB struct {
	db        *sql.DB
	d         dialect
	name      string               // the DSN as shown to people: no password
	path      string               // SQLite: the database file
	syncFile  func(*os.File) error // SQLite: how SyncLog syncs the log, (*os.File).Sync (SetLogSync)
	protected atomic.Bool
	stmts     sync.Map // SQL text -> *sql.Stmt: a restore's statements, prepared once (see restore.go)
}

// Open connects to a product database. dsn is "sqlite:PATH" (relative to
// baseDir unless absolute) or a postgres:// (postgresql://) URL.
//
// A SQLite file must already exist: Lifeline never creates an empty product
// database, because a typo in the path would otherwise "protect" a new empty
// file while the real one stays unguarded. A database that cannot be reached
// is a fault.Unavailable naming the DSN without its password.
func Open(ctx context.Context, dsn, baseDir string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"), baseDir)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	}
	return nil, fault.New(fault.Invalid,
		"write it as sqlite:PATH or postgres://USER@HOST/DB (products[].database in lifeline.yaml)",
		"product database %q has an unknown scheme", redact(dsn))
}

func openSQLite(ctx context.Context, path, baseDir string) (*DB, error) {
	path = strings.TrimPrefix(path, "//")
	shown := "sqlite:" + path
	if path == "" {
		return nil, fault.New(fault.Invalid, "write it as sqlite:PATH, for example sqlite:tracker.db", "product database %q names no file", shown)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "", "product database %s: bad path", shown)
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fault.New(fault.NotFound,
				"check products[].database in lifeline.yaml (sqlite: paths are relative to the config file); Lifeline never creates a product database, the application does",
				"product database %s does not exist (looked at %s)", shown, abs)
		}
		return nil, fault.Wrap(err, fault.Unavailable, "check the file's permissions", "cannot reach product database %s", shown)
	}
	if st.IsDir() {
		return nil, fault.New(fault.Invalid, "point products[].database at the SQLite file, not its folder", "product database %s is a directory", shown)
	}
	// mode=rw: never create the file. WAL lets the application read while
	// Lifeline writes; busy_timeout makes writers wait instead of failing.
	// An 8 MB page cache (the default is 2 MB) keeps a restore's batch of
	// tenants' pages in memory from the diff to the verification, instead
	// of spilling and reading them again (not larger: a write by another
	// connection empties it at the next transaction, and freeing a large
	// one costs); temp_store=MEMORY keeps the
	// journal of each tenant's savepoint in memory rather than a temp file.
	u := url.URL{Scheme: "file", Path: abs}
	conn := u.String() + "?mode=rw&_txlock=immediate" +
		"&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=cache_size(-8192)&_pragma=temp_store(2)"
	sdb, err := sql.Open("sqlite", conn)
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "check products[].database in lifeline.yaml", "cannot open product database %s", shown)
	}
	db := &DB{db: sdb, d: sqliteDialect{}, name: shown, path: abs, syncFile: (*os.File).Sync}
	var n int
	if err := sdb.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		sdb.Close()
		return nil, fault.Wrap(err, fault.Unavailable,
			"check that the file is a SQLite database and that this user may read and write it (and its folder, for the WAL files)",
			"cannot read product database %s", shown)
	}
	return db, nil
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	shown := redact(dsn)
	sdb, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check the URL in products[].database in lifeline.yaml", "bad product database URL %s", shown)
	}
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fault.Wrap(err, fault.Unavailable,
			"check that PostgreSQL is running and reachable, and that the URL in products[].database (user, database, password) is right",
			"cannot reach product database %s", shown)
	}
	return &DB{db: sdb, d: pgDialect{}, name: shown}, nil
}

// redact drops the password from a URL DSN so it can be shown in errors.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		if err != nil && strings.Contains(dsn, "@") {
			return "(unparsable URL)"
		}
		return dsn
	}
	if _, has := u.User.Password(); has {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}

// Close closes the connection pool.
func (db *DB) Close() error { return db.db.Close() }

// Engine says which engine this product runs on: SQLite or Postgres.
func (db *DB) Engine() string { return db.d.engine() }

// SQL is the underlying pool, for callers that read product data directly
// (contacts queries, capture, restore).
func (db *DB) SQL() *sql.DB { return db.db }

// String is the DSN without its password.
func (db *DB) String() string { return db.name }

// Inspect reads the user tables of the product (the public schema on
// PostgreSQL) with their columns, primary keys and foreign keys. Lifeline's
// own lifeline_* tables and the lifeline schema are left out.
func (db *DB) Inspect(ctx context.Context) (*Schema, error) {
	s, err := db.d.inspect(ctx, db.db)
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "check that the database is reachable and that this user may read its catalog", "inspect product database %s", db.name)
	}
	canonical(s)
	return s, nil
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// qi quotes an identifier the same way on both engines.
func qi(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// lit quotes a string literal the same way on both engines.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// queryStrings runs a query returning one text column.
func queryStrings(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// lazyCommits makes a connection's commits not wait for the disk (SQLite
// synchronous=NORMAL): a commit returns once its pages are in the
// write-ahead log, and an fsync under the write lock no longer holds up
// the application's writers (about 1.6 ms each here, up to 50 ms on a
// busy disk). Commits that must be durable are made so by SyncLog, after
// the lock is given back.
var lazyCommits = Setting{Name: "synchronous", Value: "NORMAL"}

// lazyConn is a connection of its own with lazyCommits.
func (db *DB) lazyConn(ctx context.Context) (conn *sql.Conn, release func(), err error) {
	return db.ConnWith(ctx, lazyCommits)
}

// Setting is one SQLite setting of a connection: PRAGMA Name = Value.
type Setting struct{ Name, Value string }

// ConnWith is a connection of its own with SQLite settings changed for its
// holder (names and values are Lifeline's, never user input). release
// gives it back to the pool with the settings as they were; one that
// cannot be reset is closed for good, as a connection left changed would
// change the work of whoever the pool gives it to next. PostgreSQL
// connections are returned as they are.
func (db *DB) ConnWith(ctx context.Context, settings ...Setting) (conn *sql.Conn, release func(), err error) {
	conn, err = db.db.Conn(ctx)
	if err != nil {
		return nil, nil, db.unavailable(err)
	}
	if db.d.engine() != SQLite {
		return conn, func() { conn.Close() }, nil
	}
	discard := func() { // closed for good, not given back changed
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}
	was := make([]Setting, len(settings))
	for i, s := range settings {
		was[i].Name = s.Name
		err := conn.QueryRowContext(ctx, "PRAGMA "+s.Name).Scan(&was[i].Value)
		if err == nil {
			_, err = conn.ExecContext(ctx, "PRAGMA "+s.Name+" = "+s.Value)
		}
		if err != nil {
			discard()
			return nil, nil, db.unavailable(err)
		}
	}
	return conn, func() {
		for _, s := range was {
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA "+s.Name+" = "+s.Value); err != nil {
				discard()
				return
			}
		}
		conn.Close()
	}, nil
}

// SyncLog makes every transaction committed so far durable, whatever
// synchronous setting it committed with. Capture calls it before handing
// changes on: an application that commits with synchronous=NORMAL (common
// with WAL) can lose its last commits to a power cut, and a change already
// in the repository would then be missing from the database, its position
// given to another. On SQLite it is one fsync of the
// write-ahead log, which holds every commit not yet copied into the
// database file (a checkpoint syncs the log before copying and the file
// after). fsync reaches a file's data whichever descriptor asks. Without a
// log file there is nothing pending (rollback-journal mode syncs at
// commit). On PostgreSQL commits are durable when they return.
func (db *DB) SyncLog() error {
	if db.d.engine() != SQLite {
		return nil
	}
	f, err := os.Open(db.path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = db.syncFile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fault.Wrap(err, fault.Unavailable, "check the disk the product database is on",
			"cannot make the write-ahead log of %s durable", db.name)
	}
	return nil
}

// SetLogSync replaces the call through which SyncLog makes the SQLite
// write-ahead log durable, (*os.File).Sync. A power cut cannot be
// simulated, so tests watch durability through it: that each commit Lifeline
// reports done is synced, after the commit, and that a sync that fails
// fails the caller. Set it while nothing else uses the DB.
func (db *DB) SetLogSync(sync func(*os.File) error) { db.syncFile = sync }

// execAll runs statements in order, naming the failing one.
func execAll(ctx context.Context, q queryer, stmts ...string) error {
	for _, s := range stmts {
		if _, err := q.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%w\nin statement: %s", err, firstLine(s))
		}
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
