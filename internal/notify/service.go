package notify

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/time/rate"

	"lifeline/internal/fault"
	"lifeline/internal/status"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the part of Lifeline's state store delivery uses; *state.Store
// implements it. River's tables and this package's own live in it.
type Store interface {
	DB() *sql.DB
	// Engine is "sqlite" or "postgres".
	Engine() string
	// Rebind turns ? placeholders into the engine's.
	Rebind(q string) string
	// Migrate applies the named set of embedded goose migrations.
	Migrate(ctx context.Context, name string, fsys fs.FS) error
}

// Config configures a Service. Store and Status are required; the rest
// have defaults (applied in one place, New).
type Config struct {
	Store Store
	// PostgresURL is the state store's URL when it is PostgreSQL: River's
	// driver for it runs on a pgx pool of its own.
	PostgresURL string
	Status      *status.Service
	// Email sends mail; nil means no SMTP server is configured: nobody can
	// subscribe (confirming needs mail) and email notices wait, pending.
	Email Sender
	// Webhook sends webhooks; nil means a WebhookSender.
	Webhook Sender
	// Recipients finds the contacts of tenants an incident affects, for
	// targeted notices; nil means no contacts vault: those notices wait,
	// pending, like email ones without a mail server.
	Recipients Recipients
	// Bounces, if set, is told of every contact whose address refuses a
	// targeted notice for good, so the next notices skip it.
	Bounces Bounces

	// PageName names the status page in mail ("Example status").
	PageName string
	// PublicURL is where the status page is reachable, for the links in
	// notices (confirm, unsubscribe, the incident).
	PublicURL string

	// EmailRate is the messages per second the SMTP server is sent (a token
	// bucket with a burst of one second's worth); 0 means 10.
	EmailRate float64
	// WebhookRate is the requests per second each receiving host is sent;
	// 0 means 5.
	WebhookRate float64
	// DisableAfter is how many failed deliveries in a row disable a
	// webhook (its owner is told by mail); 0 means 20.
	DisableAfter int
	// MaxAttempts per message before it is given up; 0 means 20.
	MaxAttempts int
	// Backoff between attempts; zero fields mean 15s doubling to 1h.
	Backoff Backoff
	// EmailWorkers and WebhookWorkers are how many deliveries of each run
	// at once in this process; 0 means 10 and 20.
	EmailWorkers, WebhookWorkers int
	// JobTimeout bounds one delivery attempt; 0 means 1 minute.
	JobTimeout time.Duration
	// RescueAfter is when a job whose process died mid-delivery is run
	// again (by River's rescuer, every 30s on the leader); 0 means
	// JobTimeout + 1 minute. The sent record keeps a rescued job from
	// sending twice.
	RescueAfter time.Duration
	// DrainEvery is how often pending notices are moved onto the queue; 0
	// means 1s.
	DrainEvery time.Duration
	// DrainBatch is how many notices one queue insert takes; 0 means 1000.
	DrainBatch int
	// FetchPoll is how often idle workers look for jobs; 0 means River's
	// default (1s).
	FetchPoll time.Duration

	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Service delivers notices. Build it with New, then Start it; Stop ends
// every goroutine it started.
type Service struct {
	cfg     Config
	status  *status.Service
	email   Sender
	webhook Sender
	rec     *records
	q       queue
	closeQ  func()
	log     *slog.Logger

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter

	rendered renderCache

	// retried is what the last retry of uncontactable notices saw.
	retryMu sync.Mutex
	retried retryMark

	runMu  sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// New applies this package's and River's migrations to the state store and
// builds the service. A missing Store or Status is a programming error
// (fault.Internal); an unreachable store is fault.Unavailable.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Status == nil {
		return nil, fault.New(fault.Internal, "", "notify.New: Store and Status are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Webhook == nil {
		cfg.Webhook = &WebhookSender{Now: cfg.Now}
	}
	if cfg.PageName == "" {
		cfg.PageName = "Status"
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://127.0.0.1:8080"
	}
	defaults := []struct {
		v   *float64
		def float64
	}{{&cfg.EmailRate, 10}, {&cfg.WebhookRate, 5}}
	for _, d := range defaults {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	for _, d := range []struct {
		v   *int
		def int
	}{{&cfg.DisableAfter, 20}, {&cfg.MaxAttempts, 20}, {&cfg.EmailWorkers, 10}, {&cfg.WebhookWorkers, 20}, {&cfg.DrainBatch, 1000}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff.Base = 15 * time.Second
	}
	if cfg.Backoff.Max < cfg.Backoff.Base {
		cfg.Backoff.Max = max(time.Hour, cfg.Backoff.Base)
	}
	if cfg.Backoff.Now == nil {
		cfg.Backoff.Now = cfg.Now
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = time.Minute
	}
	if cfg.RescueAfter <= cfg.JobTimeout {
		cfg.RescueAfter = cfg.JobTimeout + time.Minute
	}
	if cfg.DrainEvery <= 0 {
		cfg.DrainEvery = time.Second
	}

	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := cfg.Store.Migrate(ctx, "notify", sub); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, status: cfg.Status, email: cfg.Email, webhook: cfg.Webhook,
		rec: &records{st: cfg.Store, now: cfg.Now}, log: cfg.Log, limiters: map[string]*rate.Limiter{}}
	s.rendered.items = map[string]*renderedUpdate{}

	workers := river.NewWorkers()
	river.AddWorker(workers, &noticeWorker{s: s})
	river.AddWorker(workers, &mailWorker{s: s})
	river.AddWorker(workers, &tenantNoticeWorker{s: s})
	rc := &river.Config{
		Logger:               slog.New(levelFloor{cfg.Log.Handler(), slog.LevelWarn}),
		Workers:              workers,
		Queues:               map[string]river.QueueConfig{QueueEmail: {MaxWorkers: cfg.EmailWorkers}, QueueWebhook: {MaxWorkers: cfg.WebhookWorkers}},
		RetryPolicy:          cfg.Backoff,
		MaxAttempts:          cfg.MaxAttempts,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		FetchPollInterval:    cfg.FetchPoll,
	}
	// River fetches at most once per cooldown (100ms by default), and each
	// fetch takes only as many jobs as there are idle workers: with sends
	// that take a few milliseconds the cooldown, not the mail server, would
	// set the pace (10 workers, 100 mails/s).
	rc.FetchCooldown = 5 * time.Millisecond
	if s.q, s.closeQ, err = openQueue(ctx, cfg.Store, cfg.PostgresURL, rc); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts River's workers and the drainer. They run until Stop, or
// until ctx ends.
func (s *Service) Start(ctx context.Context) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.cancel != nil {
		return fault.New(fault.Conflict, "", "notify: already started")
	}
	if err := s.q.Start(ctx); err != nil {
		return fault.Wrap(err, fault.Unavailable, "check the state store", "starting the job queue")
	}
	dctx, cancel := context.WithCancel(ctx)
	s.cancel, s.done = cancel, make(chan struct{})
	go s.drainLoop(dctx, s.done)
	return nil
}

// Stop lets running deliveries finish (until ctx ends), then stops the
// drainer and the workers and closes River's pool.
func (s *Service) Stop(ctx context.Context) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.cancel == nil {
		s.closeQ()
		s.rec.close()
		return nil
	}
	s.cancel()
	<-s.done
	err := s.q.Stop(ctx)
	s.cancel = nil
	s.closeQ()
	s.rec.close()
	return err
}

