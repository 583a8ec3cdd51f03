// Package capturetest sets up, for tests of the packages above capture, a
// protected SQLite product and its capture source.
package capturetest

import (
	"context"
	"testing"

	"lifeline/internal/capture"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// SQLite opens the product database dsn (an existing sqlite: file in dir)
// and a state store in dir (state.db), protects the product as spec says,
// and opens its capture source. All are closed when t ends.
func SQLite(t testing.TB, dir, dsn string, spec productdb.Spec) (*productdb.DB, *state.Store, capture.Source) {
	t.Helper()
	ctx := context.Background()
	db, err := productdb.Open(ctx, dsn, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := state.Open(ctx, "sqlite:state.db", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	layout, err := tenant.Protect(ctx, store, db, spec, "tester")
	if err != nil {
		t.Fatal(err)
	}
	src, err := capture.Open(ctx, db, layout, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return db, store, src
}
