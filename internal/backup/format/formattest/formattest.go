// Package formattest breaks backup objects on disk in tests, the way a bad
// disk or a bad copy would, to prove that the damage is found and contained.
package formattest

import (
	"context"
	"os"
	"testing"

	"lifeline/internal/backup/format"
)

// CorruptTenant flips a byte in the middle of tenant's first block in the
// object file at path (objects are stored read-only; it makes the file
// writable). The object still opens and its other tenants still read; that
// tenant does not. It reports false, changing nothing, when the object holds
// no such tenant.
func CorruptTenant(t testing.TB, path, tenant string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	rd, err := format.Open(context.Background(), format.ReaderAt(f), st.Size(), nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := rd.Lookup(tenant)
	if !ok {
		return false
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk := ti.Blocks[0]
	raw[blk.Offset+blk.Length/2] ^= 0x5a
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}
