package contacts

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// Config is what a Service needs. Store and Ledger are required; the rest
// switch features on.
type Config struct {
	Store  *Store
	Ledger Ledger
	// Directory gives tenants' lifecycle states. Sync needs it (to keep the
	// contacts of deleted tenants); lookups use it when set and fall back to
	// the states the last sync recorded.
	Directory Directory
	// Blobs is the backup repository; nil disables export and restore. Key
	// (32 bytes) encrypts exports with AES-256-GCM; nil leaves them plain.
	Blobs blob.Store
	Key   []byte
	// Retention is how long exports are kept (retention.backups); default 30 days.
	Retention time.Duration
	// Mailer sends verification emails; nil makes SendVerifications refuse.
	Mailer Mailer
	// LinkSecret signs verification links; nil uses a key the vault makes
	// and keeps (not exported: after a restore, older links stop working).
	LinkSecret []byte
	// LinkBase is the public address of serve, e.g. https://lifeline.example.com;
	// links go to LinkBase + "/contacts/verify".
	LinkBase string
	// LinkTTL is how long a link stays valid; default 7 days.
	LinkTTL time.Duration
	// StaleAfter flags contacts not verified for this long; default 180 days.
	StaleAfter time.Duration
	// MaxRemoval is the share of a source's links one sync may remove
	// without confirmation; default 0.10.
	MaxRemoval float64
	// Now is the clock; default time.Now. Tests inject it.
	Now func() time.Time
	Log *slog.Logger
}

// Service is the contacts vault's domain API.
type Service struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	// known is set once the vault's origin (new or restored) is recorded,
	// so guardFresh stops asking the repository.
	known atomic.Bool
}

// New checks cfg and applies defaults. A missing Store or Ledger is a
// programming error and fails at once.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Ledger == nil {
		return nil, errors.New("contacts: Config needs a Store and a Ledger")
	}
	if cfg.Key != nil && len(cfg.Key) != 32 {
		return nil, errors.New("contacts: the export key must be 32 bytes")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = 7 * 24 * time.Hour
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 180 * 24 * time.Hour
	}
	if cfg.MaxRemoval <= 0 {
		cfg.MaxRemoval = 0.10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.LinkBase = strings.TrimSuffix(cfg.LinkBase, "/")
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, store: cfg.Store, log: log}, nil
}

// now is the clock at the precision the vault keeps.
func (s *Service) now() time.Time { return fromMicros(s.cfg.Now().UnixMicro()) }

// StaleAfter is the configured verification age.
func (s *Service) StaleAfter() time.Duration { return s.cfg.StaleAfter }

// guardFresh stops a write into a vault that was just created while the
// backup repository holds exports of an earlier one: after a total loss the
// vault must be restored before anything (a scheduled sync, an import)
// fills the empty one and its exports become the newest. With record, a
// vault found to be genuinely new is marked so (a dry run passes false).
func (s *Service) guardFresh(ctx context.Context, record bool) error {
	if s.cfg.Blobs == nil || s.known.Load() {
		return nil
	}
	var origin string
	err := s.store.read(ctx, func(t *tx) error {
		var err error
		origin, err = t.meta("origin")
		return err
	})
	if err != nil {
		return err
	}
	if origin != "" {
		s.known.Store(true)
		return nil
	}
	exports, err := s.Exports(ctx)
	if err != nil {
		return err
	}
	if len(exports) > 0 {
		return fault.New(fault.Refused,
			"restore it first: `lifeline contacts restore`; to start an empty vault anyway, `lifeline contacts restore --fresh`",
			"the contacts vault %s is new, but the backup repository holds %d exports of a vault (newest %s)",
			s.store, len(exports), exports[len(exports)-1].Key)
	}
	if !record {
		return nil
	}
	if err := s.setOrigin(ctx, "new"); err != nil {
		return err
	}
	s.known.Store(true)
	return nil
}

// setOrigin records how this vault began (new, fresh or restored:KEY) and
// gives it an id that its exports carry.
func (s *Service) setOrigin(ctx context.Context, origin string) error {
	_, err := s.store.write(ctx, s.now(), false, func(t *tx) error {
		if id, err := t.meta("vault_id"); err != nil || id == "" {
			if err := t.setMeta("vault_id", newID("v_")); err != nil {
				return err
			}
		}
		return t.setMeta("origin", origin)
	})
	return err
}

// audit records a read or export of personal data in the state store's
// audit log. Every such read is audited; if the audit log cannot be
// written the read fails, rather than happen unrecorded.
func (s *Service) audit(ctx context.Context, actor, action string, detail map[string]any) error {
	_, err := s.cfg.Ledger.AppendAudit(ctx, state.AuditEntry{Actor: actor, Action: action, Detail: detail})
	return err
}
