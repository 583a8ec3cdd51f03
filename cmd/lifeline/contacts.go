package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/time/rate"

	"lifeline/internal/blob"
	"lifeline/internal/contacts"
	"lifeline/internal/fault"
	"lifeline/internal/notify"
	"lifeline/internal/web"
)

func contactsCmd(e *env, args []string) error {
	return subcommand(e, "contacts", args, map[string]func(*env, []string) error{
		"sync": contactsSync, "import": contactsImport, "lookup": contactsLookup, "for": contactsFor,
		"verify": contactsVerify, "report": contactsReport, "erase": contactsErase, "restore": contactsRestore,
	})
}

// vault is the contacts vault opened for one command.
type vault struct {
	app   *app
	store *contacts.Store
	svc   *contacts.Service
	close []func()
}

func (v *vault) Close() {
	for i := len(v.close) - 1; i >= 0; i-- {
		v.close[i]()
	}
}

// openVault opens the vault with what it needs: the state store (erasure
// ledger, audit log), the backup repository, the mail server and, when
// products is set, the product databases. Reads pass products=false: they
// still use the products for live tenant states when they can be opened,
// and otherwise (a product database down or lost, which is when the vault
// matters most) fall back to the states the last sync recorded.
func openVault(e *env, products bool) (*vault, error) {
	a, err := openApp(e)
	if err != nil {
		if products {
			return nil, err
		}
		if a, err = openStore(e); err != nil {
			return nil, err
		}
		fmt.Fprintf(e.stderr, "note: the product databases cannot be read, so tenant states are those the last sync recorded\n")
	}
	v := &vault{app: a, close: []func(){a.Close}}
	cfg, err := vaultConfig(e, a)
	if err == nil {
		v.store, err = contacts.OpenStore(e.ctx, a.cfg.Vault.Database, a.cfg.Dir)
	}
	if err != nil {
		v.Close()
		return nil, err
	}
	v.close = append(v.close, func() { _ = v.store.Close() })
	cfg.Store = v.store
	if cfg.Mailer != nil {
		if c, ok := cfg.Mailer.(io.Closer); ok {
			v.close = append(v.close, func() { _ = c.Close() })
		}
	}
	if v.svc, err = contacts.New(cfg); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// vaultConfig is the contacts.Config of lifeline.yaml, without the store.
func vaultConfig(e *env, a *app) (contacts.Config, error) {
	vc := a.cfg.Vault
	cfg := contacts.Config{Ledger: a.store, Retention: a.cfg.Retention.Backups.D(), LinkBase: vc.PublicURL, LinkTTL: vc.LinkTTL.D(),
		StaleAfter: vc.StaleAfter.D(), MaxRemoval: float64(vc.MaxRemoval), Log: a.log}
	if a.tenants != nil {
		cfg.Directory = a.tenants
	}
	var err error
	if cfg.Blobs, err = blob.Open(e.ctx, a.cfg.Backups, a.cfg.Dir); err != nil {
		return cfg, err
	}
	if cfg.Key, err = a.cfg.LoadKey(e.getenv); err != nil {
		return cfg, err
	}
	if cfg.LinkSecret, err = a.cfg.LinkSecret(e.getenv); err != nil {
		return cfg, err
	}
	if m := a.cfg.SMTP; m.Host != "" {
		pw, err := a.cfg.SMTPPassword(e.getenv)
		if err != nil {
			return cfg, err
		}
		s, err := notify.NewSMTPSender(notify.SMTPConfig{Host: m.Host, Port: m.Port, From: m.From, Username: m.Username, Password: pw, TLS: m.TLS})
		if err != nil {
			return cfg, err
		}
		cfg.Mailer = &contactsMailer{s: s, pace: rate.NewLimiter(rate.Limit(m.Rate), 1)}
	}
	return cfg, nil
}

// contactsMailer sends verification emails through notify's SMTP sender,
// the one mail path of Lifeline, at the server's configured rate. A
// permanent refusal becomes contacts.ErrUndeliverable: a bounce.
type contactsMailer struct {
	s    *notify.SMTPSender
	pace *rate.Limiter
}

func (m *contactsMailer) Send(ctx context.Context, to, subject, text string) error {
	if err := m.pace.Wait(ctx); err != nil {
		return err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	msg := notify.Message{ID: "contacts-verify." + hex.EncodeToString(b[:]) + "@" + m.s.Domain(), To: to, Subject: subject, Text: text}
	err := m.s.Send(ctx, msg, func(context.Context) error { return nil })
	if notify.IsPermanent(err) {
		return fmt.Errorf("%w: %v", contacts.ErrUndeliverable, err)
	}
	return err
}

func (m *contactsMailer) Close() error { return m.s.Close() }

// contactSources turns the config's contacts: entries into sync sources
// over the opened product databases. Each is named sync:PRODUCT (with #N
// from the second query of one product on), and a sync only ever removes
// links of its own source.
func contactSources(a *app) []contacts.Source {
	var out []contacts.Source
	seen := map[string]int{}
	for _, c := range a.cfg.Contacts {
		seen[c.Product]++
		name := "sync:" + c.Product
		if n := seen[c.Product]; n > 1 {
			name += fmt.Sprintf("#%d", n)
		}
		for _, p := range a.tenants.Products {
			if p.Name == c.Product {
				out = append(out, contacts.Source{Name: name, Product: p.Name, DB: p.DB.SQL(), Query: c.Query})
			}
		}
	}
	return out
}

// backupVault exports the vault after a change, so the CLI alone (from
// cron, without serve) keeps the repository current. A failure is a
// warning: the change stands, and the next export catches up.
func backupVault(e *env, v *vault) {
	res, err := v.svc.Backup(e.ctx)
	switch {
	case err != nil:
		fmt.Fprintf(e.stderr, "warning: the vault changed but was not exported to the backup repository: %v\n  hint: `lifeline serve` retries every few seconds, as does the next contacts command\n", err)
	case !res.Skipped:
		fmt.Fprintf(e.stderr, "vault exported to %s\n", res.Key)
	}
}

// vaultCommand is what every contacts subcommand shares: its flags with
// --json and --actor, and the vault it opens once its arguments check out.
type vaultCommand struct {
	*flag.FlagSet
	json  *bool
	actor *string
}

func newVaultCommand(e *env, name, actorDoc string) *vaultCommand {
	fs := flags(e, "contacts "+name)
	return &vaultCommand{FlagSet: fs, json: jsonFlag(fs), actor: fs.String("actor", "", actorDoc)}
}

// open parses args, refuses them with usage unless valid accepts the
// positionals, and opens the vault (with the product databases when
// products is set). The caller closes the vault.
func (c *vaultCommand) open(e *env, args []string, products bool, usage string, valid func(pos []string) bool) (*vault, []string, error) {
	return startArgs(e, c.FlagSet, args, func(e *env) (*vault, error) { return openVault(e, products) }, usage, valid)
}

// who is the actor recorded for this command.
func (c *vaultCommand) who(e *env) string { return actor(e, *c.actor) }

func contactsSync(e *env, args []string) error {
	c := newVaultCommand(e, "sync", "who is syncing (default $LIFELINE_ACTOR or user@host)")
	confirm := c.Bool("confirm", false, "allow removing more than vault.max_removal of a source's contacts")
	dry := c.Bool("dry-run", false, "report what would change, change nothing")
	v, _, err := c.open(e, args, true, "usage: lifeline contacts sync [--confirm] [--dry-run] [--json]", noArgs)
	if err != nil {
		return err
	}
	defer v.Close()
	res, syncErr := v.svc.Sync(e.ctx, contactSources(v.app), contacts.SyncOptions{Actor: c.who(e), Confirm: *confirm, DryRun: *dry})
	if !*dry {
		backupVault(e, v)
	}
	if *c.json {
		if err := printJSON(e.stdout, map[string]any{"sources": res}); err != nil {
			return err
		}
	} else {
		printChanges(e, res)
	}
	return syncErr
}

func printChanges(e *env, list []*contacts.Changes) {
	for _, c := range list {
		verb := "changed"
		if c.DryRun {
			verb = "would change"
		}
		fmt.Fprintf(e.stdout, "%s: %d records; %s: %d contacts added, %d updated, %d spellings merged; links %d added, %d restored, %d removed, %d held (tenant not active); %d skipped (erased), %d rejected\n",
			c.Source, c.Records, verb, c.ContactsAdded, c.ContactsUpdated, c.Merged, c.LinksAdded, c.LinksRestored, c.LinksRemoved, c.LinksHeld, c.SkippedErased, len(c.Rejected))
		for _, r := range c.Rejected[:min(len(c.Rejected), 10)] {
			fmt.Fprintf(e.stdout, "  rejected row %d (%s): %s\n", r.Line, r.Email, r.Reason)
		}
		for _, r := range c.Removals {
			fmt.Fprintf(e.stdout, "  removal: %s\n", r)
		}
	}
}

func contactsImport(e *env, args []string) error {
	c := newVaultCommand(e, "import", "who is importing (default $LIFELINE_ACTOR or user@host)")
	dry := c.Bool("dry-run", false, "check the file and report what would change, change nothing")
	v, pos, err := c.open(e, args, false, "usage: lifeline contacts import FILE.csv [--dry-run] [--json]; the header may name "+strings.Join(contacts.ImportColumns, ","), oneArg)
	if err != nil {
		return err
	}
	defer v.Close()
	f, err := os.Open(pos[0])
	if err != nil {
		return fault.Wrap(err, fault.Invalid, "give the path of a CSV file", "cannot read %s", pos[0])
	}
	defer f.Close()
	ch, err := v.svc.ImportCSV(e.ctx, f, contacts.ImportOptions{Actor: c.who(e), Source: "import:" + filepath.Base(pos[0]), DryRun: *dry})
	if err != nil {
		return err
	}
	if !*dry {
		backupVault(e, v)
	}
	if *c.json {
		return printJSON(e.stdout, ch)
	}
	printChanges(e, []*contacts.Changes{ch})
	return nil
}

func contactsLookup(e *env, args []string) error {
	c := newVaultCommand(e, "lookup", "who is looking (recorded in the audit log)")
	v, pos, err := c.open(e, args, false, "usage: lifeline contacts lookup EMAIL|@DOMAIN [--json]", oneArg)
	if err != nil {
		return err
	}
	defer v.Close()
	res, err := v.svc.Lookup(e.ctx, pos[0], c.who(e))
	if err != nil {
		return err
	}
	if *c.json {
		return printJSON(e.stdout, res)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tNAME\tROLES\tVERIFIED\tSTATUS")
	for _, c := range res.Contacts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Email, orDash(c.Name), orDash(joinRoles(c.Roles)), since(c.VerifiedAt), contactStatus(c))
	}
	tw.Flush()
	if len(res.Accounts) > 0 {
		fmt.Fprintln(e.stdout, "\naccounts:")
		for _, a := range res.Accounts {
			fmt.Fprintf(e.stdout, "  %s  %s  tenants %s\n", a.ID, orDash(a.Name), orDash(strings.Join(a.Tenants, ",")))
		}
	}
	fmt.Fprintln(e.stdout, "\ntenants:")
	for _, t := range res.Tenants {
		fmt.Fprintf(e.stdout, "  %s  %s  %s\n", t.Key, orDash(t.Name), tenantStates(t))
	}
	return nil
}

func joinRoles(rs []contacts.Role) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return strings.Join(out, ",")
}

