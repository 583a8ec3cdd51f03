package notify

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"lifeline/internal/fault"
	"lifeline/internal/status"
)

// noticeJob delivers one update to one subscriber. Its arguments are its
// unique key: one job per (notice, channel, subscriber).
type noticeJob struct {
	SubscriberID string `json:"subscriber_id"`
	UpdateID     string `json:"update_id"`
	Channel      string `json:"channel"`
	IncidentID   string `json:"incident_id"`
}

func (noticeJob) Kind() string { return "notify_notice" }

// mailJob sends one prepared mail: a confirmation link, or the news that a
// webhook was disabled. Key is its identity, unique.
type mailJob struct {
	Key     string `json:"key" river:"unique"`
	What    string `json:"what"` // confirm, disabled
	To      string `json:"to"`
	Subject string `json:"subject"`
	// Text may carry a confirmation token. It lives in the state store
	// until River cleans completed jobs (24h), like the key that signs
	// every link; whoever reads the store can already forge links.
	Text string `json:"text"`
	// SubscriberID is whose confirmation this is: a mailbox that refuses
	// it for good stops that subscription.
	SubscriberID string `json:"subscriber_id,omitempty"`
}

func (mailJob) Kind() string { return "notify_mail" }

func (mailJob) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueEmail, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type noticeWorker struct {
	river.WorkerDefaults[noticeJob]
	s *Service
}

func (w *noticeWorker) Work(ctx context.Context, job *river.Job[noticeJob]) error {
	return w.s.deliverNotice(ctx, job)
}

type mailWorker struct {
	river.WorkerDefaults[mailJob]
	s *Service
}

func (w *mailWorker) Work(ctx context.Context, job *river.Job[mailJob]) error {
	return w.s.deliverMail(ctx, job)
}

func noticeKey(a noticeJob) string { return "notice:" + a.SubscriberID + ":" + a.UpdateID }

