package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/fault"
)

func backupCmd(e *env, args []string) error {
	return subcommand(e, "backup", args, map[string]func(*env, []string) error{
		"run": backupRun, "status": backupStatus, "verify": backupVerify, "list": backupList,
	})
}

// openRepo opens the backup repository named by `backups:` in the config.
func openRepo(e *env, a *app) (*backup.Repo, error) {
	blobs, err := blob.Open(e.ctx, a.cfg.Backups, a.cfg.Dir)
	if err != nil {
		return nil, err
	}
	if crash := crashPoint(e, "LIFELINE_TEST_CRASH_AFTER_UPLOAD"); crash != nil {
		blobs = crashAfterPut{blobs, crash}
	}
	key, err := a.cfg.LoadKey(e.getenv)
	if err != nil {
		return nil, err
	}
	r := &backup.Repo{Blobs: blobs, State: a.store, Key: key, RetainFor: a.cfg.Retention.Backups.D()}
	if key != nil {
		r.KeyID = backup.KeyID(key)
	}
	return backup.OpenRepo(e.ctx, r)
}

// startRepo is start for the backup commands: it also opens the repository.
func startRepo(e *env, fs *flag.FlagSet, args []string, open func(*env) (*app, error)) (*app, *backup.Repo, error) {
	a, _, err := start(e, fs, args, open)
	if err != nil {
		return nil, nil, err
	}
	repo, err := openRepo(e, a)
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, repo, nil
}

// shippers builds one shipper per product, each with its capture source.
func shippers(e *env, a *app, repo *backup.Repo) ([]*backup.Shipper, func(), error) {
	var out []*backup.Shipper
	closeAll := func() {
		for _, s := range out {
			_ = s.Source.Close()
		}
	}
	for _, p := range a.tenants.Products {
		src, err := capture.Open(e.ctx, p.DB, p.Layout, capture.Options{Log: a.log})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		out = append(out, &backup.Shipper{Repo: repo, Product: p.Name, Source: src, BacklogLimit: a.cfg.Shipping.BacklogLimit, Log: a.log,
			Window: a.cfg.Retention.Backups.D()})
	}
	return out, closeAll, nil
}

// backupRun ships everything pending once and exits: for cron and tests.
func backupRun(e *env, args []string) error {
	fs := flags(e, "backup run")
	asJSON := jsonFlag(fs)
	a, repo, err := startRepo(e, fs, args, openApp)
	if err != nil {
		return err
	}
	defer a.Close()
	ships, closeAll, err := shippers(e, a, repo)
	if err != nil {
		return err
	}
	defer closeAll()
	var results []backup.Shipped
	var failed error
	for _, s := range ships {
		res, err := s.Ship(e.ctx)
		if errors.Is(err, backup.ErrLeased) {
			// A serve process ships this product: nothing to do here.
			fmt.Fprintf(e.stderr, "%v\n", err)
			continue
		}
		// Maintained while this process still holds the lease (each change
		// renews it), then released at once, shipped or not, so a serve
		// takes over without waiting for the lease to expire.
		if err == nil {
			res.Compacted, res.Pruned, err = s.Maintain(e.ctx)
			if errors.Is(err, backup.ErrLeased) {
				// Another process took the lease over meanwhile: what was
				// shipped stays, and that process maintains from here.
				fmt.Fprintf(e.stderr, "%v\n", err)
				err = nil
			}
		}
		err = errors.Join(err, s.Release(e.ctx))
		results = append(results, res)
		if err != nil && failed == nil {
			failed = fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "shipping %s", s.Product)
		}
	}
	if *asJSON {
		if err := printJSON(e.stdout, map[string]any{"shipped": results}); err != nil {
			return err
		}
		return failed
	}
	for _, r := range results {
		line := fmt.Sprintf("%s: %d changes in %d segments (%s)", r.Product, r.Changes, r.Segments, bytesText(r.Bytes))
		if r.Snapshot != nil {
			line += fmt.Sprintf("; snapshot at position %d: %d rows of %d tenants (%s)", r.Snapshot.Last, r.Snapshot.Records, r.Snapshot.Tenants, bytesText(r.Snapshot.Size))
		}
		if r.Compacted != nil {
			line += fmt.Sprintf("; compacted into a snapshot at position %d", r.Compacted.Last)
		}
		if len(r.Pruned) > 0 {
			line += fmt.Sprintf("; pruned %d objects (older than the window, merged or superseded)", len(r.Pruned))
		}
		fmt.Fprintf(e.stdout, "%s; repository at position %d\n", line, r.Cursor.Pos)
	}
	return failed
}

