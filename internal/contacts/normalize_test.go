package contacts

import (
	"strings"
	"testing"

	"lifeline/internal/fault"
)

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Address{
		"  Ana@Example.COM\t":   {Email: "Ana@example.com", Key: "ana@example.com", Domain: "example.com"},
		"e\u0301lise@ex.org":    {Email: "\u00e9lise@ex.org", Key: "\u00e9lise@ex.org", Domain: "ex.org"},
		"ZOË@BÜRO.example":      {Email: "ZOË@büro.example", Key: "zoë@büro.example", Domain: "büro.example"},
		"first.last+tag@x.io":   {Email: "first.last+tag@x.io", Key: "first.last+tag@x.io", Domain: "x.io"},
		"\u00c5sa@Sverige.Test": {Email: "\u00c5sa@sverige.test", Key: "\u00e5sa@sverige.test", Domain: "sverige.test"},
	} {
		got, err := NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "   ", "plain", "@x.io", "a@", "a@b@c", "a b@x.io", "a@x..io", "a@.x.io", "a@x.io.", "a\x00@x.io", strings.Repeat("a", 250) + "@x.io"} {
		_, err := NormalizeEmail(in)
		if fault.CodeOf(err) != fault.Invalid {
			t.Errorf("NormalizeEmail(%q) = %v; want invalid", in, err)
			continue
		}
		if len(in) > 3 && !strings.HasPrefix(in, "@") && strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("the error for %q shows it in full: %v", in, err)
		}
	}
}

func TestMask(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ana.lima@example.com": "a***@example.com",
		"Ünal@x.de":            "Ü***@x.de",
		"@x.de":                "***@x.de",
		"nonsense":             "n***",
		"":                     `""`,
	} {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErasureHashIsKeyed(t *testing.T) {
	t.Parallel()
	a, _ := NormalizeEmail("Ana@Example.com")
	b, _ := NormalizeEmail("ana@EXAMPLE.COM")
	if ErasureHash(a.Key) != ErasureHash(b.Key) || len(ErasureHash(a.Key)) != 64 {
		t.Error("spellings of one address must hash alike")
	}
	if strings.Contains(ErasureHash(a.Key), "ana") || ErasureHash(a.Key) == ErasureHash("other@example.com") {
		t.Error("the hash must not reveal or confuse addresses")
	}
}
