package contacts

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"lifeline/internal/fault"
)

// Address is a normalised email address.
type Address struct {
	// Email is the address as the vault shows it: trimmed, Unicode NFC, the
	// domain lower-cased, the local part as written.
	Email string
	// Key identifies the person: Email with the local part lower-cased too.
	// RFC 5321 lets a server treat local parts case-sensitively, but almost
	// none do, and two records for one person is exactly the confusion the
	// vault exists to prevent; so spellings that differ only in case are
	// merged (and the merge is recorded).
	Key string
	// Domain is the lower-cased domain, for lookups by @DOMAIN.
	Domain string
}

// maxEmail is the longest address SMTP allows (RFC 5321 path limit).
const maxEmail = 254

// NormalizeEmail trims raw, brings it to Unicode NFC and lower-cases its
// domain. Anything that cannot be an address (no @, empty parts, spaces or
// control characters, over 254 bytes) is fault.Invalid; the message masks
// the value, because it may be a real address with a typo.
func NormalizeEmail(raw string) (Address, error) {
	s := norm.NFC.String(strings.TrimSpace(raw))
	local, domain, ok := strings.Cut(s, "@")
	bad := func(why string) (Address, error) {
		return Address{}, fault.New(fault.Invalid, "give an address like name@example.com", "email %s is not usable: %s", Mask(s), why)
	}
	switch {
	case s == "":
		return bad("empty")
	case !utf8.ValidString(s):
		return bad("not UTF-8")
	case !ok:
		return bad("no @")
	case local == "" || domain == "":
		return bad("nothing before or after the @")
	case strings.Contains(domain, "@"):
		return bad("more than one @")
	case len(s) > maxEmail:
		return bad("longer than 254 bytes")
	case strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, ".."):
		return bad("the domain has an empty label")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return bad("it contains a space or control character")
		}
	}
	domain = strings.ToLower(domain)
	email := local + "@" + domain
	return Address{Email: email, Key: strings.ToLower(local) + "@" + domain, Domain: domain}, nil
}

// NormalizeDomain turns "@Example.COM" or "example.com" into "example.com".
func NormalizeDomain(raw string) (string, error) {
	d := strings.ToLower(norm.NFC.String(strings.TrimPrefix(strings.TrimSpace(raw), "@")))
	if d == "" || strings.ContainsAny(d, "@ \t") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return "", fault.New(fault.Invalid, "write @example.com", "%q is not a domain", raw)
	}
	return d, nil
}

// Mask shows an address without giving it away, for logs and messages:
// "ana.lima@example.com" becomes "a***@example.com". Logs never carry a
// full address (docs/contacts.md, privacy).
func Mask(email string) string {
	local, domain, ok := strings.Cut(strings.TrimSpace(email), "@")
	if !ok {
		if email == "" {
			return `""`
		}
		r, _ := utf8.DecodeRuneInString(email)
		return string(r) + "***"
	}
	if local == "" {
		return "***@" + domain
	}
	r, _ := utf8.DecodeRuneInString(local)
	return string(r) + "***@" + domain
}

// ErasureHash is what the erasure ledger keeps of an erased person: not the
// address itself (that would defeat the erasure) but a hash of its Key,
// enough to recognise the person again in a restored vault or a later sync.
func ErasureHash(key string) string {
	h := sha256.Sum256([]byte("lifeline contacts erasure v1\x00" + key))
	return hex.EncodeToString(h[:])
}
