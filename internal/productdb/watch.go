package productdb

import (
	"context"
	"database/sql"
)

// Watch tells a writer pacing itself on SQLite whether anyone else has
// committed to the database since it last looked. SQLite's busy handler
// gives no sign of a writer waiting for the lock, but its commit shows:
// PRAGMA data_version, asked on a connection of the Watch's own, changes
// whenever another connection commits (the writer's own transactions
// included, as they run on other connections of the pool).
type Watch struct {
	conn *sql.Conn
	last int64
}

// Watch opens a Watch on a SQLite database; on PostgreSQL, whose writers
// do not queue for one lock, it returns nil.
func (db *DB) Watch(ctx context.Context) (*Watch, error) {
	if db.d.engine() != SQLite {
		return nil, nil
	}
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return nil, db.unavailable(err)
	}
	w := &Watch{conn: conn}
	if _, err := w.Changed(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return w, nil
}

// Changed reports whether a commit happened since the last call (or since
// the Watch was opened).
func (w *Watch) Changed(ctx context.Context) (bool, error) {
	var v int64
	if err := w.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return false, err
	}
	changed := v != w.last
	w.last = v
	return changed, nil
}

// Close gives the Watch's connection back.
func (w *Watch) Close() error { return w.conn.Close() }