func contactStatus(c contacts.Contact) string {
	var s []string
	if c.Removed {
		s = append(s, "removed")
	}
	if !c.BouncedAt.IsZero() {
		s = append(s, "bounced")
	}
	if c.Stale {
		s = append(s, "stale")
	}
	if len(s) == 0 {
		return "ok"
	}
	return strings.Join(s, ",")
}

func tenantStates(t contacts.Tenant) string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(t.States)) {
		parts = append(parts, p+":"+t.States[p])
	}
	s := strings.Join(parts, " ")
	if !t.StatesAsOf.IsZero() {
		s += " (as recorded " + since(t.StatesAsOf) + ")"
	}
	return orDash(s)
}

func contactsFor(e *env, args []string) error {
	c := newVaultCommand(e, "for", "who is asking (recorded in the audit log)")
	all := c.Bool("all", false, "include contacts whose links were removed")
	v, pos, err := c.open(e, args, false, "usage: lifeline contacts for site:KEY [--all] [--json]", oneArg)
	if err != nil {
		return err
	}
	defer v.Close()
	res, err := v.svc.For(e.ctx, pos[0], c.who(e), *all)
	if err != nil {
		return err
	}
	if *c.json {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "site:%s  %s  %s\n", res.Tenant.Key, orDash(res.Tenant.Name), tenantStates(res.Tenant))
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tEMAIL\tNAME\tROLE\tVIA\tVERIFIED\tSTATUS")
	for i, c := range res.Contacts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, c.Email, orDash(c.Name), c.Role, c.Via, since(c.VerifiedAt), contactStatus(c.Contact))
	}
	return tw.Flush()
}

