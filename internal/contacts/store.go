package contacts

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// Engines a Store runs on.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// Schema is the PostgreSQL schema that holds the vault's tables, so that the
// vault stays apart even in a database shared with the state store.
const Schema = "lifeline_contacts"

// The portable tables are goose SQL migrations; the append-only triggers
// cannot be written portably, so migration 2 is a Go migration that runs
// the file of the engine.
var (
	//go:embed migrations
	migrationFiles embed.FS
	//go:embed sql/append_only_sqlite.sql
	appendOnlySQLite string
	//go:embed sql/append_only_postgres.sql
	appendOnlyPostgres string
)

// writeLockKey is the PostgreSQL advisory lock every vault write holds: the
// vault is small and written rarely, and one writer at a time makes history
// sequence numbers and the revision simple and gap-free.
var writeLockKey = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("lifeline:contacts-vault"))
	return int64(h.Sum64())
}()

// Store is the vault's own database. Every query is written once, with $N
// placeholders, which both PostgreSQL and the SQLite driver understand. It is
// safe for concurrent use, also by several processes.
type Store struct {
	db     *sql.DB
	engine string
	where  string // the file or redacted URL, for messages
}

// OpenStore opens the vault named by dsn and applies its migrations: dsn is
// "sqlite:PATH" (relative to baseDir unless absolute; the file is created if
// missing, which is how a lost vault is recreated before a restore) or a
// postgres:// URL (the vault's tables live in schema lifeline_contacts).
//
// A malformed dsn is fault.Invalid; a database that cannot be opened or
// reached is fault.Unavailable.
func OpenStore(ctx context.Context, dsn, baseDir string) (*Store, error) {
	s := &Store{}
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" || strings.ContainsRune(path, '?') {
			return nil, fault.New(fault.Invalid, "set vault: to sqlite:FILE, for example sqlite:contacts.db", "contacts vault %q: not a usable SQLite file path", dsn)
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		// Wait for locks instead of failing, WAL so readers never block the
		// writer, and write transactions that take the write lock at BEGIN
		// so two writers never interleave their reads and writes.
		db, err := state.OpenSQLite(path)
		if err != nil {
			return nil, fault.Wrap(err, fault.Invalid, "", "contacts vault %s", path)
		}
		s.db, s.engine, s.where = db, EngineSQLite, path
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fault.New(fault.Invalid, "check vault: in lifeline.yaml (postgres://USER:PASSWORD@HOST:PORT/DATABASE)", "contacts vault %s is not a valid PostgreSQL URL", redact(dsn))
		}
		cfg.RuntimeParams["search_path"] = Schema
		s.db, s.engine, s.where = stdlib.OpenDB(*cfg), EnginePostgres, redact(dsn)
	default:
		return nil, fault.New(fault.Invalid, "set vault: in lifeline.yaml to sqlite:FILE (default sqlite:contacts.db) or a postgres:// URL",
			"contacts vault %q is neither a sqlite: path nor a postgres:// URL", redact(dsn))
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := s.db.PingContext(pctx)
	cancel()
	if err != nil {
		s.db.Close()
		return nil, fault.Wrap(err, fault.Unavailable, "check vault: in lifeline.yaml, and that its folder or server is reachable and writable", "cannot open the contacts vault %s", s.where)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// redact hides the password of a URL for messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func (s *Store) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	appendOnly := appendOnlySQLite
	if s.engine == EnginePostgres {
		appendOnly = appendOnlyPostgres
	}
	opts := []goose.ProviderOption{
		goose.WithTableName("contacts_migrations"),
		goose.WithDisableGlobalRegistry(true),
		goose.WithGoMigrations(goose.NewGoMigration(2, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, appendOnly)
			return err
		}}, nil)),
	}
	dialect := goose.DialectSQLite3
	if s.engine == EnginePostgres {
		dialect = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(writeLockKey))
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	var last error
	// Two processes opening a new vault at once may race on SQLite; every
	// migration is one transaction there, so the loser just tries again and
	// finds the work done.
	for range 3 {
		if s.engine == EnginePostgres {
			if _, err := s.db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+Schema); err != nil {
				last = err
				continue
			}
		}
		p, err := goose.NewProvider(dialect, s.db, sub, opts...)
		if err != nil {
			return fmt.Errorf("contacts: migrations: %w", err)
		}
		if _, last = p.Up(ctx); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fault.Wrap(last, fault.Unavailable, "check that this user may create tables in the vault database", "cannot prepare the contacts vault %s", s.where)
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Engine is "sqlite" or "postgres".
func (s *Store) Engine() string { return s.engine }

