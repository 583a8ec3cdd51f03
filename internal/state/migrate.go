package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"sort"

	"github.com/pressly/goose/v3"

	"lifeline/internal/fault"
)

var migrationName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// Migrate applies another package's own embedded goose migrations to the
// state store, tracked in their own version table lifeline_migrations_<name>
// so packages evolve their tables independently.
//
// SQL files at the root of fsys run on both engines; files in a "sqlite" or
// "postgres" subfolder run only on that engine (use that for what cannot be
// written portably, and give each engine's file the same version number).
// Concurrent Migrate calls from several processes are serialised.
//
// A bad name is fault.Invalid ("state" is taken by this package).
func (s *Store) Migrate(ctx context.Context, name string, fsys fs.FS) error {
	if !migrationName.MatchString(name) || name == "state" {
		return fault.New(fault.Invalid,
			"use a short lowercase name such as the package name (letters, digits, _); \"state\" is reserved",
			"invalid migration set name %q", name)
	}
	return s.migrate(ctx, name, fsys)
}

func (s *Store) migrate(ctx context.Context, name string, fsys fs.FS) error {
	table := "lifeline_migrations_" + name
	opts := []goose.ProviderOption{
		goose.WithTableName(table),
		goose.WithDisableGlobalRegistry(true),
	}
	dialect := goose.DialectSQLite3
	if s.engine == EnginePostgres {
		dialect = goose.DialectPostgres
		opts = append(opts, goose.WithSessionLocker(pgMigrationLocker{key: lockKey(table)}))
	} else {
		opts = append(opts, goose.WithLocker(&fileLocker{path: s.path + ".migrate-lock"}))
	}
	p, err := goose.NewProvider(dialect, s.db, engineFS{fsys: fsys, engine: s.engine}, opts...)
	if err != nil {
		return fmt.Errorf("state: migrations %q: %w", name, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("state: applying migrations %q: %w", name, err)
	}
	return nil
}

// lockKey maps a name to a PostgreSQL advisory lock key.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("lifeline:" + name))
	return int64(h.Sum64())
}

// pgMigrationLocker holds a session advisory lock while goose migrates, so
// two processes starting together do not both apply the same migration. It
// blocks (honouring ctx) instead of polling.
type pgMigrationLocker struct{ key int64 }

func (l pgMigrationLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", l.key)
	return err
}

func (l pgMigrationLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", l.key)
	return err
}

// engineFS presents the root of fsys merged with its subfolder for one
// engine, as goose expects all migrations in one folder. A file in the
// engine folder shadows a root file of the same name.
type engineFS struct {
	fsys   fs.FS
	engine string
}

func (e engineFS) Open(name string) (fs.File, error) {
	if name != "." && path.Dir(name) == "." {
		if f, err := e.fsys.Open(path.Join(e.engine, name)); err == nil {
			return f, nil
		}
	}
	return e.fsys.Open(name)
}

func (e engineFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		return fs.ReadDir(e.fsys, name)
	}
	root, err := fs.ReadDir(e.fsys, ".")
	if err != nil {
		return nil, err
	}
	own, err := fs.ReadDir(e.fsys, e.engine)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	byName := map[string]fs.DirEntry{}
	for _, d := range root {
		if !d.IsDir() {
			byName[d.Name()] = d
		}
	}
	for _, d := range own {
		if !d.IsDir() {
			byName[d.Name()] = d
		}
	}
	out := make([]fs.DirEntry, 0, len(byName))
	for _, d := range byName {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}
