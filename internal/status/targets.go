package status

import (
	"context"
	"crypto/hmac"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// Targeted notices. An incident may name the tenants it affects: an
// explicit list, or the tenants of the restores and plans it is linked to.
// Every update then owes each of those tenants' authorised contacts a
// private notice with a signed, expiring link to the tenant's own status.
// This file holds the domain side: which tenants, the owed (update, tenant)
// rows written with the update, and the link. internal/notify finds the
// contacts (in the contacts vault, which keeps them after the tenant is
// deleted or purged) and delivers.

// Targets says which tenants a link affects and how far a restore is for
// one of them. LinkSource implements it from the restore engine's and the
// plan runner's records.
type Targets interface {
	// AffectedTenants returns the tenant keys one link ("restore:ID",
	// "plan:ID") affects. It returns an error with code fault.NotFound if
	// the link names nothing the source knows, and any other error if the
	// source cannot answer for it now.
	AffectedTenants(ctx context.Context, link string) ([]string, error)
	// TenantProgress returns, for one tenant, where each linked restore
	// stands in each product: one TenantStep per (link, product) that
	// involves the tenant, none if no link does. Errors as AffectedTenants.
	TenantProgress(ctx context.Context, links []string, tenant string) ([]TenantStep, error)
}

// TenantStep is one tenant in one product of one linked restore, as the
// tenant's private page shows it.
type TenantStep struct {
	Link    string `json:"link"`
	Product string `json:"product"`
	// State is one of the Step* constants.
	State    string    `json:"state"`
	Finished time.Time `json:"finished_at,omitzero"`
}

// Where a tenant's restore stands in one product.
const (
	StepWaiting     = "waiting"      // not restored yet
	StepRestored    = "restored"     // restored and verified row by row against the backup
	StepFailed      = "failed"       // tried and rolled back; the team is on it
	StepNotRestored = "not_restored" // left out (erased for good, or its backup unreadable)
	StepUndone      = "undone"       // the restore was taken back
)

// TenantStates tells the private page a tenant's lifecycle state per
// product. The contacts vault implements it (wired in cmd/lifeline): it
// still knows tenants that were deleted or purged in every product. AsOf is
// zero when the states were read live, else when they were recorded.
type TenantStates interface {
	TenantStates(ctx context.Context, tenant string) (states map[string]string, asOf time.Time, err error)
}

// TenantRegistry says which tenant keys exist. The contacts vault with the
// products' tenant registry implements it (wired in cmd/lifeline): the
// vault keeps tenants deleted or purged in every product.
type TenantRegistry interface {
	// UnknownTenants returns the keys, of keys, that name no tenant. An
	// error means it cannot tell now.
	UnknownTenants(ctx context.Context, keys []string) ([]string, error)
}

// DefaultTenantLinkTTL is how long the link in a targeted notice stays
// valid when Config.TenantLinkTTL is not set.
const DefaultTenantLinkTTL = 7 * 24 * time.Hour

// TargetFromList is the source recorded for tenants named explicitly.
const TargetFromList = "list"

// NormalizeTenants checks tenant keys given for targeting: plain keys, or
// site:KEY (targeted notices go to whole sites). Duplicates are dropped;
// the order is kept. A product: or app: target, a blank key, or any other
// with ':', '/' or a space, is fault.Invalid, and the error names every
// such key, so a pasted list is fixed in one go.
func NormalizeTenants(keys []string) ([]string, error) {
	var out, bad []string
	for _, raw := range keys {
		k := strings.TrimPrefix(strings.TrimSpace(raw), "site:")
		if k == "" || strings.ContainsAny(k, ":/ \t") {
			bad = append(bad, strconv.Quote(strings.TrimSpace(raw)))
			continue
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(bad) > 0 {
		return nil, fault.New(fault.Invalid, "give plain tenant keys (or site:KEY), separated by commas or new lines: notices go to a whole site's contacts",
			"not tenant keys: %s", strings.Join(bad, ", "))
	}
	return out, nil
}

// checkKnown refuses tenant keys the registry does not know, naming every
// one, unless allowed: a mistyped key would otherwise be a tenant whose
// people are never told, silently. A registry that cannot answer refuses
// too (fault.Unavailable), saying how to go ahead without it.
func (s *Service) checkKnown(ctx context.Context, keys []string, allow bool) error {
	if s.registry == nil || allow || len(keys) == 0 {
		return nil
	}
	const hint = "check the keys (`lifeline contacts for site:KEY`); to notify them anyway, as for a site gone from the products and the vault, pass --allow-unknown-tenants (allow_unknown_tenants in the API, the checkbox on the console)"
	unknown, err := s.registry.UnknownTenants(ctx, keys)
	if err != nil {
		return fault.Wrap(err, fault.Unavailable, hint, "cannot check the affected tenants")
	}
	if len(unknown) == 0 {
		return nil
	}
	quoted := make([]string, len(unknown))
	for i, k := range unknown {
		quoted[i] = strconv.Quote(k)
	}
	return fault.New(fault.Invalid, hint, "unknown tenants (neither the products nor the contacts vault know them): %s", strings.Join(quoted, ", "))
}

// targetsOf gathers the tenants an update adds to its incident: the
// draft's list, and the tenants of every link the source can answer for.
// A link it does not know refuses the update (as for progress); a link it
// cannot answer for now is skipped with a warning, and its tenants are
// added by a later update.
func (s *Service) targetsOf(ctx context.Context, inc *Incident, d Draft) (map[string]string, error) {
	list, err := NormalizeTenants(d.Tenants)
	if err != nil {
		return nil, err
	}
	if err := s.checkKnown(ctx, list, d.AllowUnknownTenants); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range list {
		out[k] = TargetFromList
	}
	if s.targets == nil {
		return out, nil
	}
	for _, l := range inc.Links {
		keys, err := s.targets.AffectedTenants(ctx, l)
		switch {
		case err == nil:
		case fault.CodeOf(err) == fault.NotFound:
			return nil, err
		default:
			s.log.Warn("status: the tenants of a link are unavailable; a later update adds them", "incident", inc.ID, "link", l, "err", err)
			continue
		}
		for _, k := range keys {
			if _, ok := out[k]; !ok {
				out[k] = l
			}
		}
	}
	return out, nil
}

// insertTargets records the incident's tenants (adding to those it has)
// and, in the same transaction as update u, one pending notice per tenant.
func (s sqlStore) insertTargets(ctx context.Context, tx *sql.Tx, u *Update, tenants map[string]string, now time.Time) error {
	keys := make([]string, 0, len(tenants))
	for k := range tenants {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	const chunk = 200
	for len(keys) > 0 {
		part := keys[:min(chunk, len(keys))]
		keys = keys[len(part):]
		q := "INSERT INTO status_incident_tenants (incident_id, tenant, source, added_at) VALUES " +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", len(part)), ", ") +
			" ON CONFLICT (incident_id, tenant) DO NOTHING"
		args := make([]any, 0, 4*len(part))
		for _, k := range part {
			args = append(args, u.IncidentID, k, tenants[k], micros(now))
		}
		if err := s.exec(ctx, tx, q, args...); err != nil {
			return storeErr(err)
		}
	}
	return storeErr(s.exec(ctx, tx, `INSERT INTO status_tenant_notices (update_id, tenant, incident_id, status, created_at)
		SELECT ?, t.tenant, t.incident_id, ?, ? FROM status_incident_tenants t WHERE t.incident_id = ?
		ON CONFLICT (update_id, tenant) DO NOTHING`, u.ID, NoticePending, micros(now), u.IncidentID))
}

// IncidentTenant is one tenant an incident affects.
type IncidentTenant struct {
	Tenant string    `json:"tenant"`
	Source string    `json:"source"` // TargetFromList, or the link it came from
	Added  time.Time `json:"added_at"`
}

// IncidentTenants lists the tenants an incident affects, by key.
func (s *Service) IncidentTenants(ctx context.Context, incidentID string) ([]IncidentTenant, error) {
	rows, err := s.db.st.DB().QueryContext(ctx, s.db.q("SELECT tenant, source, added_at FROM status_incident_tenants WHERE incident_id = ? ORDER BY tenant"), incidentID)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	out := []IncidentTenant{}
	for rows.Next() {
		var t IncidentTenant
		var at int64
		if err := rows.Scan(&t.Tenant, &t.Source, &at); err != nil {
			return nil, storeErr(err)
		}
		t.Added = fromMicros(at)
		out = append(out, t)
	}
	return out, storeErr(rows.Err())
}

// Targeted notice states. A (update, tenant) notice is pending until the
// delivery side has found the tenant's contacts and queued one message to
// each (queued), or found none to tell (uncontactable: the operator must
// add a contact and post another update). What became of each message is
// in the delivery records.
const (
	TenantNoticeUncontactable = "uncontactable"
)

// TenantNotice is one update owed to one tenant's contacts.
type TenantNotice struct {
	UpdateID   string `json:"update_id"`
	IncidentID string `json:"incident_id"`
	Tenant     string `json:"tenant"`
	Status     string `json:"status"`   // NoticePending, NoticeQueued, TenantNoticeUncontactable
	Contacts   int    `json:"contacts"` // messages queued
	// Skipped are the contacts not written to, each with why (an address
	// that bounced), so the delivery report says who did not get it.
	Skipped   []string  `json:"skipped,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	Created   time.Time `json:"created_at"`
	Queued    time.Time `json:"queued_at,omitzero"`
}

// TenantNotices lists targeted notices in a status ("" for all), oldest
// first.
func (s *Service) TenantNotices(ctx context.Context, status string, limit int) ([]TenantNotice, error) {
	if limit <= 0 {
		limit = 1000
	}
	where, args := "", []any{}
	if status != "" {
		where, args = " WHERE status = ?", append(args, status)
	}
	// Oldest first by the (status, created_at) index alone, as for
	// subscriber notices: the drainer calls this with NoticePending.
	return s.tenantNotices(ctx, where+" ORDER BY created_at LIMIT "+strconv.Itoa(limit), args...)
}

// IncidentNotices is an incident's delivery report: every targeted notice
// its updates owe, by update and tenant, with how many contacts each went
// to and which were skipped and why.
func (s *Service) IncidentNotices(ctx context.Context, incidentID string) ([]TenantNotice, error) {
	return s.tenantNotices(ctx, " WHERE incident_id = ? ORDER BY created_at, tenant", incidentID)
}

func (s *Service) tenantNotices(ctx context.Context, rest string, args ...any) ([]TenantNotice, error) {
	rows, err := s.db.st.DB().QueryContext(ctx, s.db.q(`SELECT update_id, incident_id, tenant, status, contacts, skipped, last_error, created_at, queued_at
		FROM status_tenant_notices`+rest), args...)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	out := []TenantNotice{}
	for rows.Next() {
		var n TenantNotice
		var skipped string
		var cr, qd int64
		if err := rows.Scan(&n.UpdateID, &n.IncidentID, &n.Tenant, &n.Status, &n.Contacts, &skipped, &n.LastError, &cr, &qd); err != nil {
			return nil, storeErr(err)
		}
		if skipped != "" {
			if err := json.Unmarshal([]byte(skipped), &n.Skipped); err != nil {
				return nil, storeErr(err)
			}
		}
		n.Created, n.Queued = fromMicros(cr), fromMicros(qd)
		out = append(out, n)
	}
	return out, storeErr(rows.Err())
}

// TenantNoticeCounts counts targeted notices per incident and status
// (NoticePending, NoticeQueued, TenantNoticeUncontactable), for the
// operator console: one row per update and affected tenant.
func (s *Service) TenantNoticeCounts(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := s.db.st.DB().QueryContext(ctx, "SELECT incident_id, status, COUNT(*) FROM status_tenant_notices GROUP BY incident_id, status")
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	out := map[string]map[string]int{}
	for rows.Next() {
		var inc, st string
		var n int
		if err := rows.Scan(&inc, &st, &n); err != nil {
			return nil, storeErr(err)
		}
		if out[inc] == nil {
			out[inc] = map[string]int{}
		}
		out[inc][st] = n
	}
	return out, storeErr(rows.Err())
}

// RetryableTenantNotices lists the targeted notices worth another look
// when the contacts vault changes: those left uncontactable that are the
// newest notice of their tenant in an incident still open. Older ones are
// covered by the newest (it carries the link to the tenant's page with
// every update); a resolved incident's are left as they are.
func (s *Service) RetryableTenantNotices(ctx context.Context, limit int) ([]TenantNotice, error) {
	return s.tenantNotices(ctx, ` n WHERE n.status = ?
		AND EXISTS (SELECT 1 FROM status_incidents i WHERE i.id = n.incident_id AND i.resolved_at = 0)
		AND NOT EXISTS (SELECT 1 FROM status_tenant_notices m WHERE m.incident_id = n.incident_id AND m.tenant = n.tenant AND m.created_at > n.created_at)
		ORDER BY n.created_at LIMIT `+strconv.Itoa(max(limit, 1)), TenantNoticeUncontactable)
}

// TenantNoticesDone records what the delivery side did with targeted
// notices in status from (NoticePending, or TenantNoticeUncontactable for
// a retry), in one transaction: each one's Status becomes NoticeQueued
// with the number of messages queued (Contacts), or
// TenantNoticeUncontactable with why (LastError), and the contacts
// skipped. Notices no longer in from are left alone, so doing it twice, or
// from two processes, is harmless.
func (s *Service) TenantNoticesDone(ctx context.Context, from string, ns []TenantNotice) error {
	if len(ns) == 0 {
		return nil
	}
	tx, err := s.db.st.DB().BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, s.db.q(`UPDATE status_tenant_notices SET status = ?, contacts = ?, skipped = ?, last_error = ?, queued_at = ?
		WHERE update_id = ? AND tenant = ? AND status = ?`))
	if err != nil {
		return storeErr(err)
	}
	defer stmt.Close()
	now := micros(s.stamp())
	for _, n := range ns {
		skipped := ""
		if len(n.Skipped) > 0 {
			b, _ := json.Marshal(n.Skipped) // a list of strings always marshals
			skipped = string(b)
		}
		if _, err := stmt.ExecContext(ctx, n.Status, n.Contacts, skipped, n.LastError, now, n.UpdateID, n.Tenant, from); err != nil {
			return storeErr(err)
		}
	}
	return storeErr(tx.Commit())
}

// The private page's link: PUBLIC_URL/tenant-status?t=TOKEN, where TOKEN is
// base64url("INCIDENT\nTENANT\nEXPIRY") "." MAC. The MAC is HMAC-SHA256
// under the installation's link key (the one unsubscribe links use, with
// another purpose), so every process sharing the state store accepts it;
// the expiry (Unix seconds) is inside what is signed, so it cannot be moved.
const tenantLinkPurpose = "tenant-status v1"

// TenantPath is where the private page is served.
const TenantPath = "/tenant-status"

// TenantToken signs a link to tenant's private page for an incident, valid
// for the configured TTL from now. It returns the token and its expiry.
func (s *Service) TenantToken(ctx context.Context, incidentID, tenant string) (string, time.Time, error) {
	key, err := s.linkKey(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	exp := s.now().Add(s.tenantTTL).UTC().Truncate(time.Second)
	payload := incidentID + "\n" + tenant + "\n" + strconv.FormatInt(exp.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + linkMAC(key, tenantLinkPurpose, payload), exp, nil
}

// openTenantToken checks a token's signature and expiry. A token that was
// not made by TenantToken with this installation's key (forged, altered,
// truncated) is fault.Invalid; an expired one is fault.Refused.
func (s *Service) openTenantToken(ctx context.Context, token string) (incidentID, tenant string, exp time.Time, err error) {
	bad := fault.New(fault.Invalid, "open the link in your latest notice; if it still fails, use the support route on the public status page",
		"this status link is not valid")
	enc, mac, ok := strings.Cut(token, ".")
	if !ok {
		return "", "", exp, bad
	}
	raw, derr := base64.RawURLEncoding.DecodeString(enc)
	if derr != nil {
		return "", "", exp, bad
	}
	key, err := s.linkKey(ctx)
	if err != nil {
		return "", "", exp, err
	}
	payload := string(raw)
	if !hmac.Equal([]byte(mac), []byte(linkMAC(key, tenantLinkPurpose, payload))) {
		return "", "", exp, bad
	}
	parts := strings.Split(payload, "\n")
	if len(parts) != 3 {
		return "", "", exp, bad
	}
	unix, perr := strconv.ParseInt(parts[2], 10, 64)
	if perr != nil {
		return "", "", exp, bad
	}
	exp = time.Unix(unix, 0).UTC()
	if !s.now().Before(exp) {
		return "", "", exp, fault.New(fault.Refused, "open the link in the most recent notice (each update sends a fresh one), or follow the public status page",
			"this status link expired on %s", exp.Format("2006-01-02 15:04 UTC"))
	}
	return parts[0], parts[1], exp, nil
}

// TenantView is what one tenant's private page shows: the incident with its
// updates and lifecycle, the tenant's lifecycle state in each product, how
// far the linked restores are for it, and how to reach support, including
// without signing in.
type TenantView struct {
	Tenant   string    `json:"tenant"`
	Incident *Incident `json:"incident"`
	// States is the tenant's lifecycle state per product; nil if unknown.
	States     map[string]string `json:"states,omitempty"`
	StatesAsOf time.Time         `json:"states_as_of,omitzero"`
	Restore    []TenantStep      `json:"restore,omitempty"`
	// Support and SupportNoLogin are the newest update's that states them.
	Support        Text      `json:"support"`
	SupportNoLogin Text      `json:"support_no_login"`
	Expires        time.Time `json:"expires_at"`
}

// TenantView opens a signed link and reads what its page shows. Errors:
// fault.Invalid for a forged or damaged link, fault.Refused for an expired
// one, fault.NotFound if the incident is gone. A lifecycle or restore
// source that cannot answer leaves its part empty rather than failing the
// page: the customer still sees the updates and the support route.
func (s *Service) TenantView(ctx context.Context, token string) (*TenantView, error) {
	id, tenant, exp, err := s.openTenantToken(ctx, token)
	if err != nil {
		return nil, err
	}
	inc, err := s.Incident(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &TenantView{Tenant: tenant, Incident: inc, Expires: exp}
	for _, u := range inc.Updates {
		if v.Support.Empty() {
			v.Support = u.Body.Support
		}
		if v.SupportNoLogin.Empty() {
			v.SupportNoLogin = u.Body.SupportNoLogin
		}
	}
	if s.states != nil {
		if v.States, v.StatesAsOf, err = s.states.TenantStates(ctx, tenant); err != nil {
			s.log.Warn("status: a tenant's lifecycle state is unavailable for its page", "incident", id, "err", err)
			v.States = nil
		}
	}
	if s.targets != nil && len(inc.Links) > 0 {
		if v.Restore, err = s.targets.TenantProgress(ctx, inc.Links, tenant); err != nil {
			s.log.Warn("status: a tenant's restore progress is unavailable for its page", "incident", id, "err", err)
			v.Restore = nil
		}
	}
	return v, nil
}
