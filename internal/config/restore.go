package config

import "time"

// Restore paces in-place restores into SQLite products, which have one
// write lock: the restore's write transactions hold it about Transaction,
// and leave it free for Pause after each, when the application's writers
// take it. Zero (unset) leaves the restore's own defaults
// (restore.Service; docs/restore.md, Batches).
type Restore struct {
	SQLiteTransaction Duration `yaml:"sqlite_transaction"`
	SQLitePause       Duration `yaml:"sqlite_pause"`
}

// Restore bounds. A transaction is kept well under the busy timeout
// applications usually give SQLite (5s), or their writes would fail during
// a restore; a pause beyond a few seconds only slows the restore down.
const (
	maxSQLiteTransaction = time.Second
	maxSQLitePause       = 5 * time.Second
)

func (r *Restore) validate() error {
	for _, k := range []struct {
		key      string
		v, limit time.Duration
		fix      string
	}{
		{"restore.sqlite_transaction", r.SQLiteTransaction.D(), maxSQLiteTransaction,
			"give a duration up to 1s, such as 4ms: the application's writers wait for SQLite's write lock that long"},
		{"restore.sqlite_pause", r.SQLitePause.D(), maxSQLitePause,
			"give a duration up to 5s, such as 8ms: the application's writers get the write lock meanwhile"},
	} {
		if k.v > k.limit { // ParseDuration refuses negative ones
			return bad(k.key, k.v.String(), k.fix)
		}
	}
	return nil
}
