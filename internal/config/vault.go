package config

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"lifeline/internal/fault"
)

// Vault configures the contacts vault: where it lives and its policies. It
// may be written as a mapping or, for the database alone, as a string:
//
//	vault: sqlite:contacts.db
type Vault struct {
	// Database is sqlite:FILE (relative to the config file) or a
	// postgres:// URL; on PostgreSQL the vault keeps its tables in its own
	// schema, lifeline_contacts. Default sqlite:contacts.db.
	Database string `yaml:"database"`
	// StaleAfter: a contact not verified for this long is flagged stale.
	StaleAfter Duration `yaml:"stale_after"`
	// MaxRemoval is the largest share of a source's contact links one sync
	// may remove without --confirm ("10%" or 0.1).
	MaxRemoval Share `yaml:"max_removal"`
	// SyncEvery is how often serve syncs contacts from the products.
	SyncEvery Duration `yaml:"sync_every"`
	// LinkTTL is how long a verification link stays valid.
	LinkTTL Duration `yaml:"link_ttl"`
	// LinkSecretFile or LinkSecretEnv hold the key that signs verification
	// links (at least 32 bytes). Without either the vault makes one and keeps
	// it in its own database, which suits a single installation.
	LinkSecretFile string `yaml:"link_secret_file"`
	LinkSecretEnv  string `yaml:"link_secret_env"`
	// PublicURL is the address verification links point at (serve's
	// /contacts/verify). Default status.public_url: serve answers both.
	PublicURL string `yaml:"public_url"`
}

// Vault defaults.
const (
	DefaultVault      = "sqlite:contacts.db"
	DefaultStaleAfter = 180 * 24 * time.Hour
	DefaultMaxRemoval = Share(0.10)
	DefaultSyncEvery  = time.Hour
	DefaultLinkTTL    = 7 * 24 * time.Hour
)

// UnmarshalYAML accepts the full mapping or a bare database string.
func (v *Vault) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		v.Database = n.Value
		return nil
	}
	type plain Vault // no methods: no recursion
	return n.Decode((*plain)(v))
}

func (v *Vault) applyDefaults(publicURL string) {
	if v.Database == "" {
		v.Database = DefaultVault
	}
	if v.StaleAfter == 0 {
		v.StaleAfter = Duration(DefaultStaleAfter)
	}
	if v.MaxRemoval == 0 {
		v.MaxRemoval = DefaultMaxRemoval
	}
	if v.SyncEvery == 0 {
		v.SyncEvery = Duration(DefaultSyncEvery)
	}
	if v.LinkTTL == 0 {
		v.LinkTTL = Duration(DefaultLinkTTL)
	}
	if v.PublicURL == "" {
		v.PublicURL = publicURL
	}
	v.PublicURL = strings.TrimSuffix(v.PublicURL, "/")
}

func (v *Vault) validate() error {
	if err := checkDSN("vault.database", v.Database, "sqlite:", "postgres://", "postgresql://"); err != nil {
		return err
	}
	if v.LinkSecretFile != "" && v.LinkSecretEnv != "" {
		return bad("vault", "link_secret_file and link_secret_env", "give one of link_secret_file or link_secret_env, not both")
	}
	if u, err := url.Parse(v.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("vault.public_url", v.PublicURL, "give the address people reach serve at, e.g. https://lifeline.example.com")
	}
	return nil
}

// LinkSecret returns the key that signs contact verification links, or nil
// when the config names none (the vault then keeps its own). getenv reads
// the environment (injected for tests). A secret that cannot be read or is
// shorter than 32 bytes is fault.Invalid.
func (c *Config) LinkSecret(getenv func(string) string) ([]byte, error) {
	raw, named, err := c.readSecret(getenv, "vault.link_secret", c.Vault.LinkSecretFile, c.Vault.LinkSecretEnv,
		"create it, e.g. `head -c 32 /dev/urandom > link.secret`", "export it, e.g. from `openssl rand -hex 32`")
	if !named || err != nil {
		return nil, err
	}
	if len(raw) < 32 {
		return nil, fault.New(fault.Invalid, "use at least 32 bytes, e.g. `openssl rand -hex 32`", "the link secret has %d bytes", len(raw))
	}
	return raw, nil
}

// Share is a fraction between 0 and 1, written "10%" or 0.1.
type Share float64

// UnmarshalYAML accepts "10%" and 0.1 alike.
func (s *Share) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseShare(n.Value)
	if err != nil {
		return fault.New(fault.Invalid, `write a percentage like "10%" or a fraction like 0.1`, "line %d: %q is not a share between 0 and 1", n.Line, n.Value)
	}
	*s = Share(v)
	return nil
}

// ParseShare parses "10%" or "0.1" into a fraction in (0, 1].
func ParseShare(text string) (float64, error) {
	v, err := parseFraction(text)
	if err != nil || v <= 0 || v > 1 {
		return 0, fault.New(fault.Invalid, "", "%q is not a share between 0 and 1", text)
	}
	return v, nil
}

// parseFraction reads "10%" as 0.1 and "0.1" as itself; the callers check
// the range.
func parseFraction(text string) (float64, error) {
	t := strings.TrimSpace(text)
	div := 1.0
	if p, ok := strings.CutSuffix(t, "%"); ok {
		t, div = strings.TrimSpace(p), 100
	}
	v, err := strconv.ParseFloat(t, 64)
	return v / div, err
}
