package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"lifeline/internal/config"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// app is everything a command may need, opened from the config.
type app struct {
	cfg     *config.Config
	store   *state.Store
	dbs     []*productdb.DB
	tenants *tenant.Service
	log     *slog.Logger
}

func (a *app) Close() {
	for _, db := range a.dbs {
		_ = db.Close()
	}
	if a.store != nil {
		_ = a.store.Close()
	}
}

// openStore loads the config and opens the state store only.
func openStore(e *env) (*app, error) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(e.ctx, cfg.State, cfg.Dir, nil)
	if err != nil {
		return nil, err
	}
	return &app{cfg: cfg, store: store, log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, nil
}

// openApp opens the state store and every product database, with each
// product's layout as recorded by `lifeline protect`.
func openApp(e *env) (*app, error) {
	a, err := openStore(e)
	if err != nil {
		return nil, err
	}
	svc := &tenant.Service{Store: a.store, Retention: a.cfg.Retention.Deleted.D(), Log: a.log, Owner: tenant.DefaultOwner()}
	for _, p := range a.cfg.Products {
		db, err := productdb.Open(e.ctx, p.Database, a.cfg.Dir)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.dbs = append(a.dbs, db)
		layout, err := tenant.Layout(e.ctx, a.store, spec(p))
		if err != nil {
			a.Close()
			return nil, err
		}
		svc.Products = append(svc.Products, &tenant.Product{Name: p.Name, DB: db, Layout: layout})
	}
	svc.BeforeStep = crashHook(e)
	a.tenants = svc
	return a, nil
}

// crashHook is the BeforeStep hook of LIFELINE_TEST_CRASH_BEFORE_STEP
// (kill -9) and LIFELINE_TEST_INTERRUPT_BEFORE_STEP (Ctrl-C), for
// lifecycle operations and restores alike; nil unless one is set.
func crashHook(e *env) func(state.Step) {
	crash := crashPoint(e, "LIFELINE_TEST_CRASH_BEFORE_STEP")
	interrupt := signalPoint(e, "LIFELINE_TEST_INTERRUPT_BEFORE_STEP", syscall.SIGINT)
	if crash == nil && interrupt == nil {
		return nil
	}
	return func(state.Step) {
		for _, f := range []func(){crash, interrupt} {
			if f != nil {
				f()
			}
		}
	}
}

// crashPoint is fault injection for the crash tests: with the environment
// variable name set to N, the Nth call of the returned function kills the
// process with SIGKILL, exactly as kill -9 would. It is nil unless the
// variable is set. LIFELINE_TEST_CRASH_BEFORE_STEP counts operation steps,
// LIFELINE_TEST_CRASH_AFTER_UPLOAD counts backup objects made durable.
func crashPoint(e *env, name string) func() { return signalPoint(e, name, syscall.SIGKILL) }

// signalPoint is crashPoint with any signal: the Nth call sends the process
// sig, then waits until the signal has cancelled the command's context (as
// Ctrl-C does through main's handler), so that what follows the call sees
// it; after SIGKILL nothing follows.
func signalPoint(e *env, name string, sig syscall.Signal) func() {
	n, err := strconv.Atoi(e.getenv(name))
	if err != nil || n < 1 {
		return nil
	}
	seen := 0
	return func() {
		if seen++; seen == n {
			_ = syscall.Kill(os.Getpid(), sig)
			<-e.ctx.Done()
		}
	}
}

// spec turns a product's config into what productdb understands.
func spec(p config.Product) productdb.Spec {
	return productdb.Spec{
		Product:      p.Name,
		TenantColumn: p.TenantColumn,
		TenantsTable: p.TenantsTable,
		NameColumn:   p.NameColumn,
		Tables:       p.Tables,
		Apps:         p.Apps,
		Limits: productdb.Limits{
			RowsPerStatement:    p.Guard.MaxRowsPerStatement,
			RowsPerTransaction:  p.Guard.MaxRowsPerTransaction,
			TenantsPerStatement: p.Guard.MaxTenantsPerStatement,
		},
	}
}

func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
