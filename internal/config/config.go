// Package config reads lifeline.yaml. Every error names the key path, the bad
// value and a fix, so that a typo never turns into a silent default.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"lifeline/internal/fault"
)

// Config is the whole of lifeline.yaml after defaults and validation.
type Config struct {
	// Dir is the folder of the config file; sqlite: and file: paths are relative to it.
	Dir string `yaml:"-"`

	State      string     `yaml:"state"`
	Backups    string     `yaml:"backups"`
	Listen     string     `yaml:"listen"`
	Retention  Retention  `yaml:"retention"`
	Guard      Guard      `yaml:"guard"`
	Shipping   Shipping   `yaml:"shipping"`
	Encryption Encryption `yaml:"encryption"`
	Status     Status     `yaml:"status"`
	SMTP       SMTP       `yaml:"smtp"`
	Notify     Notify     `yaml:"notify"`
	Products   []Product  `yaml:"products"`
	Contacts   []Contact  `yaml:"contacts"`
	Vault      Vault      `yaml:"vault"`
	Plans      Plans      `yaml:"plans"`
	Restore    Restore    `yaml:"restore"`
}

// Retention says how long deleted tenants and backups are kept.
type Retention struct {
	Deleted Duration `yaml:"deleted"`
	Backups Duration `yaml:"backups"`
}

// Guard holds the mass-delete limits that the database guards enforce. Zero
// means "use the default"; there is no way to switch a limit off by accident.
type Guard struct {
	MaxRowsPerStatement    int `yaml:"max_rows_per_statement"`
	MaxRowsPerTransaction  int `yaml:"max_rows_per_transaction"`
	MaxTenantsPerStatement int `yaml:"max_tenants_per_statement"`
}

// Shipping tunes how captured changes reach the backup repository.
type Shipping struct {
	// Interval is serve's RPO target: every captured change is to be in
	// the backup repository within this long of its commit (default 1s).
	// It is also how often a standby serve claims a product's lease.
	Interval Duration `yaml:"interval"`
	// BacklogLimit: more changes than this waiting in a product database
	// turn its status red and fire the alert metric (nothing is dropped).
	BacklogLimit int64 `yaml:"backlog_limit"`
}

// Encryption is where the repository's AES-256 key comes from: a file or an
// environment variable holding 32 raw bytes or 64 hex characters. No key:
// objects are not encrypted.
type Encryption struct {
	KeyFile string `yaml:"key_file"`
	KeyEnv  string `yaml:"key_env"`
}

// Status names the public status page and says where readers reach it;
// the links in notices (confirm, unsubscribe, the incident) point there.
type Status struct {
	Name      string `yaml:"name"`       // default "Status"
	PublicURL string `yaml:"public_url"` // default http://LISTEN
	// Cadence is how old the last update of an open major or critical
	// incident may get before it is flagged overdue; default 60m.
	Cadence Duration `yaml:"cadence"`
	// TenantLinkTTL is how long the signed link in a targeted notice (to a
	// tenant's private status page) stays valid; default 7d. Every update
	// sends a fresh one.
	TenantLinkTTL Duration `yaml:"tenant_link_ttl"`
}

// Status defaults.
const (
	DefaultCadence       = 60 * time.Minute
	DefaultTenantLinkTTL = 7 * 24 * time.Hour
)

// SMTP is the mail server notices and confirmation links go through.
// Without a host there is no email, and nobody can subscribe (confirming
// needs mail). The password is never in the file: PasswordEnv names the
// environment variable that holds it.
type SMTP struct {
	Host        string  `yaml:"host"`
	Port        int     `yaml:"port"` // default from tls: 587 starttls, 465 tls, 25 none
	From        string  `yaml:"from"`
	Username    string  `yaml:"username"`
	PasswordEnv string  `yaml:"password_env"`
	TLS         string  `yaml:"tls"`  // starttls (default), tls (implicit), none
	Rate        float64 `yaml:"rate"` // messages per second through this server; default 10
}

// Notify tunes webhook delivery.
type Notify struct {
	// WebhookRate is the requests per second each receiving host gets;
	// default 5.
	WebhookRate float64 `yaml:"webhook_rate"`
	// DisableAfter failed deliveries in a row disable a webhook and tell
	// its owner; default 20.
	DisableAfter int `yaml:"disable_after"`
}