// deliverNotice is one attempt at one notice.
func (s *Service) deliverNotice(ctx context.Context, job *river.Job[noticeJob]) error {
	a := job.Args
	key := noticeKey(a)
	done := func(state string, cause error) {
		msg := ""
		if cause != nil {
			msg = truncate(cause.Error(), 1000)
		}
		if err := s.status.NoticeDone(context.WithoutCancel(ctx), a.SubscriberID, a.UpdateID, state, job.Attempt, msg); err != nil {
			s.log.Warn("notify: recording a notice's outcome", "key", key, "err", err)
		}
	}
	sub, err := s.status.Subscriber(ctx, a.SubscriberID)
	if fault.CodeOf(err) == fault.NotFound || (err == nil && !sub.Active()) {
		// Unsubscribed, or a webhook disabled, since the update: say nothing.
		done(status.NoticeCancelled, nil)
		return river.JobCancel(fmt.Errorf("subscriber %s no longer subscribed", a.SubscriberID))
	}
	if err != nil {
		return err
	}
	sender := s.senderFor(sub.Channel)
	if sender == nil {
		// Mail was configured in the process that queued this; not here.
		return river.JobSnooze(s.cfg.JobTimeout)
	}
	msg, err := s.renderNotice(ctx, sub, a)
	if fault.CodeOf(err) == fault.NotFound {
		done(status.NoticeCancelled, err)
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	d := Delivery{Key: key, Kind: "notice", Channel: string(sub.Channel), Recipient: sub.Address, Provider: sender.Provider(sub.Address), MessageID: msg.ID}
	st, err := s.rec.state(ctx, key)
	if err != nil {
		return err
	}
	if st == StateSent {
		// A previous run handed it over, then died before River heard.
		done(status.NoticeSent, nil)
		return nil
	}
	if err := s.wait(ctx, d.Provider); err != nil {
		return err // a snooze, or the job's time is up: not an attempt
	}
	committed, err := s.send(ctx, sender, msg, d, func(tx *sql.Tx) error {
		return s.status.NoticeDoneTx(ctx, tx, a.SubscriberID, a.UpdateID, status.NoticeSent, job.Attempt, "")
	})
	if err == nil {
		if sub.Channel == status.ChannelWebhook {
			if err := s.rec.endpointOK(ctx, sub.ID); err != nil {
				s.log.Warn("notify: resetting a webhook's failures", "subscriber", sub.ID, "err", err)
			}
		}
		return nil
	}
	final, jobErr := s.outcome(ctx, job.JobRow, d, committed, err)
	switch {
	case final == StateSent:
		done(status.NoticeSent, nil)
		return nil
	case sub.Channel == status.ChannelWebhook && s.webhookFailed(ctx, sub, err):
		done(status.NoticeCancelled, err)
		return river.JobCancel(err)
	case sub.Channel == status.ChannelEmail && IsBounce(err):
		// The mailbox refused for good: no later notice would get through.
		// Disabled before the job ends; if that cannot be recorded now, the
		// job is retried, refused again, and disables it then.
		if _, derr := s.status.DisableSubscriber(context.WithoutCancel(ctx), sub.ID, "mailbox refused for good: "+bounceReason(err)); derr != nil {
			s.log.Warn("notify: could not disable a bounced subscriber; retrying", "subscriber", sub.ID, "err", derr)
			return derr
		}
		s.log.Warn("notify: subscriber disabled, the mailbox refused for good", "subscriber", sub.ID, "reason", bounceReason(err))
		done(status.NoticeFailed, err)
		return river.JobCancel(err)
	case final == StateFailed:
		done(status.NoticeFailed, err)
	case committed:
		done(status.NoticeQueued, err) // marked sent at the commit; it was not
	}
	s.log.Info("notify: delivery failed", "key", key, "attempt", job.Attempt, "final", final == StateFailed, "err", err)
	return jobErr
}

// webhookFailed counts a failure against a webhook and disables it once
// DisableAfter have failed in a row, telling its owner. The owner's mail is
// queued first, keyed by the run of failures, so a crash between the steps
// repeats them without telling the owner twice. It reports whether the
// webhook is now disabled.
func (s *Service) webhookFailed(ctx context.Context, sub status.Subscriber, cause error) bool {
	n, since, err := s.rec.endpointFailed(ctx, sub.ID, sub.Confirmed, cause)
	if err != nil {
		s.log.Warn("notify: counting a webhook failure", "subscriber", sub.ID, "err", err)
		return false
	}
	if n < s.cfg.DisableAfter {
		return false
	}
	reason := fmt.Sprintf("%d deliveries in a row failed; the last: %s", n, truncate(cause.Error(), 300))
	if s.email != nil && sub.OwnerEmail != "" {
		m := s.disabledMail(sub, reason, strconv.FormatInt(since.UnixMicro(), 10))
		if err := s.enqueueMail(ctx, m); err != nil {
			s.log.Warn("notify: queueing the owner's mail; the webhook stays enabled until the next failure", "subscriber", sub.ID, "err", err)
			return false
		}
	} else {
		s.log.Warn("notify: a webhook is disabled and its owner cannot be told: no mail server", "subscriber", sub.ID)
	}
	if _, err := s.status.DisableSubscriber(ctx, sub.ID, "webhook disabled: "+reason); err != nil {
		s.log.Warn("notify: disabling a failing webhook", "subscriber", sub.ID, "err", err)
		return false
	}
	s.log.Warn("notify: webhook disabled after repeated failures", "subscriber", sub.ID, "failures", n)
	return true
}

// deliverMail is one attempt at a prepared mail.
func (s *Service) deliverMail(ctx context.Context, job *river.Job[mailJob]) error {
	a := job.Args
	if s.email == nil {
		return river.JobSnooze(s.cfg.JobTimeout)
	}
	key := "mail:" + a.Key
	msg := Message{ID: messageID(a.Key, s.fromDomain()), To: a.To, Subject: a.Subject, Text: a.Text}
	d := Delivery{Key: key, Kind: a.What, Channel: string(status.ChannelEmail), Recipient: a.To, Provider: s.email.Provider(a.To), MessageID: msg.ID}
	st, err := s.rec.state(ctx, key)
	if err != nil || st == StateSent {
		return err
	}
	err = s.sendMail(ctx, job.JobRow, d, msg)
	if a.What == "confirm" && IsBounce(err) {
		// Stopped before the job ends; if that cannot be recorded now, the
		// job is retried, refused again, and stops it then.
		reason := "confirmation mail refused for good: " + bounceReason(err)
		stopped, serr := s.status.StopUnconfirmed(context.WithoutCancel(ctx), a.SubscriberID, a.To, reason)
		if serr != nil {
			s.log.Warn("notify: could not stop a subscription whose confirmation bounced; retrying", "subscriber", a.SubscriberID, "err", serr)
			return serr
		}
		if stopped {
			s.log.Warn("notify: subscription stopped, its confirmation mail was refused for good", "subscriber", a.SubscriberID, "reason", reason)
		}
	}
	return err
}

// sendMail is one attempt at a mail whose record is d: it waits for the
// server's rate limit, sends with the sent record written at the commit
// point, and records a failed attempt for River to retry or give up.
func (s *Service) sendMail(ctx context.Context, job *rivertype.JobRow, d Delivery, msg Message) error {
	if err := s.wait(ctx, d.Provider); err != nil {
		return err // a snooze, or the job's time is up: not an attempt
	}
	committed, err := s.send(ctx, s.email, msg, d, nil)
	if err != nil {
		_, jobErr := s.outcome(ctx, job, d, committed, err)
		return jobErr
	}
	return nil
}

func (s *Service) senderFor(c status.Channel) Sender {
	if c == status.ChannelWebhook {
		return s.webhook
	}
	if s.email == nil {
		return nil
	}
	return s.email
}

// renderedUpdate is what every notice of one update shares: the incident
// as of the update. Published updates do not change, so it is cached.
type renderedUpdate struct {
	inc    *status.Incident
	update status.Update
}

// renderCache keeps the incidents of recent updates, so a hundred
// thousand notices of one update read it once.
type renderCache struct {
	mu    sync.Mutex
	items map[string]*renderedUpdate
}

const renderCacheSize = 64

func (s *Service) update(ctx context.Context, incidentID, updateID string) (*renderedUpdate, error) {
	s.rendered.mu.Lock()
	r := s.rendered.items[updateID]
	s.rendered.mu.Unlock()
	if r != nil {
		return r, nil
	}
	inc, err := s.status.Incident(ctx, incidentID)
	if err != nil {
		return nil, err
	}
	for _, u := range inc.Updates {
		if u.ID == updateID {
			r = &renderedUpdate{inc: inc, update: u}
		}
	}
	if r == nil {
		return nil, fault.New(fault.NotFound, "", "incident %s has no update %s", incidentID, updateID)
	}
	s.rendered.mu.Lock()
	if len(s.rendered.items) >= renderCacheSize {
		clear(s.rendered.items)
	}
	s.rendered.items[updateID] = r
	s.rendered.mu.Unlock()
	return r, nil
}

// messageID makes an RFC 5322 Message-ID (without brackets) from a key.
func messageID(key, domain string) string {
	return strings.NewReplacer(":", ".", "/", ".").Replace(key) + "@" + domain
}

// fromDomain is the domain of the From address, for Message-IDs.
func (s *Service) fromDomain() string {
	if d, ok := s.email.(interface{ Domain() string }); ok && d.Domain() != "" {
		return d.Domain()
	}
	return "lifeline.invalid"
}