// String names the vault for messages: its file, or its URL without password.
func (s *Store) String() string { return s.where }

// tx is one vault transaction with the helpers every write needs.
type tx struct {
	*sql.Tx
	ctx     context.Context
	now     time.Time
	nextSeq int64 // 0: not read yet
	changed bool  // something was written; the revision moves at commit
}

// write runs fn in a write transaction holding the vault's write lock, and
// moves the revision if fn changed anything. With dryRun it always rolls
// back, so a dry run goes through exactly the code of the real thing.
func (s *Store) write(ctx context.Context, now time.Time, dryRun bool, fn func(t *tx) error) (rev int64, err error) {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.unavailable(err)
	}
	defer func() { _ = sqlTx.Rollback() }()
	t := &tx{Tx: sqlTx, ctx: ctx, now: now}
	if s.engine == EnginePostgres {
		if _, err := t.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", writeLockKey); err != nil {
			return 0, s.unavailable(err)
		}
	}
	if err := fn(t); err != nil {
		return 0, err
	}
	rev, err = t.revision()
	if err != nil {
		return 0, err
	}
	if t.changed {
		rev++
		if err := t.setMeta("revision", strconv.FormatInt(rev, 10)); err != nil {
			return 0, err
		}
	}
	if dryRun {
		return rev, nil
	}
	if err := sqlTx.Commit(); err != nil {
		return 0, s.unavailable(err)
	}
	return rev, nil
}

// read runs fn in a read-only transaction, so multi-query reads see one
// consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(t *tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.engine == EnginePostgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	sqlTx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return s.unavailable(err)
	}
	defer func() { _ = sqlTx.Rollback() }()
	return fn(&tx{Tx: sqlTx, ctx: ctx})
}

// unavailable marks a database failure as fault.Unavailable, naming the vault.
func (s *Store) unavailable(err error) error {
	if err == nil || fault.CodeOf(err) != fault.Internal || errors.Is(err, context.Canceled) {
		return err
	}
	return fault.Wrap(err, fault.Unavailable, "check the contacts vault (vault: in lifeline.yaml)", "contacts vault %s", s.where)
}

// exec runs one statement.
func (t *tx) exec(q string, args ...any) error {
	_, err := t.ExecContext(t.ctx, q, args...)
	if err != nil {
		return fmt.Errorf("contacts: %s: %w", firstWords(q), err)
	}
	return nil
}

func firstWords(q string) string {
	f := strings.Fields(q)
	return strings.Join(f[:min(3, len(f))], " ")
}

// meta reads a vault_meta value; "" when unset.
func (t *tx) meta(name string) (string, error) {
	var v string
	err := t.QueryRowContext(t.ctx, "SELECT value FROM vault_meta WHERE name = $1", name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("contacts: meta %s: %w", name, err)
	}
	return v, nil
}

func (t *tx) setMeta(name, value string) error {
	return t.exec("INSERT INTO vault_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value", name, value)
}

// revision is the number of committed changing transactions: it tells the
// exporter whether there is anything new to back up.
func (t *tx) revision() (int64, error) {
	v, err := t.meta("revision")
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// record appends one history entry and marks the transaction as changing.
func (t *tx) record(c Change) error {
	if t.nextSeq == 0 {
		if err := t.QueryRowContext(t.ctx, "SELECT COALESCE(MAX(seq), 0) + 1 FROM history").Scan(&t.nextSeq); err != nil {
			return fmt.Errorf("contacts: history head: %w", err)
		}
	}
	detail := "{}"
	if len(c.Detail) > 0 {
		b, err := json.Marshal(c.Detail)
		if err != nil {
			return err
		}
		detail = string(b)
	}
	err := t.exec(`INSERT INTO history (seq, at, actor, source, action, contact_id, account_id, tenant, version, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		t.nextSeq, micros(t.now), c.Actor, c.Source, c.Action, c.ContactID, c.AccountID, c.Tenant, c.Version, detail)
	if err != nil {
		return err
	}
	t.nextSeq++
	t.changed = true
	return nil
}

// micros and fromMicros are the state store's time encoding, which this
// package's tables share (state.Micros).
var micros, fromMicros = state.Micros, state.FromMicros

// newID makes a random identifier with a readable prefix.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