func contactsVerify(e *env, args []string) error {
	c := newVaultCommand(e, "verify", "who is sending (default $LIFELINE_ACTOR or user@host)")
	staleOnly := c.Bool("stale", false, "write to every contact not verified within vault.stale_after")
	dry := c.Bool("dry-run", false, "list whom it would write to, send nothing")
	v, pos, err := c.open(e, args, false, "usage: lifeline contacts verify --stale | EMAIL… [--dry-run] [--json]",
		func(pos []string) bool { return *staleOnly || someArgs(pos) })
	if err != nil {
		return err
	}
	defer v.Close()
	if v.app.cfg.SMTP.Host == "" && !*dry {
		return fault.New(fault.Refused, "configure smtp: in lifeline.yaml (the mail server notices use), or try --dry-run",
			"no mail server is configured, so no verification email can be sent")
	}
	res, err := v.svc.SendVerifications(e.ctx, contacts.VerifyOptions{Actor: c.who(e), Stale: *staleOnly, Emails: pos, DryRun: *dry})
	if err != nil {
		return err
	}
	if !*dry {
		backupVault(e, v)
	}
	if *c.json {
		return printJSON(e.stdout, res)
	}
	verb := "sent"
	if *dry {
		verb = "would send"
	}
	fmt.Fprintf(e.stdout, "%s %d verification emails; %d bounced; %d failed (tried again next time); %d have a valid link already\n", verb, len(res.Sent), len(res.Bounced), len(res.Failed), res.Pending)
	for _, f := range res.Failed {
		fmt.Fprintf(e.stdout, "  failed: %s: %s\n", f.Email, f.Error)
	}
	if len(res.Failed) > 0 {
		return fault.New(fault.Unavailable, "check the mail server (smtp: in lifeline.yaml), then run the command again: only those not sent are retried", "%d verification emails could not be sent", len(res.Failed))
	}
	return nil
}