// channels lists the channels this process can deliver.
func (s *Service) channels() []status.Channel {
	out := []status.Channel{status.ChannelWebhook}
	if s.email != nil {
		out = append(out, status.ChannelEmail)
	}
	return out
}

func (s *Service) drainLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.cfg.DrainEvery)
	defer t.Stop()
	for {
		if _, err := s.Drain(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("notify: moving notices onto the queue failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain moves every pending notice it can deliver onto the job queue and
// returns how many it moved. Each notice becomes a unique job (one per
// notice, channel and subscriber; for a targeted notice, one per update,
// tenant and contact), so a notice moved twice, after a crash between the
// insert and the marking or by two processes at once, is one job. A
// failure of one kind does not hold up the other.
func (s *Service) Drain(ctx context.Context) (int, error) {
	moved, err := s.drainSubscribers(ctx)
	targeted, terr := s.drainTargeted(ctx)
	retried, rerr := s.retryUncontactable(ctx)
	return moved + targeted + retried, errors.Join(err, terr, rerr)
}

// drainSubscribers queues the notices owed to subscribers.
func (s *Service) drainSubscribers(ctx context.Context) (int, error) {
	moved := 0
	for {
		ns, err := s.status.OwedNotices(ctx, s.channels(), s.cfg.DrainBatch)
		if err != nil || len(ns) == 0 {
			return moved, err
		}
		params := make([]river.InsertManyParams, len(ns))
		for i, n := range ns {
			args := noticeJob{SubscriberID: n.SubscriberID, UpdateID: n.UpdateID, Channel: string(n.Channel), IncidentID: n.IncidentID}
			params[i] = river.InsertManyParams{Args: args, InsertOpts: &river.InsertOpts{Queue: queueFor(n.Channel),
				UniqueOpts: river.UniqueOpts{ByArgs: true}}}
		}
		if _, err := s.q.InsertMany(ctx, params); err != nil {
			return moved, fault.Wrap(err, fault.Unavailable, "check the state store", "queueing %d notices", len(ns))
		}
		if err := s.status.QueueNotices(ctx, ns); err != nil {
			return moved, err
		}
		moved += len(ns)
		if len(ns) < s.cfg.DrainBatch {
			return moved, nil
		}
	}
}

func queueFor(c status.Channel) string {
	if c == status.ChannelWebhook {
		return QueueWebhook
	}
	return QueueEmail
}

// Subscribe records a subscriber (status.Service.Subscribe) and queues the
// mail that carries the confirmation link. Without an SMTP server nobody
// can confirm, so it refuses with fault.Unavailable.
func (s *Service) Subscribe(ctx context.Context, req status.SubscribeRequest) (*status.Pending, error) {
	if s.email == nil {
		return nil, fault.New(fault.Unavailable, "set smtp: in lifeline.yaml so confirmation mail can be sent", "subscriptions are not available: no mail server is configured")
	}
	p, err := s.status.Subscribe(ctx, req)
	if err != nil || p.Token == "" {
		return p, err
	}
	if err := s.enqueueMail(ctx, s.confirmMail(p)); err != nil {
		return nil, err
	}
	return p, nil
}

// Confirm completes a double opt-in.
func (s *Service) Confirm(ctx context.Context, token string) (status.Subscriber, error) {
	return s.status.Confirm(ctx, token)
}

// Unsubscribe stops notices to the holder of a signed unsubscribe token.
func (s *Service) Unsubscribe(ctx context.Context, token string) (status.Subscriber, error) {
	return s.status.Unsubscribe(ctx, token)
}

// Deliveries lists delivery records in a state ("" for all), oldest first.
func (s *Service) Deliveries(ctx context.Context, state string, limit int) ([]Delivery, error) {
	return s.rec.list(ctx, state, limit)
}

// CountDeliveries counts delivery records in a state.
func (s *Service) CountDeliveries(ctx context.Context, state string) (int, error) {
	return s.rec.count(ctx, state)
}

func (s *Service) enqueueMail(ctx context.Context, m mailJob) error {
	_, err := s.q.Insert(ctx, m, nil)
	return fault.Wrap(err, fault.Unavailable, "check the state store", "queueing mail to %s", m.To)
}

// limiter returns the token bucket of a provider.
func (s *Service) limiter(provider string) *rate.Limiter {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	l := s.limiters[provider]
	if l == nil {
		r := s.cfg.WebhookRate
		if strings.HasPrefix(provider, "smtp:") {
			r = s.cfg.EmailRate
		}
		l = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
		s.limiters[provider] = l
	}
	return l
}

// maxRateWait is the longest a worker holds its slot waiting for a token;
// beyond it (or beyond half the job's remaining time) the job is snoozed,
// which does not count as an attempt.
const maxRateWait = 5 * time.Second

// wait takes a token from provider's bucket.
func (s *Service) wait(ctx context.Context, provider string) error {
	r := s.limiter(provider).Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	limit := maxRateWait
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)/2)
	}
	if d > limit {
		r.Cancel()
		return river.JobSnooze(d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// send hands m to sender, recording d sent (and running also in the same
// transaction) at the commit point. committed says whether that happened:
// if Send then failed, the record must be undone.
func (s *Service) send(ctx context.Context, sender Sender, m Message, d Delivery, also func(*sql.Tx) error) (bool, error) {
	var committed atomic.Bool // commit may run on the transport's goroutine
	err := sender.Send(ctx, m, func(ctx context.Context) error {
		if err := s.rec.commit(ctx, d, also); err != nil {
			return err
		}
		committed.Store(true)
		return nil
	})
	return committed.Load(), err
}

// outcome maps a failed attempt to what River should do and records it:
// permanent failures and the last attempt end the message; anything else
// is retried with backoff. A message another runner already sent is done.
func (s *Service) outcome(ctx context.Context, job *rivertype.JobRow, d Delivery, committed bool, err error) (final string, jobErr error) {
	switch {
	case errors.Is(err, errAlreadySent):
		return StateSent, nil
	case IsPermanent(err):
		final, jobErr = StateFailed, river.JobCancel(err)
	case job.Attempt >= job.MaxAttempts:
		final, jobErr = StateFailed, err
	default:
		final, jobErr = StatePending, err
	}
	// Recorded even if ctx ended: the attempt happened.
	if ferr := s.rec.finish(context.WithoutCancel(ctx), d, final, err, committed); ferr != nil {
		s.log.Error("notify: recording a failed attempt", "key", d.Key, "committed", committed, "err", ferr)
	}
	return final, jobErr
}
