package contacts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/contacts/exportfile"
	"lifeline/internal/fault"
)

// ExportPrefix is where the vault's exports live in the backup repository.
// Keys sort by time: contacts/exports/20260301T120000.000000Z-r000000000042.llcv
const ExportPrefix = "contacts/exports/"

const exportTimeLayout = "20060102T150405.000000Z"

// ExportInfo describes one export object.
type ExportInfo struct {
	Key      string    `json:"key"`
	At       time.Time `json:"at"`
	Revision int64     `json:"revision"`
	Size     int64     `json:"size"`
}

func exportKey(at time.Time, rev int64) string {
	return fmt.Sprintf("%s%s-r%012d.llcv", ExportPrefix, at.UTC().Format(exportTimeLayout), rev)
}

func parseExportKey(key string) (time.Time, int64, bool) {
	name, ok := strings.CutPrefix(key, ExportPrefix)
	if !ok {
		return time.Time{}, 0, false
	}
	name, ok = strings.CutSuffix(name, ".llcv")
	stamp, revText, ok2 := strings.Cut(name, "-r")
	if !ok || !ok2 {
		return time.Time{}, 0, false
	}
	at, err := time.Parse(exportTimeLayout, stamp)
	rev, err2 := strconv.ParseInt(revText, 10, 64)
	if err != nil || err2 != nil {
		return time.Time{}, 0, false
	}
	return at, rev, true
}

func (s *Service) blobs() (blob.Store, error) {
	if s.cfg.Blobs == nil {
		return nil, fault.New(fault.Invalid, "set backups: in lifeline.yaml", "no backup repository is configured for the contacts vault")
	}
	return s.cfg.Blobs, nil
}

// Exports lists the export objects in the repository, oldest first.
// Objects under the prefix that are not exports are ignored.
func (s *Service) Exports(ctx context.Context) ([]ExportInfo, error) {
	bs, err := s.blobs()
	if err != nil {
		return nil, err
	}
	var out []ExportInfo
	err = bs.List(ctx, ExportPrefix, func(in blob.Info) error {
		if at, rev, ok := parseExportKey(in.Key); ok {
			out = append(out, ExportInfo{Key: in.Key, At: at, Revision: rev, Size: in.Size})
		}
		return nil
	})
	return out, err
}

// BackupResult says what Backup did.
type BackupResult struct {
	Key      string `json:"key,omitempty"`
	Revision int64  `json:"revision"`
	Size     int    `json:"size,omitempty"`
	// Skipped: nothing changed since the last export.
	Skipped bool `json:"skipped"`
	Pruned  int  `json:"pruned"`
}

// Backup exports the whole vault to the repository if it changed since the
// last export, then thins old exports (see prune). Run calls it every few
// seconds, and the CLI after every change, so the repository is never more
// than a minute behind. A vault whose origin is not recorded yet (new, and
// possibly awaiting a restore) is not exported: it must never become the
// newest export.
func (s *Service) Backup(ctx context.Context) (*BackupResult, error) {
	bs, err := s.blobs()
	if err != nil {
		return nil, err
	}
	var d *dump
	var exported int64
	err = s.store.read(ctx, func(t *tx) error {
		origin, err := t.meta("origin")
		if err != nil {
			return err
		}
		rev, err := t.revision()
		if err != nil {
			return err
		}
		if v, err := t.meta("exported_revision"); err != nil {
			return err
		} else if v != "" {
			exported, _ = strconv.ParseInt(v, 10, 64)
		}
		if origin == "" || rev == exported {
			return nil
		}
		d, err = readDump(t, rev)
		return err
	})
	if err != nil {
		return nil, err
	}
	if d == nil {
		return &BackupResult{Revision: exported, Skipped: true}, nil
	}
	d.ExportedAt = s.now()
	data, err := encodeArchive(d, s.cfg.Key)
	if err != nil {
		return nil, err
	}
	key := exportKey(d.ExportedAt, d.Revision)
	if err := bs.Put(ctx, key, bytes.NewReader(data), int64(len(data)), time.Time{}); err != nil && !errors.Is(err, blob.ErrExists) {
		return nil, err
	}
	_, err = s.store.write(ctx, s.now(), false, func(t *tx) error {
		return t.setMeta("exported_revision", strconv.FormatInt(d.Revision, 10))
	})
	if err != nil {
		return nil, err
	}
	res := &BackupResult{Key: key, Revision: d.Revision, Size: len(data)}
	if res.Pruned, err = s.prune(ctx); err != nil {
		s.log.Warn("contacts: thinning old exports failed; they stay", "err", err)
	}
	s.log.Info("contacts vault exported", "key", key, "revision", d.Revision, "bytes", len(data))
	return res, nil
}

