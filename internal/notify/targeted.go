package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"lifeline/internal/fault"
	"lifeline/internal/status"
)

// Targeted notices: every update of an incident that names affected
// tenants owes each tenant's authorised contacts a private mail with a
// signed, expiring link to the tenant's own status page. internal/status
// records one pending notice per (update, tenant) with the update; the
// drainer here asks the contacts vault who to tell and queues one unique
// job per (update, tenant, contact); the worker sends it with the same
// commit-before-the-last-byte record as every other mail, so a crash
// neither loses nor repeats one.

// Recipient is one person to tell about a tenant.
type Recipient struct {
	ContactID string
	Email     string
	Name      string
	// Language is the contact's preferred language as the vault holds it;
	// any zh… gets Simplified Chinese, anything else English.
	Language string
	// Role is the contact's best role for the tenant: admin, technical,
	// billing or security.
	Role string
	// Reachable is false for a contact whose address bounced or whose link
	// was removed; they are not written to.
	Reachable bool
	// Bounced says when and why the address bounced ("" if it has not);
	// the delivery report names the contacts skipped for it.
	Bounced string
}

// Recipients finds who to tell about tenants. The contacts vault
// implements it (wired in cmd/lifeline): it keeps every tenant's contacts
// after the tenant is deleted or purged in the products.
type Recipients interface {
	// Recipients returns each tenant's contacts, best first (verified
	// admins, then technical, then billing). A tenant the vault does not
	// know maps to none. An error means the vault cannot answer now: the
	// notices stay pending and the next drain asks again.
	Recipients(ctx context.Context, tenants []string) (map[string][]Recipient, error)
	// Revision moves whenever the contacts change. A notice left with
	// nobody to tell is looked at again only when it has moved, so an idle
	// vault is not read (and its audit log not written) every second.
	Revision(ctx context.Context) (int64, error)
}

// Bounces records an address that refused a notice for good, so later
// notices skip it. The contacts vault implements it (wired in
// cmd/lifeline) as a versioned change of the contact.
type Bounces interface {
	Bounced(ctx context.Context, email, reason string) error
}

// NoticeRoles are the roles a targeted notice goes to, in the order the
// vault ranks them. Security contacts are left out: they are for security
// reports, not for service notices.
var NoticeRoles = []string{"admin", "technical", "billing"}

// tenantNoticeJob is one update to one contact of one tenant. The update,
// the tenant and the contact are its unique key; the address travels with
// it so delivery needs the vault no more.
type tenantNoticeJob struct {
	UpdateID   string `json:"update_id" river:"unique"`
	Tenant     string `json:"tenant" river:"unique"`
	ContactID  string `json:"contact_id" river:"unique"`
	IncidentID string `json:"incident_id"`
	Email      string `json:"email"`
	Name       string `json:"name,omitempty"`
	Lang       string `json:"lang"`
	Role       string `json:"role"`
}

func (tenantNoticeJob) Kind() string { return "notify_tenant_notice" }

func (tenantNoticeJob) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueEmail, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type tenantNoticeWorker struct {
	river.WorkerDefaults[tenantNoticeJob]
	s *Service
}

func (w *tenantNoticeWorker) Work(ctx context.Context, job *river.Job[tenantNoticeJob]) error {
	return w.s.deliverTenantNotice(ctx, job)
}

// tenantNoticeKey is the delivery record's key: one per (update, tenant,
// contact), whatever the number of jobs that carried it.
func tenantNoticeKey(a tenantNoticeJob) string {
	return "tenant:" + a.UpdateID + ":" + a.Tenant + ":" + a.ContactID
}

// drainTargeted queues the messages of pending targeted notices and
// returns how many (update, tenant) notices it handled. Without a mail
// server or a vault the notices wait, pending.
func (s *Service) drainTargeted(ctx context.Context) (int, error) {
	if s.email == nil || s.cfg.Recipients == nil {
		return 0, nil
	}
	moved := 0
	for {
		ns, err := s.status.TenantNotices(ctx, status.NoticePending, s.cfg.DrainBatch)
		if err != nil || len(ns) == 0 {
			return moved, err
		}
		who, err := s.recipientsOf(ctx, ns)
		if err != nil {
			return moved, err
		}
		var params []river.InsertManyParams
		for i := range ns {
			params = append(params, s.noticeJobs(&ns[i], who[ns[i].Tenant])...)
			if ns[i].Contacts == 0 {
				s.log.Warn("notify: a tenant affected by an incident has nobody to tell; the notice goes out once the contacts vault has someone, while the incident is open",
					"tenant", ns[i].Tenant, "incident", ns[i].IncidentID)
			}
		}
		if err := s.queueTargeted(ctx, params); err != nil {
			return moved, err
		}
		if err := s.status.TenantNoticesDone(ctx, status.NoticePending, ns); err != nil {
			return moved, err
		}
		moved += len(ns)
		if len(ns) < s.cfg.DrainBatch {
			return moved, nil
		}
	}
}

