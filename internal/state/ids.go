package state

import (
	"crypto/rand"
	"encoding/base32"
	"time"
)

// alphabet is Crockford's base32 in lower case. Its characters are in
// ascending byte order, so fixed-width encodings of numbers sort like the
// numbers, and it has no easily confused letters (i, l, o, u).
const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

var b32 = base32.NewEncoding(alphabet).WithPadding(base32.NoPadding)

// encodeUint writes the low 5*width bits of n as width base32 characters,
// most significant first.
func encodeUint(n uint64, width int) string {
	buf := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		buf[i] = alphabet[n&31]
		n >>= 5
	}
	return string(buf)
}

// randomString returns n base32 characters of crypto/rand entropy (5 bits each).
func randomString(n int) string {
	raw := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails (Go 1.24+)
	return b32.EncodeToString(raw)[:n]
}

// NewOperationID returns "op_" followed by 12 base32 characters of now in
// microseconds (so IDs sort by creation time as plain strings) and 8 random
// characters (40 bits, so IDs made in the same microsecond still differ).
func NewOperationID(now time.Time) string {
	us := now.UnixMicro()
	if us < 0 {
		us = 0
	}
	return "op_" + encodeUint(uint64(us), 12) + randomString(8)
}

// isBase32 reports whether s is made only of alphabet characters.
func isBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') || c == 'i' || c == 'l' || c == 'o' || c == 'u' {
			return false
		}
	}
	return true
}