// readDump reads every table in one snapshot.
func readDump(t *tx, rev int64) (*dump, error) {
	d := &dump{Format: dumpFormat, Version: ArchiveVersion, Revision: rev}
	var err error
	if d.VaultID, err = t.meta("vault_id"); err != nil {
		return nil, err
	}
	if d.Accounts, err = load[accountRow](t, "SELECT "+accountCols+" FROM accounts ORDER BY id"); err != nil {
		return nil, err
	}
	if d.Tenants, err = load[tenantRow](t, "SELECT "+tenantCols+" FROM tenants ORDER BY tenant_key"); err != nil {
		return nil, err
	}
	if d.Contacts, err = load[contactRow](t, "SELECT "+contactCols+" FROM contacts ORDER BY id"); err != nil {
		return nil, err
	}
	if d.Aliases, err = load[aliasRow](t, "SELECT "+aliasCols+" FROM aliases ORDER BY email"); err != nil {
		return nil, err
	}
	if d.Links, err = load[linkRow](t, "SELECT "+linkCols+" FROM links ORDER BY contact_id, scope, scope_key, role, source"); err != nil {
		return nil, err
	}
	if d.History, err = load[historyRow](t, "SELECT "+historyCols+" FROM history ORDER BY seq"); err != nil {
		return nil, err
	}
	if d.Erased, err = load[erasedRow](t, "SELECT "+erasedCols+" FROM erased ORDER BY hash"); err != nil {
		return nil, err
	}
	return d, nil
}

