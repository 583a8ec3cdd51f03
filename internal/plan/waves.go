package plan

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// wave is one parsed wave: the internal tenants, or the other targets up
// to a cumulative share or count.
type wave struct {
	name     string
	internal bool
	share    float64 // 0..1, cumulative; or
	count    int     // cumulative, when share is 0
}

const wavesHint = "write waves like internal,1%,10%,100%: \"internal\" first if at all, then growing shares or counts of the other targets, ending at 100%"

// parseWaves reads a wave list. It refuses "internal" anywhere but first,
// shares or counts that do not grow, and a last wave short of 100%, which
// would leave targets out.
func parseWaves(list []string) ([]wave, error) {
	var out []wave
	prevShare, prevCount := 0.0, 0
	for i, raw := range list {
		w := wave{name: strings.TrimSpace(raw)}
		switch {
		case w.name == "internal":
			if i != 0 {
				return nil, fault.New(fault.Invalid, wavesHint, "wave %q: the internal wave can only come first", raw)
			}
			w.internal = true
		case strings.HasSuffix(w.name, "%"):
			v, err := strconv.ParseFloat(strings.TrimSuffix(w.name, "%"), 64)
			if err != nil || v <= 0 || v > 100 {
				return nil, fault.New(fault.Invalid, wavesHint, "wave %q is not a share between 0%% and 100%%", raw)
			}
			w.share = v / 100
			if w.share <= prevShare {
				return nil, fault.New(fault.Invalid, wavesHint, "wave %q does not grow: shares are cumulative", raw)
			}
			prevShare = w.share
		default:
			n, err := strconv.Atoi(w.name)
			if err != nil || n <= 0 {
				return nil, fault.New(fault.Invalid, wavesHint, "wave %q is neither internal, a share (10%%) nor a count (5)", raw)
			}
			if n <= prevCount || prevShare > 0 {
				return nil, fault.New(fault.Invalid, wavesHint, "wave %q does not grow: counts are cumulative and come before shares", raw)
			}
			w.count, prevCount = n, n
		}
		out = append(out, w)
	}
	if len(out) == 0 || out[len(out)-1].share != 1 {
		return nil, fault.New(fault.Invalid, wavesHint, "the last wave must be 100%%, or some targets would never run (waves: %s)", strings.Join(list, ","))
	}
	return out, nil
}

// assignWaves puts each target in its wave, in the order given: internal
// tenants in the internal wave (if there is one), the others by cumulative
// share. A share rounds up, so the first customer wave has at least one
// target. Waves left empty by rounding keep their place, with size 0.
func assignWaves(list []string, targets []TargetReport) ([]WaveReport, error) {
	waves, err := parseWaves(list)
	if err != nil {
		return nil, err
	}
	out := make([]WaveReport, len(waves))
	for i, w := range waves {
		out[i] = WaveReport{Index: i, Name: w.name}
	}
	hasInternal := waves[0].internal
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
	for wi, w := range waves {
		if w.internal {
			continue
		}
		upto := w.count
		if w.share > 0 {
			upto = int(math.Ceil(w.share*float64(n) - 1e-9))
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
// queries, or by an "internal" column in a product's tenants table.
func (s *Service) internalTenants(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	queries := s.Config.Internal
	if len(queries) == 0 {
		for _, p := range s.Tenants.Products {
			q, err := defaultInternal(ctx, p.DB, p.Layout)
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

// defaultInternal is the query for a tenants table with an "internal"
// column, or "" if it has none.
func defaultInternal(ctx context.Context, db *productdb.DB, l *productdb.Layout) (string, error) {
	schema, err := db.Inspect(ctx)
	if err != nil {
		return "", err
	}
	for _, t := range schema.Tables {
		if t.Name != l.TenantsTable {
			continue
		}
		for _, c := range t.Columns {
			if c.Name == "internal" {
				return fmt.Sprintf(`SELECT "%s" FROM "%s" WHERE CAST("internal" AS INTEGER) <> 0`, l.KeyColumn, l.TenantsTable), nil
			}
		}
	}
	return "", nil
}
