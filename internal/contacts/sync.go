package contacts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// Source is one contacts query (a `contacts:` entry of lifeline.yaml)
// against one product database.
type Source struct {
	// Name identifies the source in links and history, e.g. "sync:tracker".
	// A sync removes only links of its own source.
	Name    string
	Product string
	DB      *sql.DB
	Query   string
}

// SyncColumns are the columns a contacts query may return. tenant, email
// and role are required.
var SyncColumns = []string{"tenant", "email", "name", "role", "phone", "language", "account", "account_name"}

// SyncOptions control one sync.
type SyncOptions struct {
	Actor string
	// Confirm lets a sync remove more than vault.max_removal of a
	// source's links (or all of them).
	Confirm bool
	// DryRun computes everything and changes nothing.
	DryRun bool
}

// Sync runs each source's query and applies its rows as the source's whole
// truth, one transaction per source:
//
//   - it is idempotent: a second run with the same rows changes nothing;
//   - a link the query no longer returns is marked removed, unless its
//     tenant is not active in the product (deactivated, deleted, purged, or
//     gone): deleting a tenant never removes who to call about it;
//   - removing more than MaxRemoval of the source's links, or all of them
//     because the query returned nothing, is refused (fault.Refused) unless
//     o.Confirm, and the vault is left as it was.
//
// A failing source does not stop the others; the error joins every
// source's error. Rows that cannot be used (a malformed email, an unknown
// role) are skipped and reported in Changes.Rejected.
func (s *Service) Sync(ctx context.Context, sources []Source, o SyncOptions) ([]*Changes, error) {
	if s.cfg.Directory == nil {
		return nil, errors.New("contacts: Sync needs a Directory to tell deleted tenants from removed contacts")
	}
	if len(sources) == 0 {
		return nil, fault.New(fault.Invalid, "add a contacts: entry to lifeline.yaml, e.g.\n  contacts:\n    - product: tracker\n      query: SELECT site_id AS tenant, email, name, role FROM site_admins",
			"no contacts queries are configured")
	}
	if err := s.guardFresh(ctx, !o.DryRun); err != nil {
		return nil, err
	}
	// A restored vault may still hold someone erased since its export.
	if !o.DryRun {
		if _, err := s.ReapplyErasures(ctx); err != nil {
			return nil, err
		}
	}
	summaries, err := s.cfg.Directory.List(ctx)
	if err != nil {
		return nil, err
	}
	infos := make(map[string]tenantInfo, len(summaries))
	for _, sum := range summaries {
		st := make(map[string]string, len(sum.States))
		for p, v := range sum.States {
			st[p] = string(v)
		}
		infos[sum.Key] = tenantInfo{name: sum.Name, states: st}
	}
	var out []*Changes
	var errs []error
	for _, src := range sources {
		ch, err := s.syncOne(ctx, src, o, infos)
		if ch != nil {
			out = append(out, ch)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src.Name, err))
			continue
		}
		s.log.Info("contacts synced", "source", src.Name, "records", ch.Records, "added", ch.ContactsAdded,
			"links_added", ch.LinksAdded, "links_removed", ch.LinksRemoved, "held", ch.LinksHeld, "rejected", len(ch.Rejected), "dry_run", o.DryRun)
	}
	return out, errors.Join(errs...)
}

func (s *Service) syncOne(ctx context.Context, src Source, o SyncOptions, infos map[string]tenantInfo) (*Changes, error) {
	records, err := readQuery(ctx, src)
	if err != nil {
		return nil, err
	}
	keep := func(tenant string) bool {
		info, known := infos[tenant]
		st, inProduct := info.states[src.Product]
		return !known || !inProduct || st != string(productdb.Active)
	}
	return s.apply(ctx, &batch{source: src.Name, actor: o.Actor, records: records, complete: true, keep: keep,
		tenants: infos, confirm: o.Confirm, dryRun: o.DryRun})
}

// readQuery runs a source's query and turns its rows into Records.
func readQuery(ctx context.Context, src Source) ([]Record, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	rows, err := src.DB.QueryContext(qctx, src.Query)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check the contacts query for product "+src.Product+" in lifeline.yaml",
			"the contacts query of %s failed; the vault was not changed", src.Name)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	idx := map[string]int{}
	for i, c := range cols {
		c = strings.ToLower(c)
		if !slices.Contains(SyncColumns, c) {
			return nil, fault.New(fault.Invalid, "name the columns with AS: "+strings.Join(SyncColumns, ", "),
				"the contacts query of %s returns a column %q that the vault does not know", src.Name, cols[i])
		}
		idx[c] = i
	}
	for _, need := range []string{"tenant", "email", "role"} {
		if _, ok := idx[need]; !ok {
			return nil, fault.New(fault.Invalid, "return tenant, email, name and role, e.g. SELECT site_id AS tenant, email, name, role FROM site_admins",
				"the contacts query of %s returns no %s column", src.Name, need)
		}
	}
	var out []Record
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	get := func(name string) string {
		if i, ok := idx[name]; ok {
			return text(vals[i])
		}
		return ""
	}
	for n := 1; rows.Next(); n++ {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fault.Wrap(err, fault.Unavailable, "", "reading the contacts of %s", src.Name)
		}
		r := Record{Line: n, Tenant: get("tenant"), Email: get("email"), Name: get("name"), Phone: get("phone"),
			Language: get("language"), Account: get("account"), AccountName: get("account_name")}
		r.Role = Role(strings.ToLower(strings.TrimSpace(get("role"))))
		if r.Role == "" {
			r.Role = missingRole // rejected by validate, with its line
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "", "reading the contacts of %s; the vault was not changed", src.Name)
	}
	return out, nil
}

// text renders a database value as the vault stores it.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}