// Product is one application database holding many tenants in shared tables.
type Product struct {
	Name         string              `yaml:"name"`
	Database     string              `yaml:"database"`
	TenantColumn string              `yaml:"tenant_column"`
	TenantsTable string              `yaml:"tenants_table"`
	NameColumn   string              `yaml:"name_column"`
	Tables       []string            `yaml:"tables"`
	Apps         map[string][]string `yaml:"apps"`
	Guard        *Guard              `yaml:"guard"`
}

// Contact is a query that yields authorised contacts from a product database.
type Contact struct {
	Product string `yaml:"product"`
	Query   string `yaml:"query"`
}

// Defaults for keys that may be left out.
const (
	DefaultListen                 = "127.0.0.1:8080"
	DefaultMaxRowsPerStatement    = 1000
	DefaultMaxRowsPerTransaction  = 10000
	DefaultMaxTenantsPerStatement = 10
)

// Load reads, decodes and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fault.New(fault.Invalid, "run `lifeline init` to write a commented lifeline.yaml, or pass --config FILE",
			"config file %s does not exist", path)
	}
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check the file's permissions", "cannot read config file %s", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, filepath.Dir(abs))
}

// Parse decodes and validates config text. dir is the folder relative paths
// are resolved against.
func Parse(data []byte, dir string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "fix the YAML syntax at the line shown", "config is not valid YAML")
	}
	if len(root.Content) == 0 {
		return nil, fault.New(fault.Invalid, "run `lifeline init` for a starting point", "config is empty")
	}
	if err := checkKeys(root.Content[0], reflect.TypeOf(Config{}), ""); err != nil {
		return nil, err
	}
	var c Config
	if err := root.Content[0].Decode(&c); err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check the value's type against `lifeline init`'s template", "config has a value of the wrong type")
	}
	c.Dir = dir
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.State == "" {
		c.State = "sqlite:lifeline-state.db"
	}
	if c.Backups == "" {
		c.Backups = "file:backups"
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Retention.Deleted == 0 {
		c.Retention.Deleted = Duration(30 * 24 * time.Hour)
	}
	if c.Retention.Backups == 0 {
		c.Retention.Backups = Duration(30 * 24 * time.Hour)
	}
	if c.Shipping.Interval == 0 {
		c.Shipping.Interval = Duration(time.Second)
	}
	if c.Shipping.BacklogLimit == 0 {
		c.Shipping.BacklogLimit = 1_000_000
	}
	if c.Status.Name == "" {
		c.Status.Name = "Status"
	}
	if c.Status.PublicURL == "" {
		c.Status.PublicURL = "http://" + c.Listen
	}
	c.Status.PublicURL = strings.TrimRight(c.Status.PublicURL, "/")
	if c.Status.Cadence == 0 {
		c.Status.Cadence = Duration(DefaultCadence)
	}
	if c.Status.TenantLinkTTL == 0 {
		c.Status.TenantLinkTTL = Duration(DefaultTenantLinkTTL)
	}
	if c.SMTP.Host != "" {
		if c.SMTP.TLS == "" {
			c.SMTP.TLS = "starttls"
		}
		if c.SMTP.Port == 0 {
			c.SMTP.Port = map[string]int{"starttls": 587, "tls": 465, "none": 25}[c.SMTP.TLS]
		}
		if c.SMTP.Rate == 0 {
			c.SMTP.Rate = 10
		}
	}
	if c.Notify.WebhookRate == 0 {
		c.Notify.WebhookRate = 5
	}
	if c.Notify.DisableAfter == 0 {
		c.Notify.DisableAfter = 20
	}
	c.Vault.applyDefaults(c.Status.PublicURL)
	c.Guard.fill(Guard{DefaultMaxRowsPerStatement, DefaultMaxRowsPerTransaction, DefaultMaxTenantsPerStatement})
	for i := range c.Products {
		p := &c.Products[i]
		if p.Guard == nil {
			g := c.Guard
			p.Guard = &g
		} else {
			p.Guard.fill(c.Guard)
		}
	}
}

