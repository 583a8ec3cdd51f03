package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
)

func TestVaultDefaultsAndShorthand(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good), "/etc/lifeline")
	if err != nil {
		t.Fatal(err)
	}
	v := c.Vault
	if v.Database != DefaultVault || v.StaleAfter.D() != DefaultStaleAfter || v.MaxRemoval != DefaultMaxRemoval ||
		v.LinkTTL.D() != DefaultLinkTTL || v.SyncEvery.D() != DefaultSyncEvery || v.PublicURL != "http://"+DefaultListen {
		t.Errorf("vault defaults not applied: %+v", v)
	}
	c, err = Parse([]byte(good+"vault: postgres://u@db/contacts\n"), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault.Database != "postgres://u@db/contacts" || c.Vault.MaxRemoval != DefaultMaxRemoval {
		t.Errorf("shorthand vault: %+v", c.Vault)
	}
	c, err = Parse([]byte(good+"vault: {database: sqlite:v.db, stale_after: 90d, max_removal: 25%, public_url: https://ll.example.com/}\n"), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Parse([]byte(good+"status: {public_url: 'https://status.example.com'}\n"), "/tmp"); err != nil || c.Vault.PublicURL != "https://status.example.com" {
		t.Errorf("vault.public_url does not follow status.public_url: %v %v", c, err)
	}
	if c.Vault.StaleAfter.D() != 90*24*time.Hour || c.Vault.MaxRemoval != 0.25 || c.Vault.PublicURL != "https://ll.example.com" {
		t.Errorf("vault mapping: %+v", c.Vault)
	}
}

func TestVaultErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ yaml, want string }{
		"bad dsn":        {"vault: mysql://x\n", "vault.database"},
		"typo":           {"vault: {databse: sqlite:x.db}\n", "did you mean database"},
		"share too big":  {"vault: {max_removal: 150%}\n", "150%"},
		"share nonsense": {"vault: {max_removal: lots}\n", "lots"},
		"two secrets":    {"vault: {link_secret_file: a, link_secret_env: B}\n", "not both"},
		"bad url":        {"vault: {public_url: 'ftp://x'}\n", "vault.public_url"},
	} {
		_, err := Parse([]byte(good+tc.yaml), "/tmp")
		if err == nil || fault.ExitStatus(err) != 2 || !strings.Contains(err.Error()+fault.HintOf(err), tc.want) {
			t.Errorf("%s: err %v (hint %q), want exit 2 naming %q", name, err, fault.HintOf(err), tc.want)
		}
	}
	if _, err := Parse([]byte(strings.Replace(good, "name: tracker", "name: contacts", 1)), "/tmp"); err == nil {
		t.Error("a product named contacts collides with the vault's repository prefix and must be refused")
	}
}

func TestParseShare(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"10%": 0.1, "0.1": 0.1, "100%": 1, " 2.5 % ": 0.025} {
		if got, err := ParseShare(in); err != nil || got != want {
			t.Errorf("ParseShare(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "0%", "-1%", "101%", "1.5", "x"} {
		if _, err := ParseShare(in); err == nil {
			t.Errorf("ParseShare(%q) accepted", in)
		}
	}
}

func TestLinkSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "link.secret"), []byte(strings.Repeat("s", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LONG": strings.Repeat("x", 64), "SHORT": "abc"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		v       Vault
		wantLen int
		wantErr string
	}{
		{Vault{}, 0, ""},
		{Vault{LinkSecretFile: "link.secret"}, 40, ""},
		{Vault{LinkSecretEnv: "LONG"}, 64, ""},
		{Vault{LinkSecretEnv: "SHORT"}, 0, "3 bytes"},
		{Vault{LinkSecretEnv: "UNSET"}, 0, "not set"},
		{Vault{LinkSecretFile: "missing"}, 0, "cannot be read"},
	} {
		k, err := (&Config{Dir: dir, Vault: tc.v}).LinkSecret(getenv)
		wantSecret(t, tc.v, k, err, tc.wantLen, tc.wantErr)
	}
}

// wantSecret checks a secret read for the config section sec: an error
// that mentions wantErr and exits 2 when wantErr is set, else a secret of
// wantLen bytes (0: none configured).
func wantSecret(t *testing.T, sec any, k []byte, err error, wantLen int, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) || fault.ExitStatus(err) != 2 {
			t.Errorf("%+v: err %v, want %q (exit 2)", sec, err, wantErr)
		}
		return
	}
	if err != nil || len(k) != wantLen {
		t.Errorf("%+v: secret of %d bytes, %v; want %d", sec, len(k), err, wantLen)
	}
}
