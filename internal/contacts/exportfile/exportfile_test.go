package exportfile

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var (
	testKey = []byte("0123456789abcdef0123456789abcdef")
	payload = []byte(`{"format":"lifeline-contacts-vault","contacts":[{"email":"Ana@example.com","name":"Ana Lima ☃"}]}`)
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, key := range [][]byte{nil, testKey} {
		for _, p := range [][]byte{payload, {}, bytes.Repeat([]byte("x"), 1<<20)} {
			data, err := Encode(p, key)
			if err != nil {
				t.Fatal(err)
			}
			if key != nil && bytes.Contains(data, []byte("Lima")) {
				t.Error("an encrypted export shows its content")
			}
			got, err := Decode(data, key, MaxPayload)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("key %v, %d bytes: got %d bytes, %v", key != nil, len(p), len(got), err)
			}
		}
	}
	if _, err := Encode(payload, []byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// resum recomputes the trailer, so only the inner checks can catch a change.
func resum(b []byte) []byte {
	c := bytes.Clone(b[:len(b)-TrailerLen])
	s := sha256.Sum256(c)
	return append(c, s[:]...)
}

func set(b []byte, i int, v byte) []byte { c := bytes.Clone(b); c[i] = v; return c }

func TestRefusesDamage(t *testing.T) {
	t.Parallel()
	plain, _ := Encode(payload, nil)
	sealed, _ := Encode(payload, testKey)
	other := bytes.Repeat([]byte{7}, 32)
	for name, tc := range map[string]struct {
		data, key []byte
		want      error
	}{
		"empty":               {nil, nil, ErrCorrupt},
		"truncated":           {plain[:len(plain)-1], nil, ErrCorrupt},
		"bit flip in body":    {set(plain, HeaderLen+3, plain[HeaderLen+3]^0x40), nil, ErrCorrupt},
		"bit flip in trailer": {set(plain, len(plain)-1, plain[len(plain)-1]^1), nil, ErrCorrupt},
		"bad magic":           {resum(set(plain, 0, 'X')), nil, ErrCorrupt},
		"newer version":       {resum(set(plain, 4, 9)), nil, ErrVersion},
		"unknown flag":        {resum(set(plain, 5, 4)), nil, ErrCorrupt},
		"key id on plain":     {resum(set(plain, 9, 1)), nil, ErrCorrupt},
		"no key":              {sealed, nil, ErrKey},
		"wrong key":           {sealed, other, ErrKey},
		"sealed, tampered":    {resum(set(sealed, HeaderLen+20, sealed[HeaderLen+20]^1)), testKey, ErrCorrupt},
		"header tampered":     {resum(set(sealed, 31, sealed[31]^1)), testKey, ErrCorrupt},
		"payload length lies": {resum(set(plain, 31, plain[31]^1)), nil, ErrCorrupt},
		"body length lies":    {resum(set(plain, 23, plain[23]^1)), nil, ErrCorrupt},
	} {
		if _, err := Decode(tc.data, tc.key, MaxPayload); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v; want %v", name, err, tc.want)
		}
	}
	if _, err := Decode(plain, testKey, MaxPayload); err != nil {
		t.Errorf("a plain export with a key configured (the key came later): %v", err)
	}
	if _, err := Decode(plain, nil, 10); !errors.Is(err, ErrCorrupt) {
		t.Errorf("over the payload cap: %v", err)
	}
}

// FuzzDecode feeds hostile bytes to the decoder, with and without a key: it
// must return an error or the payload, never panic, and never allocate
// beyond its cap. Seeds are committed in testdata/fuzz/FuzzDecode.
// Run: go test -run '^$' -fuzz FuzzDecode ./internal/contacts/exportfile
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, key := range [][]byte{nil, testKey} {
			p, err := Decode(data, key, 1<<20)
			if err != nil {
				continue
			}
			again, err := Encode(p, key)
			if err != nil {
				t.Fatal(err)
			}
			if q, err := Decode(again, key, 1<<20); err != nil || !bytes.Equal(p, q) {
				t.Fatalf("a decoded payload does not survive a round trip: %v", err)
			}
		}
	})
}

// TestSeedCorpus checks the committed seeds are there; with
// LIFELINE_WRITE_FUZZ_SEEDS=1 it writes them.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if os.Getenv("LIFELINE_WRITE_FUZZ_SEEDS") == "" {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) < 5 {
			t.Fatalf("the seed corpus in %s is missing (%v); write it with LIFELINE_WRITE_FUZZ_SEEDS=1", dir, err)
		}
		return
	}
	plain, _ := Encode(payload, nil)
	sealed, _ := Encode(payload, testKey)
	empty, _ := Encode(nil, nil)
	seeds := [][]byte{plain, sealed, empty, plain[:HeaderLen+TrailerLen], []byte(Magic), resum(set(plain, 4, 2))}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+strconv.Itoa(i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