// prune thins the exports: all of the last hour are kept, then the newest
// of each hour for a day, then the newest of each day up to Retention; the
// newest export is always kept. Objects under retention are left alone.
func (s *Service) prune(ctx context.Context) (int, error) {
	list, err := s.Exports(ctx)
	if err != nil || len(list) < 2 {
		return 0, err
	}
	now := s.now()
	seen := map[string]bool{}
	n := 0
	for i := len(list) - 2; i >= 0; i-- { // the newest (last) is always kept
		e := list[i]
		age := now.Sub(e.At)
		var bucket string
		switch {
		case age <= time.Hour:
			continue
		case age > s.cfg.Retention:
			bucket = "" // delete
		case age <= 24*time.Hour:
			bucket = "h" + e.At.Truncate(time.Hour).Format(time.RFC3339)
		default:
			bucket = "d" + e.At.Format("2006-01-02")
		}
		if bucket != "" && !seen[bucket] {
			seen[bucket] = true
			continue
		}
		switch err := s.cfg.Blobs.Delete(ctx, e.Key); {
		case errors.Is(err, blob.ErrRetained):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}

// RestoreOptions control a restore.
type RestoreOptions struct {
	Actor string
	// From names the export to restore; "" takes the newest.
	From string
	// DryRun reads and checks the export and changes nothing.
	DryRun bool
	// Fresh restores nothing: it marks an empty vault as deliberately new,
	// so writes are allowed although the repository holds older exports.
	Fresh bool
}

// RestoreResult says what a restore did (or, dry, would do).
type RestoreResult struct {
	Key        string    `json:"key,omitempty"`
	ExportedAt time.Time `json:"exported_at,omitzero"`
	Revision   int64     `json:"revision"`
	Contacts   int       `json:"contacts"`
	Accounts   int       `json:"accounts"`
	Tenants    int       `json:"tenants"`
	Links      int       `json:"links"`
	History    int       `json:"history"`
	// Erasures counts people erased again because the ledger says so.
	Erasures int  `json:"erasures_reapplied"`
	DryRun   bool `json:"dry_run"`
	Fresh    bool `json:"fresh,omitempty"`
}

// Restore rebuilds the vault from an export after a total loss. The vault
// must be empty (a fresh file or schema): a restore never merges into or
// overwrites a vault, so it cannot rewrite history. After loading, every
// erasure in the state store's ledger is applied again, so a person erased
// after the export was written stays erased.
//
// A non-empty vault is fault.Conflict; no export is fault.NotFound; a
// damaged one wraps ErrCorrupt, ErrVersion or ErrKey and changes nothing.
func (s *Service) Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	res := &RestoreResult{DryRun: o.DryRun, Fresh: o.Fresh}
	if err := s.requireEmpty(ctx); err != nil {
		return nil, err
	}
	if o.Fresh {
		if !o.DryRun {
			if err := s.setOrigin(ctx, "fresh"); err != nil {
				return nil, err
			}
			s.known.Store(true)
		}
		return res, s.audit(ctx, o.Actor, "contacts.restore", map[string]any{"fresh": true})
	}
	bs, err := s.blobs()
	if err != nil {
		return nil, err
	}
	key := o.From
	if key == "" {
		list, err := s.Exports(ctx)
		if err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, fault.New(fault.NotFound, "check backups: in lifeline.yaml; a vault is exported once it has been written to",
				"the backup repository holds no contacts exports under %s", ExportPrefix)
		}
		key = list[len(list)-1].Key
	} else if _, _, ok := parseExportKey(key); !ok {
		return nil, fault.New(fault.Invalid, "`lifeline contacts restore --list` shows the exports", "%q does not name a contacts export", key)
	}
	rc, err := bs.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, fault.Wrap(err, fault.Unavailable, "", "reading %s", key)
	}
	d, err := decodeArchive(data, s.cfg.Key, exportfile.MaxPayload)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	res.Key, res.ExportedAt, res.Revision = key, d.ExportedAt, d.Revision
	res.Contacts, res.Accounts, res.Tenants, res.Links, res.History = len(d.Contacts), len(d.Accounts), len(d.Tenants), len(d.Links), len(d.History)
	if o.DryRun {
		return res, nil
	}
	_, err = s.store.write(ctx, s.now(), false, func(t *tx) error {
		if err := loadDump(t, d); err != nil {
			return err
		}
		for name, v := range map[string]string{"revision": strconv.FormatInt(d.Revision, 10), "exported_revision": strconv.FormatInt(d.Revision, 10),
			"vault_id": d.VaultID, "origin": "restored:" + key} {
			if err := t.setMeta(name, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.known.Store(true)
	if res.Erasures, err = s.ReapplyErasures(ctx); err != nil {
		return res, fault.Wrap(err, fault.Unavailable, "fix the state store, then run `lifeline contacts sync`: every sync re-applies the erasures first",
			"the vault was restored from %s, but re-applying the erasure ledger failed", key)
	}
	s.log.Info("contacts vault restored", "key", key, "contacts", res.Contacts, "erasures_reapplied", res.Erasures)
	return res, s.audit(ctx, o.Actor, "contacts.restore", map[string]any{"key": key, "contacts": res.Contacts, "erasures_reapplied": res.Erasures})
}

// requireEmpty refuses a restore into a vault that holds anything.
func (s *Service) requireEmpty(ctx context.Context) error {
	var n int64
	err := s.store.read(ctx, func(t *tx) error {
		return t.QueryRowContext(t.ctx, `SELECT (SELECT count(*) FROM contacts) + (SELECT count(*) FROM accounts)
			+ (SELECT count(*) FROM tenants) + (SELECT count(*) FROM history)`).Scan(&n)
	})
	if err != nil {
		return s.store.unavailable(err)
	}
	if n > 0 {
		how := "move the file " + s.store.String() + " away"
		if s.store.Engine() == EnginePostgres {
			how = "DROP SCHEMA " + Schema + " CASCADE (after saving it)"
		}
		return fault.New(fault.Conflict, "a restore only fills an empty vault, so history is never overwritten: "+how+", then run the restore again",
			"the contacts vault %s is not empty", s.store)
	}
	return nil
}

// loadDump writes every row of d, parents before children.
func loadDump(t *tx, d *dump) error {
	for i := range d.Accounts {
		if err := d.Accounts[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.Tenants {
		if err := d.Tenants[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.Contacts {
		if err := d.Contacts[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.Aliases {
		if err := d.Aliases[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.Links {
		if err := d.Links[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.Erased {
		if err := d.Erased[i].insert(t); err != nil {
			return err
		}
	}
	for i := range d.History {
		if err := d.History[i].insert(t); err != nil {
			return err
		}
	}
	return nil
}

// RunOptions configure Run.
type RunOptions struct {
	// Sources returns the contacts queries to sync; nil: no scheduled sync.
	Sources func() []Source
	// SyncEvery is the sync period (vault.sync_every); default 1h.
	SyncEvery time.Duration
	// BackupEvery is how often the vault is checked for changes to export;
	// default 10s, well within the promised minute.
	BackupEvery time.Duration
}

// Run keeps the vault synced and backed up until ctx ends: it syncs at
// start and every SyncEvery, and exports within BackupEvery of any change
// (made by this process, the CLI or another serve). Failures are logged and
// retried next round; a sync stopped by the removal guard is logged with
// its hint and waits for an operator's `lifeline contacts sync --confirm`.
func (s *Service) Run(ctx context.Context, o RunOptions) {
	if o.SyncEvery <= 0 {
		o.SyncEvery = time.Hour
	}
	if o.BackupEvery <= 0 {
		o.BackupEvery = 10 * time.Second
	}
	backup := time.NewTicker(o.BackupEvery)
	defer backup.Stop()
	nextSync := time.Now()
	for {
		if o.Sources != nil && !time.Now().Before(nextSync) {
			nextSync = time.Now().Add(o.SyncEvery)
			if _, err := s.Sync(ctx, o.Sources(), SyncOptions{Actor: "lifeline serve"}); err != nil && ctx.Err() == nil {
				s.log.Warn("contacts sync did not complete", "err", err, "hint", fault.HintOf(err))
			}
		}
		if s.cfg.Blobs != nil {
			if _, err := s.Backup(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("contacts vault export failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-backup.C:
		}
	}
}
