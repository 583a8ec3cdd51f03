package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"lifeline/internal/backup"
	"lifeline/internal/plan"
	"lifeline/internal/restore"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
	"lifeline/internal/web"
)

// serveCmd runs the long-lived process: the HTTP API, metrics and health,
// continuous shipping of every product's changes, the resumption of
// operations and plans interrupted by a crash, and plan event delivery.
func serveCmd(e *env, args []string) error {
	fs := flags(e, "serve")
	listen := fs.String("listen", "", "address to listen on (default: listen: in the config, else 127.0.0.1:8080)")
	a, _, err := start(e, fs, args, openApp)
	if err != nil {
		return err
	}
	defer a.Close()
	return serve(e, a, *listen)
}

func serve(e *env, a *app, listen string) error {
	if listen == "" {
		listen = a.cfg.Listen
	}
	// Listen first: the status page and its notices link to the address
	// actually bound, unless status.public_url says where readers find it.
	ln, err := web.Listen(listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	servedAt(a, ln.Addr())
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	a.tenants.Log = log

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), tenant.NewCollector(a.tenants))

	// Ship every product's changes continuously until serve stops.
	repo, err := openRepo(e, a)
	if err != nil {
		return err
	}
	ships, closeSources, err := shippers(e, a, repo)
	if err != nil {
		return err
	}
	defer closeSources()
	metrics := backup.NewMetrics(reg)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, s := range ships {
		s.Metrics, s.Log = metrics, log
		wg.Go(func() { s.Run(e.ctx, a.cfg.Shipping.Interval.D()) })
	}
	// Restores' trash follows retention.deleted, checked every hour.
	restores, err := restore.OpenService(e.ctx, paced(a, &restore.Service{Tenants: a.tenants, Repo: repo, Log: log}))
	if err != nil {
		return err
	}
	wg.Go(func() { expireRestoreTrash(e.ctx, restores, log) })
	if restoresLeft := resumeInterrupted(e.ctx, a, log); len(restoresLeft) > 0 {
		wg.Go(func() { resumeRestores(e.ctx, restores, restoresLeft, log) })
	}
	page, err := statusPage(e, a, log)
	if err != nil {
		return err
	}
	// Notices: subscriptions and their delivery through the job queue
	// (internal/notify). Started before the page runs or serves, which read
	// page.Subscriptions.
	stopNotices, err := startNotices(e, a, page, log)
	if err != nil {
		return err
	}
	defer stopNotices()
	wg.Go(func() { page.Run(e.ctx) })
	// Contacts vault: sync every vault.sync_every, export within seconds of
	// any change, and its API and verification page (rate-limited by the
	// state store's buckets, as the status page's forms are).
	contactsWeb, stopContacts, err := startContacts(e, a, page.Service, log)
	if err != nil {
		return err
	}
	defer stopContacts()
	// Plans: /api/v1/plans and /api/v1/freeze, and the freeze and the
	// handful limit on lifecycle actions outside plans.
	plans, closePlans, err := newPlans(e, a)
	if err != nil {
		return err
	}
	defer closePlans()
	plans.Log = log
	// Plan events to their webhooks, and plans whose runner died (a crash,
	// a kill -9, a restart) run on here.
	wg.Go(func() { plans.DeliverEvents(e.ctx) })
	wg.Go(func() { plans.ResumeInterrupted(e.ctx, plan.Actor{Name: "lifeline serve", Role: state.RoleAdmin}, 0) })
	srv := &web.Server{Tenants: a.tenants, Ops: a.store, Auth: a.store, Registry: reg, Log: log, Status: page, Contacts: contactsWeb,
		Plans: &web.Plans{Service: plans, Background: e.ctx}, Backups: backups(a, repo)}
	fmt.Fprintf(e.stdout, "lifeline serving on http://%s/\n", ln.Addr())
	return web.Serve(e.ctx, ln, srv.Handler())
}

// servedAt points the public URLs that default to the configured listen
// address (status.public_url, and vault.public_url after it) at the address
// serve bound, which --listen or a ":0" port may have changed. URLs set in
// lifeline.yaml are kept: readers reach serve through them.
func servedAt(a *app, addr net.Addr) {
	def, at := "http://"+a.cfg.Listen, "http://"+addr.String()
	if a.cfg.Status.PublicURL != def {
		return
	}
	a.cfg.Status.PublicURL = at
	if a.cfg.Vault.PublicURL == def {
		a.cfg.Vault.PublicURL = at
	}
}

// expireRestoreTrash removes restores' trash once retention.deleted has
// passed (restore.Service.ExpireTrash): at start, then every hour.
func expireRestoreTrash(ctx context.Context, svc *restore.Service, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if _, err := svc.ExpireTrash(ctx); err != nil && ctx.Err() == nil {
			log.Warn("expiring restore trash failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resumeInterrupted finishes lifecycle operations whose runner died, so a
// crash never leaves a tenant half deleted for long, and returns the
// interrupted restores, which take longer and run on in the background.
func resumeInterrupted(ctx context.Context, a *app, log *slog.Logger) (restores []string) {
	ops, err := a.store.ListOperations(ctx, state.OpFilter{Status: state.OpRunning, Limit: 1000})
	if err != nil {
		log.Warn("listing interrupted operations failed", "err", err)
		return nil
	}
	for _, op := range ops {
		if op.Action == "restore" {
			if a.tenants.Interrupted(&op) {
				restores = append(restores, op.ID)
			}
			continue
		}
		if _, err := a.tenants.Resume(ctx, op.ID); err != nil {
			log.Warn("operation not resumed", "op", op.ID, "err", err)
		} else {
			log.Info("resumed interrupted operation", "op", op.ID)
		}
	}
	return restores
}

// resumeRestores finishes restores whose runner died
// (restore.Service.Resume: the request they were recorded with runs again).
func resumeRestores(ctx context.Context, svc *restore.Service, ids []string, log *slog.Logger) {
	for _, id := range ids {
		if rep, err := svc.Resume(ctx, id); err != nil {
			log.Warn("restore not resumed", "op", id, "err", err)
		} else {
			log.Info("resumed interrupted restore", "op", id, "status", rep.Status, "rows", rep.Rows)
		}
	}
}

// backups is the console's backup page over every product.
func backups(a *app, repo *backup.Repo) *web.Backups {
	b := &web.Backups{Repo: repo, BacklogLimit: a.cfg.Shipping.BacklogLimit}
	for _, p := range a.cfg.Products {
		b.Products = append(b.Products, p.Name)
	}
	return b
}