func (g *Guard) fill(from Guard) {
	if g.MaxRowsPerStatement == 0 {
		g.MaxRowsPerStatement = from.MaxRowsPerStatement
	}
	if g.MaxRowsPerTransaction == 0 {
		g.MaxRowsPerTransaction = from.MaxRowsPerTransaction
	}
	if g.MaxTenantsPerStatement == 0 {
		g.MaxTenantsPerStatement = from.MaxTenantsPerStatement
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)

func (c *Config) validate() error {
	if err := checkDSN("state", c.State, "sqlite:", "postgres://", "postgresql://"); err != nil {
		return err
	}
	if err := checkDSN("backups", c.Backups, "file:", "s3://"); err != nil {
		return err
	}
	if err := c.Guard.validate("guard"); err != nil {
		return err
	}
	if c.Shipping.BacklogLimit < 0 {
		return bad("shipping.backlog_limit", strconv.FormatInt(c.Shipping.BacklogLimit, 10), "use a positive number of changes")
	}
	if c.Encryption.KeyFile != "" && c.Encryption.KeyEnv != "" {
		return bad("encryption", "key_file and key_env", "give one of key_file or key_env, not both")
	}
	if err := c.validateNotify(); err != nil {
		return err
	}
	if len(c.Products) == 0 {
		return bad("products", "", "list at least one product database, for example:\n  products:\n    - {name: tracker, database: sqlite:tracker.db, tenant_column: site_id, tenants_table: sites}")
	}
	seen := map[string]bool{}
	for i, p := range c.Products {
		at := fmt.Sprintf("products[%d]", i)
		if !nameRE.MatchString(p.Name) {
			return bad(at+".name", p.Name, "use a short lowercase name such as tracker (letters, digits, _ and -)")
		}
		if seen[p.Name] {
			return bad(at+".name", p.Name, "give each product a different name")
		}
		if p.Name == "contacts" {
			return bad(at+".name", p.Name, "choose another name: the backup repository keeps the contacts vault under contacts/")
		}
		seen[p.Name] = true
		if err := checkDSN(at+".database", p.Database, "sqlite:", "postgres://", "postgresql://"); err != nil {
			return err
		}
		for key, v := range map[string]string{"tenant_column": p.TenantColumn, "tenants_table": p.TenantsTable} {
			if !identRE.MatchString(v) {
				return bad(at+"."+key, v, "name a column or table of the product database (letters, digits and _)")
			}
		}
		if p.NameColumn != "" && !identRE.MatchString(p.NameColumn) {
			return bad(at+".name_column", p.NameColumn, "name a column of the tenants table, or leave it out")
		}
		for j, t := range p.Tables {
			if !identRE.MatchString(t) {
				return bad(fmt.Sprintf("%s.tables[%d]", at, j), t, "name a table of the product database, or leave tables empty to protect every table with the tenant column")
			}
		}
		apps := make([]string, 0, len(p.Apps))
		for a := range p.Apps {
			apps = append(apps, a)
		}
		sort.Strings(apps)
		owner := map[string]string{}
		for _, a := range apps {
			if !nameRE.MatchString(a) {
				return bad(at+".apps", a, "use a short lowercase app name such as insight")
			}
			if len(p.Apps[a]) == 0 {
				return bad(at+".apps."+a, "[]", "list the tables that belong to the app")
			}
			for j, t := range p.Apps[a] {
				if !identRE.MatchString(t) {
					return bad(fmt.Sprintf("%s.apps.%s[%d]", at, a, j), t, "name a table of the product database")
				}
				if t == p.TenantsTable {
					return bad(fmt.Sprintf("%s.apps.%s[%d]", at, a, j), t, "the tenants table belongs to the whole product, not to an app")
				}
				if o, ok := owner[t]; ok {
					return bad(fmt.Sprintf("%s.apps.%s[%d]", at, a, j), t, "a table belongs to one app only; it is already in app "+o)
				}
				owner[t] = a
			}
		}
		if err := p.Guard.validate(at + ".guard"); err != nil {
			return err
		}
	}
	if err := c.Plans.validate(seen); err != nil {
		return err
	}
	if err := c.Restore.validate(); err != nil {
		return err
	}
	for i, ct := range c.Contacts {
		if err := checkQuery(fmt.Sprintf("contacts[%d]", i), seen, ct.Product, ct.Query, "give a query that returns tenant, email, name and role columns"); err != nil {
			return err
		}
	}
	return c.Vault.validate()
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c *Config) validateNotify() error {
	if u, err := url.Parse(c.Status.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("status.public_url", c.Status.PublicURL, "give the URL readers open the status page at, such as https://status.example.com")
	}
	m := c.SMTP
	if m.Host == "" {
		if m != (SMTP{}) {
			return bad("smtp.host", "", "name the mail server, or leave smtp: out for no email")
		}
	} else {
		if _, ok := map[string]bool{"starttls": true, "tls": true, "none": true}[m.TLS]; !ok {
			return bad("smtp.tls", m.TLS, "use starttls (port 587), tls (port 465) or none (a relay on this host only)")
		}
		if m.Port < 1 || m.Port > 65535 {
			return bad("smtp.port", strconv.Itoa(m.Port), "use a TCP port such as 587")
		}
		if a, err := mail.ParseAddress(m.From); err != nil || a.Address == "" {
			return bad("smtp.from", m.From, "give the sender address, such as status@example.com or \"Status <status@example.com>\"")
		}
		if m.PasswordEnv != "" && !envNameRE.MatchString(m.PasswordEnv) {
			return bad("smtp.password_env", m.PasswordEnv, "name the environment variable that holds the password (letters, digits, _), not the password itself")
		}
		if (m.PasswordEnv == "") != (m.Username == "") {
			return bad("smtp.username", m.Username, "give both username and password_env, or neither")
		}
		if m.Rate < 0 {
			return bad("smtp.rate", strconv.FormatFloat(m.Rate, 'f', -1, 64), "use a positive number of messages per second")
		}
	}
	if c.Notify.WebhookRate < 0 {
		return bad("notify.webhook_rate", strconv.FormatFloat(c.Notify.WebhookRate, 'f', -1, 64), "use a positive number of requests per second")
	}
	if c.Notify.DisableAfter < 0 {
		return bad("notify.disable_after", strconv.Itoa(c.Notify.DisableAfter), "use a positive number of failures")
	}
	return nil
}

// SMTPPassword reads the mail server's password from the environment
// variable smtp.password_env names ("" when none is configured). getenv
// reads the environment (injected for tests). A named but unset variable
// is fault.Invalid.
func (c *Config) SMTPPassword(getenv func(string) string) (string, error) {
	if c.SMTP.PasswordEnv == "" {
		return "", nil
	}
	v := getenv(c.SMTP.PasswordEnv)
	if v == "" {
		return "", fault.New(fault.Invalid, "export the SMTP password in it before starting lifeline", "smtp.password_env names %s, which is not set", c.SMTP.PasswordEnv)
	}
	return v, nil
}

func (g Guard) validate(at string) error {
	for key, v := range map[string]int{
		"max_rows_per_statement":    g.MaxRowsPerStatement,
		"max_rows_per_transaction":  g.MaxRowsPerTransaction,
		"max_tenants_per_statement": g.MaxTenantsPerStatement,
	} {
		if v < 1 {
			return bad(at+"."+key, strconv.Itoa(v), "use a positive number; leave it out for the default")
		}
	}
	return nil
}

func checkDSN(at, v string, prefixes ...string) error {
	for _, p := range prefixes {
		if strings.HasPrefix(v, p) && len(v) > len(p) {
			return nil
		}
	}
	return bad(at, v, "start it with one of: "+strings.Join(prefixes, ", "))
}

func bad(path, value, fix string) error {
	return fault.New(fault.Invalid, fix, "config key %s has a bad value %q", path, value)
}

// ResolvePath makes a sqlite:/file: path absolute relative to the config folder.
func (c *Config) ResolvePath(p string) string {
	if filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// Product returns the product named name.
func (c *Config) Product(name string) (*Product, error) {
	for i := range c.Products {
		if c.Products[i].Name == name {
			return &c.Products[i], nil
		}
	}
	names := make([]string, len(c.Products))
	for i, p := range c.Products {
		names[i] = p.Name
	}
	return nil, fault.New(fault.NotFound, "known products: "+strings.Join(names, ", "), "no product named %q in the config", name)
}

// checkKeys walks the YAML tree and refuses keys the struct does not have, so
// that "tenant_colum: site_id" is an error instead of a silently missing value.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(Duration(0)) {
		if _, err := ParseDuration(n.Value); err != nil {
			return fault.New(fault.Invalid, `write a number of days like "30d", or a Go duration like "36h"`,
				"config key %s (line %d) has a bad value %q: not a duration", path, n.Line, n.Value)
		}
		return nil
	}
	// Shares are checked here too, so their errors name the key.
	shares := map[reflect.Type]struct {
		parse func(string) (float64, error)
		fix   string
	}{
		reflect.TypeOf(Share(0)):     {ParseShare, `write a share above 0 and up to 100%, like "10%" or 0.1`},
		reflect.TypeOf(FailShare(0)): {parseFailShare, `write a share below 100%, like "5%" or 0.05, or 0 for none`},
	}
	if sh, ok := shares[t]; ok {
		if _, err := sh.parse(n.Value); err != nil {
			return fault.New(fault.Invalid, sh.fix, "config key %s (line %d) has a bad value %q: not a share in range", path, n.Line, n.Value)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // type errors are reported by Decode
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = t.Field(i).Type
			names = append(names, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ft, ok := fields[k]
			child := join(path, k)
			if !ok {
				hint := "known keys here: " + strings.Join(names, ", ")
				if s := closest(k, names); s != "" {
					hint = "did you mean " + s + "? " + hint
				}
				return fault.New(fault.Invalid, hint, "config key %s (line %d) is not a Lifeline setting", child, n.Content[i].Line)
			}
			if err := checkKeys(n.Content[i+1], ft, child); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// closest returns the candidate within edit distance 2 of s, if any.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Duration is a time.Duration that also accepts days ("30d").
type Duration time.Duration

// UnmarshalYAML accepts Go durations ("36h") and whole days ("30d").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fault.New(fault.Invalid, `write a number of days like "30d", or a Go duration like "36h"`,
			"line %d: %q is not a duration", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses "30d" or any time.ParseDuration string.
func ParseDuration(s string) (time.Duration, error) {
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad day count %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d, nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// readSecret reads the secret a config section names by its NAME_file
// (relative to the config's folder) or NAME_env key; named is false when
// the section names neither. A file that cannot be read or a variable that
// is not set is fault.Invalid, with fileHint or envHint saying how to make
// one.
func (c *Config) readSecret(getenv func(string) string, name, file, env, fileHint, envHint string) (secret []byte, named bool, err error) {
	switch {
	case file != "":
		b, err := os.ReadFile(c.ResolvePath(file))
		if err != nil {
			return nil, true, fault.Wrap(err, fault.Invalid, fileHint, "%s_file %s cannot be read", name, file)
		}
		return b, true, nil
	case env != "":
		v := getenv(env)
		if v == "" {
			return nil, true, fault.New(fault.Invalid, envHint, "%s_env names %s, which is not set", name, env)
		}
		return []byte(v), true, nil
	}
	return nil, false, nil
}

// LoadKey returns the repository encryption key, or nil when none is
// configured. getenv reads the environment (injected for tests).
func (c *Config) LoadKey(getenv func(string) string) ([]byte, error) {
	raw, named, err := c.readSecret(getenv, "encryption.key", c.Encryption.KeyFile, c.Encryption.KeyEnv,
		"create it with 32 random bytes, e.g. `head -c 32 /dev/urandom > backup.key`",
		"export it with 64 hex characters, e.g. from `openssl rand -hex 32`")
	if !named || err != nil {
		return nil, err
	}
	if len(raw) == 32 {
		return raw, nil
	}
	text := strings.TrimSpace(string(raw))
	if len(text) == 64 {
		if k, err := hex.DecodeString(text); err == nil {
			return k, nil
		}
	}
	return nil, fault.New(fault.Invalid, "use exactly 32 raw bytes or 64 hex characters", "the encryption key has %d bytes", len(raw))
}