// recipientsOf asks the vault, in one read, for the contacts of the
// tenants of notices ns.
func (s *Service) recipientsOf(ctx context.Context, ns []status.TenantNotice) (map[string][]Recipient, error) {
	var tenants []string
	for _, n := range ns {
		if !slices.Contains(tenants, n.Tenant) {
			tenants = append(tenants, n.Tenant)
		}
	}
	who, err := s.cfg.Recipients.Recipients(ctx, tenants)
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "check the contacts vault; the notices wait and are sent once it answers",
			"finding the contacts of %d tenants", len(tenants))
	}
	return who, nil
}

// noticeJobs sets n's outcome from the tenant's contacts rs (queued to
// the reachable ones among NoticeRoles, or uncontactable saying why, with
// the contacts skipped) and returns the jobs that carry it.
func (s *Service) noticeJobs(n *status.TenantNotice, rs []Recipient) []river.InsertManyParams {
	var params []river.InsertManyParams
	n.Contacts, n.Skipped = 0, nil
	for _, r := range rs {
		if !slices.Contains(NoticeRoles, r.Role) {
			continue
		}
		if !r.Reachable {
			if r.Bounced != "" {
				n.Skipped = append(n.Skipped, fmt.Sprintf("contact %s (%s): not written to, the address bounced: %s", r.ContactID, r.Role, r.Bounced))
			}
			continue
		}
		params = append(params, river.InsertManyParams{Args: tenantNoticeJob{UpdateID: n.UpdateID, Tenant: n.Tenant, ContactID: r.ContactID,
			IncidentID: n.IncidentID, Email: r.Email, Name: r.Name, Lang: string(langOf(r.Language)), Role: r.Role}})
		n.Contacts++
	}
	n.Status, n.LastError = status.NoticeQueued, ""
	if n.Contacts == 0 {
		n.Status = status.TenantNoticeUncontactable
		n.LastError = "the contacts vault has no reachable admin, technical or billing contact for this tenant"
		if len(n.Skipped) > 0 {
			n.LastError += ": every address it has bounced"
		}
	}
	return params
}

// queueTargeted inserts targeted notice jobs in batches; each is unique
// by (update, tenant, contact), so inserting one twice queues it once.
func (s *Service) queueTargeted(ctx context.Context, params []river.InsertManyParams) error {
	for len(params) > 0 {
		part := params[:min(len(params), s.cfg.DrainBatch)]
		params = params[len(part):]
		if _, err := s.q.InsertMany(ctx, part); err != nil {
			return fault.Wrap(err, fault.Unavailable, "check the state store", "queueing %d targeted notices", len(part))
		}
	}
	return nil
}

// retryMark is what a look at uncontactable notices saw: the vault's
// revision and when the newest of them was found to have nobody to tell.
// The vault is read again when either moves: a notice another process
// marked from an older read of the vault is looked at once more.
type retryMark struct {
	checked bool
	rev     int64
	newest  time.Time
}

// retryUncontactable sends the notices left with nobody to tell to the
// contacts the vault has gained since, for incidents still open: a
// contact added by a sync, an import or the API is told without waiting
// for another update. It reads the vault only when there are such notices
// and its revision (or the newest of them) has moved since the last look,
// and returns how many notices it queued.
func (s *Service) retryUncontactable(ctx context.Context) (int, error) {
	if s.email == nil || s.cfg.Recipients == nil {
		return 0, nil
	}
	ns, err := s.status.RetryableTenantNotices(ctx, s.cfg.DrainBatch)
	if err != nil || len(ns) == 0 {
		return 0, err
	}
	rev, err := s.cfg.Recipients.Revision(ctx)
	if err != nil {
		return 0, fault.Wrap(err, fault.Unavailable, "check the contacts vault", "reading the contacts vault's revision")
	}
	mark := retryMark{checked: true, rev: rev}
	for _, n := range ns {
		if n.Queued.After(mark.newest) {
			mark.newest = n.Queued
		}
	}
	s.retryMu.Lock()
	last := s.retried
	s.retryMu.Unlock()
	if last.checked && last.rev == rev && !mark.newest.After(last.newest) {
		return 0, nil
	}
	who, err := s.recipientsOf(ctx, ns)
	if err != nil {
		return 0, err
	}
	var params []river.InsertManyParams
	var found []status.TenantNotice
	for _, n := range ns {
		if jobs := s.noticeJobs(&n, who[n.Tenant]); len(jobs) > 0 {
			params, found = append(params, jobs...), append(found, n)
		}
	}
	if err := s.queueTargeted(ctx, params); err != nil {
		return 0, err
	}
	if err := s.status.TenantNoticesDone(ctx, status.TenantNoticeUncontactable, found); err != nil {
		return 0, err
	}
	s.retryMu.Lock()
	s.retried = mark
	s.retryMu.Unlock()
	for _, n := range found {
		s.log.Info("notify: a tenant that had nobody to tell has a contact now; its notice is queued", "tenant", n.Tenant, "incident", n.IncidentID, "contacts", n.Contacts)
	}
	return len(found), nil
}