func backupStatus(e *env, args []string) error {
	fs := flags(e, "backup status")
	asJSON := jsonFlag(fs)
	a, repo, err := startRepo(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	var all []backup.Status
	red := 0
	for _, p := range a.cfg.Products {
		st, err := repo.Status(e.ctx, p.Name, a.cfg.Shipping.BacklogLimit)
		if err != nil {
			return err
		}
		if st.Red {
			red++
		}
		all = append(all, st)
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"products": all})
	}
	for _, st := range all {
		health := "ok"
		if st.Red {
			health = "RED"
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", st.Product, health)
		fmt.Fprintf(e.stdout, "  last shipped   position %d at %s\n", st.LastPos, since(st.LastShipped))
		fmt.Fprintf(e.stdout, "  lag (RPO now)  %d changes waiting, oldest %s old\n", st.Backlog, st.Lag.Round(time.Millisecond))
		fmt.Fprintf(e.stdout, "  restorable     %s .. %s\n", since(st.Oldest), since(st.Newest))
		if st.Shipper != "" {
			fmt.Fprintf(e.stdout, "  shipped by     %s\n", st.Shipper)
		}
		fmt.Fprintf(e.stdout, "  objects        %d snapshots, %d segments, %s (compression %.1fx)\n", st.Snapshots, st.Segments, bytesText(st.Bytes), st.Ratio)
		if st.Snapshots == 0 {
			fmt.Fprintln(e.stdout, "  no snapshot yet: run `lifeline backup run` or `lifeline serve`")
		}
		if st.Error != "" {
			fmt.Fprintf(e.stdout, "  error since %s: %s\n", since(st.ErrorSince), st.Error)
		}
	}
	return nil
}

func backupList(e *env, args []string) error {
	fs := flags(e, "backup list")
	asJSON := jsonFlag(fs)
	product := fs.String("product", "", "only this product")
	a, repo, err := startRepo(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	// Read only: objects the catalog lacks are listed apart, with what
	// becomes of them, and left as they are.
	type unrecorded struct {
		backup.Object
		Fate string `json:"fate"`
	}
	var objs []backup.Object
	others := []unrecorded{}
	for _, p := range a.cfg.Products {
		if *product != "" && p.Name != *product {
			continue
		}
		o, err := repo.Objects(e.ctx, p.Name)
		if err != nil {
			return err
		}
		objs = append(objs, o...)
		adopt, superseded, strays, err := repo.Unrecorded(e.ctx, p.Name)
		if err != nil {
			return err
		}
		for _, u := range adopt {
			others = append(others, unrecorded{u, "not recorded yet: the next `lifeline backup run` (or serve's next round) records it"})
		}
		for _, u := range superseded {
			others = append(others, unrecorded{u, "superseded: maintenance deletes it once it is a day old"})
		}
		for _, k := range strays {
			others = append(others, unrecorded{backup.Object{Key: k, Product: p.Name}, "not a repository object: nothing reads or deletes it"})
		}
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"objects": objs, "unrecorded": others})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tPOSITIONS\tCOMMITTED\tRECORDS\tTENANTS\tSIZE")
	for _, o := range objs {
		fmt.Fprintf(tw, "%s\t%s\t%d-%d\t%s .. %s\t%d\t%d\t%s\n", o.Key, o.KindName, o.First, o.Last, since(o.FirstTime), since(o.LastTime), o.Records, o.Tenants, bytesText(o.Size))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(others) > 0 {
		fmt.Fprintln(e.stdout, "\nIn the blob store but not in the catalog:")
		for _, u := range others {
			fmt.Fprintf(e.stdout, "  %s (%s): %s\n", u.Key, bytesText(u.Size), u.Fate)
		}
	}
	return nil
}

// backupVerify reads every object and changes nothing; any problem exits
// 2, naming each and what repairs it.
func backupVerify(e *env, args []string) error {
	fs := flags(e, "backup verify")
	asJSON := jsonFlag(fs)
	a, repo, err := startRepo(e, fs, args, openStore)
	if err != nil {
		return err
	}
	defer a.Close()
	type result struct {
		Product  string           `json:"product"`
		Checked  int              `json:"checked"`
		Problems []backup.Problem `json:"problems"`
	}
	var all []result
	var problems []backup.Problem
	for _, p := range a.cfg.Products {
		n, ps, err := repo.Verify(e.ctx, p.Name)
		if err != nil {
			return err
		}
		all = append(all, result{p.Name, n, ps})
		problems = append(problems, ps...)
	}
	if *asJSON {
		if err := printJSON(e.stdout, map[string]any{"products": all, "ok": len(problems) == 0}); err != nil {
			return err
		}
	} else {
		for _, r := range all {
			fmt.Fprintf(e.stdout, "%s: %d objects checked, %d problems\n", r.Product, r.Checked, len(r.Problems))
			for _, p := range r.Problems {
				fmt.Fprintf(e.stdout, "  %s: %s\n", orDash(p.Key), strings.ReplaceAll(p.What, "\n", "\n    "))
				if p.Fix != "" {
					fmt.Fprintf(e.stdout, "    fix: %s\n", p.Fix)
				}
			}
		}
	}
	return backup.VerifyError(problems)
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// crashAfterPut dies right after an object became durable: before the
// catalog records it and before the source forgets its changes.
type crashAfterPut struct {
	blob.Store
	crash func()
}

func (c crashAfterPut) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	err := c.Store.Put(ctx, key, r, size, retainUntil)
	if err == nil {
		c.crash()
	}
	return err
}
