package plan

import (
	"context"
	"fmt"
	"math"

	"lifeline/internal/fault"
	"lifeline/internal/plan/waves"
	"lifeline/internal/productdb"
)

// assignWaves puts each target in its wave, in the order given: internal
// tenants in the internal wave (if there is one), the others by cumulative
// share. A share rounds up, so the first customer wave has at least one
// target. Waves left empty by rounding keep their place, with size 0.
func assignWaves(list []string, targets []TargetReport) ([]WaveReport, error) {
	parsed, err := waves.Parse(list)
	if err != nil {
		return nil, err
	}
	out := make([]WaveReport, len(parsed))
	for i, w := range parsed {
		out[i] = WaveReport{Index: i, Name: w.Name}
	}
	hasInternal := parsed[0].Internal
	var rest []int
	for i := range targets {
		if hasInternal && targets[i].Internal {
			targets[i].Wave = 0
			out[0].Size++
			continue
		}
		rest = append(rest, i)
	}
	n, done := len(rest), 0
	for wi, w := range parsed {
		if w.Internal {
			continue
		}
		upto := w.Count
		if w.Share > 0 {
			upto = int(math.Ceil(w.Share*float64(n) - 1e-9))
		}
		upto = min(upto, n)
		for ; done < upto; done++ {
			targets[rest[done]].Wave = wi
			out[wi].Size++
		}
	}
	return out, nil
}

// internalTenants are the company's own tenants, found by the configured
// queries, or by the tag column (default "internal") in a product's
// tenants table.
func (s *Service) internalTenants(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	queries := s.Config.Internal
	if len(queries) == 0 {
		for _, p := range s.Tenants.Products {
			q, err := tagQuery(ctx, p.DB, p.Layout, s.Config.withDefaults().InternalColumn)
			if err != nil {
				return nil, err
			}
			if q != "" {
				queries = append(queries, InternalQuery{Product: p.Name, Query: q})
			}
		}
	}
	for _, iq := range queries {
		var db *productdb.DB
		for _, p := range s.Tenants.Products {
			if p.Name == iq.Product {
				db = p.DB
			}
		}
		if db == nil {
			return nil, fault.New(fault.Invalid, "name a configured product in the internal-tenant query", "internal tenants: no product named %q", iq.Product)
		}
		rows, err := db.SQL().QueryContext(ctx, iq.Query)
		if err != nil {
			return nil, fault.Wrap(err, fault.Invalid, "fix the internal-tenant query: it returns one tenant key per row",
				"internal tenants of %s: the query failed", iq.Product)
		}
		for rows.Next() {
			var key any
			if err := rows.Scan(&key); err != nil {
				rows.Close()
				return nil, err
			}
			out[keyText(key)] = true
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// keyText renders a scanned tenant key as the text form keys have
// everywhere else.
func keyText(v any) string {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// tagQuery is the query for the tenants whose root row has the tag column
// set (not 0), or "" if the product's tenants table has no such column.
func tagQuery(ctx context.Context, db *productdb.DB, l *productdb.Layout, column string) (string, error) {
	schema, err := db.Inspect(ctx)
	if err != nil {
		return "", err
	}
	for _, t := range schema.Tables {
		if t.Name != l.TenantsTable {
			continue
		}
		for _, c := range t.Columns {
			if c.Name == column {
				return fmt.Sprintf(`SELECT "%s" FROM "%s" WHERE CAST("%s" AS INTEGER) <> 0`, l.KeyColumn, l.TenantsTable, column), nil
			}
		}
	}
	return "", nil
}
