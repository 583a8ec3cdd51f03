package main

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"lifeline/internal/demo"
	"lifeline/internal/productdb"
	"lifeline/internal/tenant"
)

// demoCmd is the one-command tour: it builds a sample SaaS, protects it,
// replays the April 2022 deletion against it, walks one tenant through the
// lifecycle and leaves `serve` running.
func demoCmd(e *env, args []string) error {
	fs := flags(e, "demo")
	dir := fs.String("dir", "lifeline-demo", "folder to build the demo in (must not hold a demo already)")
	n := fs.Int("tenants", 300, "how many tenants (sites) to generate")
	noServe := fs.Bool("no-serve", false, "exit after the tour instead of serving")
	listen := fs.String("listen", "", "address for serve (default 127.0.0.1:8080)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(e.stdout, format+"\n", args...) }
	step := func(title string) { say("\n== %s", title) }

	step("1. A multi-tenant SaaS")
	if err := demo.Generate(e.ctx, *dir, demo.Options{Tenants: *n}); err != nil {
		return err
	}
	e.configPath = filepath.Join(*dir, "lifeline.yaml")
	say("Built %d sites in two SQLite products, tracker (projects, issues, comments, attachments, and the app insight) and wiki (spaces, pages, versions), in %s.", *n, *dir)
	say("Every table is shared by all tenants; site_id says whose a row is.")

	step("2. lifeline protect")
	if err := protectCmd(e, nil); err != nil {
		return err
	}
	say("Guards, trash tables, change capture and lifeline_tenant_state are now inside each database.")

	step("2b. lifeline backup run: the first snapshot")
	if err := backupRun(e, nil); err != nil {
		return err
	}
	say("From now on every committed change is captured and shipped into the repository (serve does it every second).")

	a, err := openApp(e)
	if err != nil {
		return err
	}
	defer a.Close()
	tracker := a.tenants.Products[0]

	step("3. The April 2022 script, replayed")
	say("A maintenance script meant to remove the insight app was handed site IDs and ran in permanent mode:")
	victims := make([]string, 0, 20)
	for i := 1; i <= 20 && i*max(1, *n/20) <= *n; i++ {
		victims = append(victims, fmt.Sprint(i*max(1, *n/20)))
	}
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(*dir, "tracker.db"))
	if err != nil {
		return err
	}
	defer raw.Close()
	for _, stmt := range []string{
		"DELETE FROM sites WHERE id IN (" + strings.Join(victims, ",") + ")",
		"DELETE FROM issues WHERE site_id IN (" + strings.Join(victims, ",") + ")",
	} {
		say("  sql> %s", stmt)
		if _, err := raw.ExecContext(e.ctx, stmt); err != nil {
			say("  refused by the database: %v", err)
		} else {
			say("  !! the database accepted it")
		}
	}
	say("And through Lifeline, a site key where an app was expected:")
	_, err = a.tenants.Run(e.ctx, tenant.Request{Action: productdb.Deactivate, Target: "app:" + victims[0], Actor: "april-script", Reason: "remove insight"})
	say("  lifeline tenants deactivate app:%s\n  refused: %v", victims[0], err)

	step("3b. The same app removal as a reviewed plan")
	var customers []string // the plan adds the company's own sites itself
	for _, v := range victims {
		if atoi(v) > 3 {
			customers = append(customers, v)
		}
	}
	if err := demoPlans(e, a, customers, say); err != nil {
		return err
	}

	step("4. The proper way: deactivate → delete → undelete")
	key := victims[1]
	before, rows, err := demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", key)
	if err != nil {
		return err
	}
	say("Site %s (%s) has %d rows in tracker, digest %s.", key, demo.SiteName(atoi(key)), rows, before)
	for _, r := range []tenant.Request{
		{Action: productdb.Delete, Target: "site:" + key, Reason: "customer asked to close the site"},
		{Action: productdb.Deactivate, Target: "site:" + key},
		{Action: productdb.Delete, Target: "site:" + key, Reason: "customer asked to close the site"},
		{Action: productdb.Undelete, Target: "site:" + key, Reason: "customer changed their mind"},
		{Action: productdb.Reactivate, Target: "site:" + key},
	} {
		r.Actor = "demo"
		say("\n$ lifeline tenants %s %s", r.Action, r.Target)
		op, err := a.tenants.Run(e.ctx, r)
		if err != nil {
			say("refused: %v", err)
			continue
		}
		printOp(e, op)
	}
	after, rows, err := demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", key)
	if err != nil {
		return err
	}
	verdict := "identical, byte for byte"
	if after != before {
		verdict = "DIFFERENT"
	}
	say("\nSite %s is back with %d rows, digest %s: %s.", key, rows, after, verdict)

	step("4b. lifeline backup status")
	if err := backupRun(e, nil); err != nil {
		return err
	}
	if err := backupStatus(e, nil); err != nil {
		return err
	}

	step("5. April again, forced through below the guard limits, and restored")
	say("A buggy migration deletes and corrupts the rows of %d sites with raw SQL, one tenant per statement, below every limit:", len(victims[:10]))
	keys := victims[2:12]
	if len(keys) == 0 {
		keys = victims[:1]
	}
	digests := map[string]string{}
	for k := 1; k <= *n; k++ {
		key := fmt.Sprint(k)
		if digests[key], _, err = demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", key); err != nil {
			return err
		}
	}
	moment := time.Now().UTC()
	time.Sleep(20 * time.Millisecond)
	for _, k := range keys {
		for _, stmt := range []string{
			"DELETE FROM insight_links WHERE site_id = ?",
			"DELETE FROM insight_objects WHERE site_id = ?",
			"DELETE FROM comments WHERE site_id = ?",
			"UPDATE issues SET title = 'corrupted by migration', body = NULL WHERE site_id = ?",
		} {
			if _, err := raw.ExecContext(e.ctx, stmt, k); err != nil {
				return fmt.Errorf("the demo's raw script: %w", err)
			}
		}
	}
	say("  %d sites damaged; the database allowed it (each statement touched one tenant).", len(keys))
	if err := backupRun(e, nil); err != nil {
		return err
	}
	say("\n$ lifeline restore --tenants %s --to %s", strings.Join(keys, ","), moment.Format(time.RFC3339Nano))
	if err := restoreCmd(e, []string{"--tenants", strings.Join(keys, ","), "--to", moment.Format(time.RFC3339Nano), "--reason", "undo the April migration"}); err != nil {
		return err
	}
	same := 0
	for key, want := range digests {
		d, _, err := demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", key)
		if err != nil {
			return err
		}
		if d == want {
			same++
		}
	}
	say("%d of %d sites are exactly as they were before the script, byte for byte: the %d restored and every other one.", same, len(digests), len(keys))

	if *noServe {
		say("\nDone. Explore with: lifeline --config %s tenants list", e.configPath)
		return nil
	}
	step("6. lifeline serve")
	secret, _, err := a.store.CreateToken(e.ctx, "demo-admin", "admin")
	if err != nil {
		return err
	}
	say("An admin token for the API (shown once): %s", secret)
	at := orListen(*listen, a.cfg.Listen)
	say("Try: curl -H 'Authorization: Bearer %s' http://%s/api/v1/tenants/%s", secret, at, key)
	say("Watch backups live: sign in with that token at http://%s/console/incidents/login, then open /console/backups; the public status page is /", at)
	return serve(e, a, *listen)
}

func orListen(flagValue, cfg string) string {
	if flagValue != "" {
		return flagValue
	}
	return cfg
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
