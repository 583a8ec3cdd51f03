package tenant

import (
	"context"
	"encoding/json"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// Protect inspects a product database, refuses what it cannot protect,
// installs the guards, trash and tenant-state table, and records the schema
// it protected so that drift can be detected later. It is idempotent.
func Protect(ctx context.Context, store *state.Store, db *productdb.DB, spec productdb.Spec, actor string) (*productdb.Layout, error) {
	schema, err := db.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	layout, err := productdb.Resolve(spec, schema)
	if err != nil {
		return nil, err
	}
	if err := db.Protect(ctx, layout); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		return nil, err
	}
	fp := productdb.Fingerprint(schema)
	if err := store.SaveSchema(ctx, state.SchemaRecord{Product: spec.Product, Fingerprint: fp, Schema: raw, Protected: store.Now()}); err != nil {
		return nil, err
	}
	_, err = store.AppendAudit(ctx, state.AuditEntry{Actor: actor, Action: "protect",
		Detail: map[string]any{"product": spec.Product, "fingerprint": fp, "tables": layout.Tables}})
	return layout, err
}

// Layout rebuilds a product's layout from the schema recorded at protect
// time, so that lifecycle steps act on what was protected, not on whatever
// the live schema has drifted to.
func Layout(ctx context.Context, store *state.Store, spec productdb.Spec) (*productdb.Layout, error) {
	rec, err := store.LoadSchema(ctx, spec.Product)
	if err != nil {
		return nil, err
	}
	var schema productdb.Schema
	if err := json.Unmarshal(rec.Schema, &schema); err != nil {
		return nil, fault.Wrap(err, fault.Internal, "run `lifeline protect` again", "the recorded schema of %s is unreadable", spec.Product)
	}
	return productdb.Resolve(spec, &schema)
}

// Drift lists what changed in a product's schema since protect; empty means
// none.
func Drift(ctx context.Context, store *state.Store, p *Product) ([]string, error) {
	rec, err := store.LoadSchema(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	live, err := p.DB.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	if productdb.Fingerprint(live) == rec.Fingerprint {
		return nil, nil
	}
	var old productdb.Schema
	if err := json.Unmarshal(rec.Schema, &old); err != nil {
		return nil, fault.Wrap(err, fault.Internal, "run `lifeline protect` again", "the recorded schema of %s is unreadable", p.Name)
	}
	d := productdb.Diff(&old, live)
	if len(d) == 0 {
		d = []string{"the schema fingerprint changed"}
	}
	return d, nil
}
