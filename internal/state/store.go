// Package state is Lifeline's own state store: operations and their tenant
// locks, the hash-chained audit log, the erasure ledger, operator tokens and
// the schemas recorded by `lifeline protect`.
//
// It runs on SQLite (the default, one file) or PostgreSQL (when several
// `lifeline serve` processes share one store). Both engines get the same
// tables from one set of portable migrations; only the append-only triggers
// are written per engine. Every write that must be serialised across
// processes (audit appends, erasure ids) is: SQLite takes its write lock at
// BEGIN, PostgreSQL takes a transaction-scoped advisory lock.
package state

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"lifeline/internal/fault"
)

// Engine names returned by Store.Engine.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

//go:embed migrations
var migrationFiles embed.FS

// sqliteParams configure every SQLite connection: wait up to 15s for a lock
// instead of failing with SQLITE_BUSY, WAL so readers never block the writer,
// foreign keys enforced, and write transactions that take the write lock at
// BEGIN (BEGIN IMMEDIATE), so two writers never both read the chain head and
// then race to append after it.
const sqliteParams = "?_pragma=busy_timeout(15000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// OpenSQLite opens the SQLite file at path with sqliteParams: the state
// store's settings, which the contacts vault shares.
func OpenSQLite(path string) (*sql.DB, error) { return sql.Open("sqlite", path+sqliteParams) }

// Store is an open state store. It is safe for concurrent use.
type Store struct {
	db     *sql.DB
	engine string
	now    func() time.Time
	path   string // the SQLite file; "" on PostgreSQL
	// writeSem serialises this process's write transactions on SQLite. The
	// database lock already does, across processes; this only spares
	// goroutines of one process from polling for it under busy_timeout.
	writeSem chan struct{}
}

// Open opens the state store and applies its migrations. dsn is
// "sqlite:PATH" (PATH relative to baseDir unless absolute) or a postgres:// /
// postgresql:// URL. now is the clock (nil = time.Now); tests inject it.
//
// A malformed dsn is fault.Invalid; a database that cannot be opened or
// reached is fault.Unavailable.
func Open(ctx context.Context, dsn, baseDir string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{now: now, writeSem: make(chan struct{}, 1)}
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" || strings.ContainsRune(path, '?') {
			return nil, fault.New(fault.Invalid,
				"set `state:` in lifeline.yaml to sqlite:FILE, for example sqlite:lifeline-state.db",
				"state store %q: not a usable SQLite file path", dsn)
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		db, err := OpenSQLite(path)
		if err != nil {
			return nil, fault.Wrap(err, fault.Invalid, "", "state store %s", path)
		}
		s.db, s.engine, s.path = db, EngineSQLite, path
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fault.Wrap(err, fault.Unavailable,
				"check that the folder exists and is writable, and that `state:` in lifeline.yaml names the right file",
				"cannot open the state store %s", path)
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		shown := redact(dsn)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fault.Wrap(err, fault.Invalid,
				"check the `state:` URL in lifeline.yaml (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
				"state store %s is not a valid PostgreSQL URL", shown)
		}
		s.db, s.engine = db, EnginePostgres
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err != nil {
			db.Close()
			return nil, fault.Wrap(err, fault.Unavailable,
				"check that PostgreSQL is running and reachable, and the host, port, user, password and database in the `state:` URL of lifeline.yaml",
				"cannot reach the state store %s", shown)
		}
	default:
		return nil, fault.New(fault.Invalid,
			"set `state:` in lifeline.yaml to sqlite:FILE (the default is sqlite:lifeline-state.db) or to a postgres:// URL",
			"state store %q is neither a sqlite: path nor a postgres:// URL", dsn)
	}
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.migrate(ctx, "state", sub); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// redact hides the password of a URL so it can appear in messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable postgres URL)"
	}
	return u.Redacted()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Engine is "sqlite" or "postgres".
func (s *Store) Engine() string { return s.engine }

// DB is the underlying database, for packages that keep their own tables in
// the state store (see Migrate). Write portable queries through Rebind. On
// SQLite every non-read-only transaction takes the write lock at BEGIN, so
// pass sql.TxOptions{ReadOnly: true} for transactions that only read.
func (s *Store) DB() *sql.DB { return s.db }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Rebind turns ? placeholders into $1, $2… on PostgreSQL, so callers write
// one query for both engines. Question marks inside quoted strings, quoted
// identifiers and comments are left alone.
func (s *Store) Rebind(query string) string {
	if s.engine != EnginePostgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(query) && query[j] != c {
				j++
			}
			if j >= len(query) {
				j = len(query) - 1
			}
			b.WriteString(query[i : j+1])
			i = j
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			j := strings.IndexByte(query[i:], '\n')
			if j < 0 {
				j = len(query) - i - 1
			}
			b.WriteString(query[i : i+j+1])
			i += j
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			j := strings.Index(query[i+2:], "*/")
			end := len(query)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			b.WriteString(query[i:end])
			i = end - 1
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// forUpdate locks the selected rows until the transaction ends on
// PostgreSQL. SQLite needs nothing: its write transaction already holds the
// database's only write lock.
func (s *Store) forUpdate() string {
	if s.engine == EnginePostgres {
		return " FOR UPDATE"
	}
	return ""
}

// write runs fn in a write transaction, committing if fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.engine == EngineSQLite {
		select {
		case s.writeSem <- struct{}{}:
			defer func() { <-s.writeSem }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("state: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("state: commit: %w", err)
	}
	return nil
}

// read runs fn in a read-only transaction, so multi-query reads (an
// operation and its steps) see one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.engine == EnginePostgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("state: begin: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Micros stores a time as microseconds since the epoch; the zero time is 0.
// It is how every Lifeline table keeps a time (the packages with tables in
// the state store, and the contacts vault), so one encoding reads them all.
func Micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// FromMicros is the inverse of Micros, in UTC.
func FromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// stamp is now at the precision the store keeps.
func (s *Store) stamp() time.Time { return FromMicros(s.now().UnixMicro()) }

type actorKey struct{}

// WithActor names who is acting for the store methods that take no actor
// argument (token and schema changes), so their audit entries say who did
// it. Without it they are recorded as "lifeline".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// actorOf returns the actor set by WithActor, or "lifeline".
func actorOf(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "lifeline"
}

// isNoRows reports whether err means a query matched nothing.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