func contactsReport(e *env, args []string) error {
	c := newVaultCommand(e, "report", "who is asking (recorded in the audit log)")
	v, _, err := c.open(e, args, false, "usage: lifeline contacts report [--json]", noArgs)
	if err != nil {
		return err
	}
	defer v.Close()
	rep, err := v.svc.Report(e.ctx, c.who(e))
	if err != nil {
		return err
	}
	if *c.json {
		return printJSON(e.stdout, rep)
	}
	fmt.Fprintf(e.stdout, "tenants reachable: %d of %d (%.1f%%)\n", rep.Reachable, rep.Tenants, 100*rep.ReachableShare)
	fmt.Fprintf(e.stdout, "contacts: %d active, %d not verified within %s\n", rep.Contacts, rep.Stale, days(v.svc.StaleAfter()))
	fmt.Fprintf(e.stdout, "tenants without a verified admin: %d\n", len(rep.NoVerifiedAdmin))
	for _, t := range rep.NoVerifiedAdmin[:min(len(rep.NoVerifiedAdmin), 20)] {
		fmt.Fprintf(e.stdout, "  %s  %s  %s\n", t.Key, orDash(t.Name), tenantStates(t))
	}
	if n := len(rep.NoVerifiedAdmin); n > 20 {
		fmt.Fprintf(e.stdout, "  … and %d more (--json lists all)\n", n-20)
	}
	fmt.Fprintf(e.stdout, "bounced contacts: %d\n", len(rep.Bounced))
	for _, c := range rep.Bounced {
		fmt.Fprintf(e.stdout, "  %s  %s  %s\n", c.Email, since(c.BouncedAt), c.BounceReason)
	}
	return nil
}

func contactsErase(e *env, args []string) error {
	c := newVaultCommand(e, "erase", "who is erasing (default $LIFELINE_ACTOR or user@host)")
	reason := c.String("reason", "", "why (the request's reference); required, goes into the erasure ledger")
	v, pos, err := c.open(e, args, false, `usage: lifeline contacts erase EMAIL --reason "why"`, oneArg)
	if err != nil {
		return err
	}
	defer v.Close()
	res, err := v.svc.Erase(e.ctx, pos[0], *reason, c.who(e))
	if err != nil {
		return err
	}
	backupVault(e, v)
	if *c.json {
		return printJSON(e.stdout, res)
	}
	where := "was not in the vault; the erasure is recorded so that it stays out"
	if res.InVault {
		where = fmt.Sprintf("erased from the vault with %d links and %d history entries", res.Links, res.History)
	}
	fmt.Fprintf(e.stdout, "%s %s (erasure ledger #%d)\n", res.Email, where, res.LedgerID)
	return nil
}

