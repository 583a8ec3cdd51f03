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

// Drift lists what changed in a product's protected schema since protect;
// empty means none. Tables that neither carry the tenant column nor refer to
// a table that does (another tool's bookkeeping, say Litestream's) are not
// Lifeline's concern and do not count.
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
	oldRel, liveRel := relevant(&old, p.Layout), relevant(live, p.Layout)
	if productdb.Fingerprint(oldRel) == productdb.Fingerprint(liveRel) {
		return nil, nil
	}
	d := productdb.Diff(oldRel, liveRel)
	if len(d) == 0 {
		d = []string{"the schema fingerprint changed"}
	}
	return d, nil
}

// relevant keeps the tables protection depends on: the tenants table, every
// table with the tenant column, and every table with a foreign key into one
// of those. Without a layout it keeps everything.
func relevant(s *productdb.Schema, l *productdb.Layout) *productdb.Schema {
	if l == nil {
		return s
	}
	owned := map[string]bool{l.TenantsTable: true}
	for _, t := range s.Tables {
		if t.Column(l.TenantColumn) != nil {
			owned[t.Name] = true
		}
	}
	out := &productdb.Schema{}
	for _, t := range s.Tables {
		keep := owned[t.Name]
		for _, fk := range t.ForeignKeys {
			keep = keep || owned[fk.RefTable]
		}
		if keep {
			out.Tables = append(out.Tables, t)
		}
	}
	return out
}
