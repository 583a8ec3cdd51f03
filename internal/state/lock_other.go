//go:build !unix

package state

import (
	"context"
	"database/sql"
)

// fileLocker does nothing where flock is unavailable: concurrent first
// starts of several processes on one SQLite file are then not serialised.
type fileLocker struct{ path string }

func (l *fileLocker) Lock(context.Context, *sql.DB) error   { return nil }
func (l *fileLocker) Unlock(context.Context, *sql.DB) error { return nil }