// langOf maps a contact's language to one the notices are written in.
func langOf(l string) status.Lang {
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(l)), "zh") {
		return status.Chinese
	}
	return status.English
}

// deliverTenantNotice is one attempt at one targeted notice.
func (s *Service) deliverTenantNotice(ctx context.Context, job *river.Job[tenantNoticeJob]) error {
	a := job.Args
	if s.email == nil {
		return river.JobSnooze(s.cfg.JobTimeout)
	}
	key := tenantNoticeKey(a)
	st, err := s.rec.state(ctx, key)
	if err != nil || st == StateSent {
		return err
	}
	msg, err := s.renderTenantNotice(ctx, a)
	if fault.CodeOf(err) == fault.NotFound {
		return river.JobCancel(err) // the incident or update is gone
	}
	if err != nil {
		return err
	}
	d := Delivery{Key: key, Kind: "tenant_notice", Channel: string(status.ChannelEmail), Recipient: a.Email, Provider: s.email.Provider(a.Email), MessageID: msg.ID}
	err = s.sendMail(ctx, job.JobRow, d, msg)
	if IsBounce(err) && s.cfg.Bounces != nil {
		// Marked before the job ends: if the vault cannot record it now,
		// the job is retried, refused again, and marks it then.
		if merr := s.cfg.Bounces.Bounced(context.WithoutCancel(ctx), a.Email, bounceReason(err)); merr != nil {
			s.log.Warn("notify: could not mark a bounced contact in the vault; retrying", "contact", a.ContactID, "err", merr)
			return merr
		}
	}
	return err
}

// tenantWords are the targeted notice's own sentences, per language.
var tenantWords = map[status.Lang]map[string]string{
	status.English: {
		"subject":   "[%s] %s: your site %s",
		"hello":     "Hello %s,",
		"why":       "You receive this because you are the %s contact of site %s, which this incident affects.",
		"page":      "Your site's own status, how far its restore is, and how to reach support, even if you cannot sign in (a private link, valid until %s):",
		"public":    "Public status page",
		"admin":     "admin",
		"technical": "technical",
		"billing":   "billing",
	},
	status.Chinese: {
		"subject":   "[%s] %s：您的站点 %s",
		"hello":     "%s，您好：",
		"why":       "您收到此邮件，是因为您是站点 %[2]s 的%[1]s联系人，而该站点受此事件影响。",
		"page":      "您站点自己的状态、恢复进度，以及联系支持的方式（即使无法登录）（私人链接，有效期至 %s）：",
		"public":    "公开状态页面",
		"admin":     "管理员",
		"technical": "技术",
		"billing":   "账务",
	},
}

// renderTenantNotice builds the private mail: the update as on the page,
// then the signed link to the tenant's own status, made at send time so it
// is valid for the full TTL from when it leaves.
func (s *Service) renderTenantNotice(ctx context.Context, a tenantNoticeJob) (Message, error) {
	r, err := s.update(ctx, a.IncidentID, a.UpdateID)
	if err != nil {
		return Message{}, err
	}
	token, exp, err := s.status.TenantToken(ctx, a.IncidentID, a.Tenant)
	if err != nil {
		return Message{}, err
	}
	lang := status.Lang(a.Lang)
	w := tenantWords[lang]
	if w == nil {
		lang, w = status.English, tenantWords[status.English]
	}
	inc, u := r.inc, r.update
	link := s.cfg.PublicURL + status.TenantPath + "?t=" + url.QueryEscape(token)
	var b strings.Builder
	if a.Name != "" {
		fmt.Fprintf(&b, w["hello"]+"\n\n", a.Name)
	}
	fmt.Fprintf(&b, w["why"]+"\n\n", w[a.Role], a.Tenant)
	fmt.Fprintf(&b, "%s\n%s · %s\n\n", inc.Name.In(lang), status.Label(lang, string(u.Status)), u.Created.UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString(u.Body.Plain(lang))
	fmt.Fprintf(&b, "\n\n"+w["page"]+"\n%s\n\n-- \n%s: %s\n", exp.Format("2006-01-02 15:04 UTC"), link, w["public"], s.cfg.PublicURL+"/")
	// The Message-ID names the tenant by a hash: keys are the products'
	// own and need not be valid in a Message-ID.
	sum := sha256.Sum256([]byte(a.Tenant))
	return Message{
		ID:      messageID("tenant:"+a.UpdateID+":"+hex.EncodeToString(sum[:6])+":"+a.ContactID, s.fromDomain()),
		To:      a.Email,
		Subject: fmt.Sprintf(w["subject"], s.cfg.PageName, inc.Name.In(lang), a.Tenant),
		Text:    b.String(),
	}, nil
}
