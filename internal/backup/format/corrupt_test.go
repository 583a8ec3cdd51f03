package format

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// smallObjects returns small objects of both kinds, encrypted and not, with
// several tenants and several blocks per tenant.
func smallObjects(t testing.TB) map[string]struct {
	obj []byte
	key []byte
} {
	multi := func(s Summary) {
		if len(s.Tenants) < 3 || len(s.Tenants[0].Blocks) < 2 {
			t.Fatalf("want several tenants with several blocks: %d tenants, %d blocks", len(s.Tenants), s.Blocks)
		}
	}
	seg, s1 := writeSegment(t, genChanges(21, 40, 60, 3), Options{BlockSize: minBlockSize})
	segEnc, s2 := writeSegment(t, genChanges(22, 1, 60, 3), Options{BlockSize: minBlockSize, Key: testKey, KeyID: "k"})
	snap, s3 := writeSnapshot(t, 90, genSnapshot(23, 90, 60, 3), Options{BlockSize: minBlockSize})
	snapEnc, s4 := writeSnapshot(t, 90, genSnapshot(24, 90, 60, 3), Options{BlockSize: minBlockSize, Key: testKey, KeyID: "k"})
	for _, s := range []Summary{s1, s2, s3, s4} {
		multi(s)
	}
	return map[string]struct {
		obj []byte
		key []byte
	}{
		"segment": {seg, nil}, "segment-encrypted": {segEnc, testKey},
		"snapshot": {snap, nil}, "snapshot-encrypted": {snapEnc, testKey},
	}
}

// Every single-byte corruption of an object is detected by Verify, with an
// error wrapping one of the sentinels, never accepted, never a panic.
func TestEveryByteCorruptionDetected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, o := range smallObjects(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := Verify(ctx, memReader(o.obj), int64(len(o.obj)), o.key); err != nil {
				t.Fatalf("intact object: %v", err)
			}
			bad := make([]byte, len(o.obj))
			for i := range o.obj {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					copy(bad, o.obj)
					bad[i] ^= x
					err := Verify(ctx, memReader(bad), int64(len(bad)), o.key)
					if err == nil {
						t.Fatalf("byte %d of %d ^ %#x: corruption accepted", i, len(bad), x)
					}
					if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
						t.Fatalf("byte %d ^ %#x: %v wraps neither ErrCorrupt nor ErrVersion", i, x, err)
					}
				}
			}
			t.Logf("%d bytes, each corrupted 3 ways: all detected", len(o.obj))
		})
	}
}

// Truncations and extensions are detected too.
func TestTruncationDetected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, o := range smallObjects(t) {
		for n := range len(o.obj) {
			if err := Verify(ctx, memReader(o.obj[:n]), int64(n), o.key); err == nil {
				t.Fatalf("%s cut to %d bytes: accepted", name, n)
			}
		}
		long := append(bytes.Clone(o.obj), 0)
		if err := Verify(ctx, memReader(long), int64(len(long)), o.key); err == nil {
			t.Fatalf("%s with a byte appended: accepted", name)
		}
		// A size larger than the bytes behind it reads short.
		if err := Verify(ctx, memReader(o.obj), int64(len(o.obj)+10), o.key); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: wrong size: %v", name, err)
		}
	}
}

// A corrupted block is reported with its tenant and block, and does not stop
// Verify from checking the other tenants.
func TestCorruptionNamesTheBlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	obj, sum := writeSegment(t, genChanges(5, 1, 600, 4), Options{BlockSize: minBlockSize})
	bad := bytes.Clone(obj)
	b1 := sum.Tenants[1].Blocks[1]
	b3 := sum.Tenants[3].Blocks[0]
	bad[b1.Offset+b1.Length/2] ^= 0x10
	bad[b3.Offset+1] ^= 0x10
	err := Verify(ctx, memReader(bad), int64(len(bad)), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{`segment block 1 of tenant "site-001"`, `segment block 0 of tenant "site-003"`, "stored checksum mismatch"} {
		if !bytes.Contains([]byte(msg), []byte(want)) {
			t.Fatalf("error %q does not contain %q", msg, want)
		}
	}
	// Reading another tenant still works.
	rd, err := Open(ctx, memReader(bad), int64(len(bad)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range rd.Tenant(ctx, "site-002") {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got error
	for _, err := range rd.Tenant(ctx, "site-001") {
		got = err
	}
	if !errors.Is(got, ErrCorrupt) {
		t.Fatalf("reading the damaged tenant: %v", got)
	}
}