func contactsRestore(e *env, args []string) error {
	c := newVaultCommand(e, "restore", "who is restoring (default $LIFELINE_ACTOR or user@host)")
	from := c.String("from", "", "the export to restore (default: the newest); see --list")
	list := c.Bool("list", false, "list the exports in the backup repository")
	dry := c.Bool("dry-run", false, "read and check the export, change nothing")
	fresh := c.Bool("fresh", false, "restore nothing: start an empty vault although older exports exist")
	v, _, err := c.open(e, args, false, "usage: lifeline contacts restore [--from KEY] [--list] [--dry-run] [--fresh] [--json]", noArgs)
	if err != nil {
		return err
	}
	defer v.Close()
	if *list {
		exports, err := v.svc.Exports(e.ctx)
		if err != nil {
			return err
		}
		if *c.json {
			return printJSON(e.stdout, map[string]any{"exports": exports})
		}
		for _, x := range exports {
			fmt.Fprintf(e.stdout, "%s  revision %d  %d bytes\n", x.Key, x.Revision, x.Size)
		}
		return nil
	}
	res, err := v.svc.Restore(e.ctx, contacts.RestoreOptions{Actor: c.who(e), From: *from, DryRun: *dry, Fresh: *fresh})
	if err != nil {
		return err
	}
	if !*dry {
		backupVault(e, v)
	}
	if *c.json {
		return printJSON(e.stdout, res)
	}
	switch {
	case res.Fresh:
		fmt.Fprintln(e.stdout, "the vault starts empty; older exports stay in the repository")
	case res.DryRun:
		fmt.Fprintf(e.stdout, "%s (revision %d, exported %s) is readable: %d contacts, %d accounts, %d tenants, %d history entries\n",
			res.Key, res.Revision, since(res.ExportedAt), res.Contacts, res.Accounts, res.Tenants, res.History)
	default:
		fmt.Fprintf(e.stdout, "restored %s (revision %d, exported %s): %d contacts, %d accounts, %d tenants, %d history entries; %d erasures re-applied\n",
			res.Key, res.Revision, since(res.ExportedAt), res.Contacts, res.Accounts, res.Tenants, res.History, res.Erasures)
	}
	return nil
}

// startContacts runs the vault inside `lifeline serve`: it syncs every
// vault.sync_every, exports every change to the backup repository within
// seconds, and returns the HTTP side for web.Server.Contacts. stop ends the
// background work and closes the vault. limits holds the verification
// page's rate-limit buckets (the state store's, shared by every serve).
func startContacts(e *env, a *app, limits web.RateBuckets, log *slog.Logger) (*web.Contacts, func(), error) {
	cfg, err := vaultConfig(e, a)
	if err != nil {
		return nil, nil, err
	}
	store, err := contacts.OpenStore(e.ctx, a.cfg.Vault.Database, a.cfg.Dir)
	if err != nil {
		return nil, nil, err
	}
	cfg.Store, cfg.Log = store, log
	svc, err := contacts.New(cfg)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	sources := func() []contacts.Source { return contactSources(a) }
	if len(a.cfg.Contacts) == 0 {
		sources = nil
	}
	wg.Go(func() { svc.Run(ctx, contacts.RunOptions{Sources: sources, SyncEvery: a.cfg.Vault.SyncEvery.D()}) })
	stop := func() {
		cancel()
		wg.Wait()
		// One last export, so a change made just before the stop is kept.
		final, done := context.WithTimeout(context.WithoutCancel(e.ctx), 10*time.Second)
		if _, err := svc.Backup(final); err != nil {
			log.Warn("contacts: final export failed", "err", err)
		}
		done()
		if c, ok := cfg.Mailer.(io.Closer); ok {
			_ = c.Close()
		}
		_ = store.Close()
	}
	return &web.Contacts{Service: svc, Log: log, Limits: limits}, stop, nil
}

// days shows a duration of whole days as "180 days".
func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
