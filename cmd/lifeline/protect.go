package main

import (
	"fmt"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/tenant"
)

// protectCmd installs Lifeline's guards, trash and tenant-state table in
// every product, or with --check reports drift since the last protect.
func protectCmd(e *env, args []string) error {
	fs := flags(e, "protect")
	check := fs.Bool("check", false, "report schema drift since protect; exit 2 if there is any")
	asJSON := jsonFlag(fs)
	who := fs.String("actor", "", "who is running this (default $LIFELINE_ACTOR or user@host)")
	a, _, err := start(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	type result struct {
		Product string   `json:"product"`
		Engine  string   `json:"engine"`
		Tables  []string `json:"tables,omitempty"`
		Drift   []string `json:"drift,omitempty"`
	}
	var results []result
	drifted := 0
	for _, p := range a.cfg.Products {
		db, err := productdb.Open(e.ctx, p.Database, a.cfg.Dir)
		if err != nil {
			return err
		}
		a.dbs = append(a.dbs, db)
		r := result{Product: p.Name, Engine: db.Engine()}
		if *check {
			layout, err := tenant.Layout(e.ctx, a.store, spec(p))
			if err != nil {
				return err
			}
			r.Drift, err = tenant.Drift(e.ctx, a.store, &tenant.Product{Name: p.Name, DB: db, Layout: layout})
			if err != nil {
				return err
			}
			if len(r.Drift) > 0 {
				drifted++
			}
		} else {
			l, err := tenant.Protect(e.ctx, a.store, db, spec(p), actor(e, *who))
			if err != nil {
				return fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "protect %s", p.Name)
			}
			r.Tables = l.Tables
		}
		results = append(results, r)
	}
	if *asJSON {
		if err := printJSON(e.stdout, map[string]any{"products": results}); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			switch {
			case *check && len(r.Drift) == 0:
				fmt.Fprintf(e.stdout, "%s (%s): no drift since protect\n", r.Product, r.Engine)
			case *check:
				fmt.Fprintf(e.stdout, "%s (%s): DRIFT since protect:\n  - %s\n", r.Product, r.Engine, strings.Join(r.Drift, "\n  - "))
			default:
				fmt.Fprintf(e.stdout, "%s (%s): protected %d tables: %s\n", r.Product, r.Engine, len(r.Tables), strings.Join(r.Tables, ", "))
			}
		}
	}
	if drifted > 0 {
		return fault.New(fault.Refused, "review the changes, then run `lifeline protect` to protect the new schema", "%d product(s) drifted since protect", drifted)
	}
	return nil
}
