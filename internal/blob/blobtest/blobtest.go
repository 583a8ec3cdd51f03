// Package blobtest is the one conformance suite every blob.Store passes. The
// folder store and the S3 store (against a real S3-compatible server) both
// run it, so the backup repository can rely on the Store contract alone.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/fault"
)

// Run runs the suite. newStore returns an empty store for one subtest; the
// subtests run in parallel, so stores must not share keys (an S3 harness
// gives each its own prefix).
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"PutGet", testPutGet},
		{"RangeGet", testRangeGet},
		{"Immutable", testImmutable},
		{"Stat", testStat},
		{"ListOrderAndPrefix", testList},
		{"Delete", testDelete},
		{"NotFound", testNotFound},
		{"HostileKeys", testHostileKeys},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentPutsOneKey", testConcurrentPutsOneKey},
		{"FailingReaderLeavesNothing", testFailingReader},
		{"LargeObject", testLarge},
		{"Retention", testRetention},
		{"Counting", testCounting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(ctx(t), key, bytes.NewReader(data), int64(len(data)), time.Time{}); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, s blob.Store, key string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(ctx(t), key, off, n)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): reading: %v", key, off, n, err)
	}
	return b
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testPutGet(t *testing.T, s blob.Store) {
	data := []byte("hello, repository\x00\xff")
	put(t, s, "a/b/c.seg", data)
	if got := get(t, s, "a/b/c.seg", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, want %q", got, data)
	}
	put(t, s, "empty", nil)
	if got := get(t, s, "empty", 0, -1); len(got) != 0 {
		t.Fatalf("empty object read %d bytes", len(got))
	}
	// Unknown size (-1) is allowed.
	if err := s.Put(ctx(t), "unsized", strings.NewReader("xyz"), -1, time.Time{}); err != nil {
		t.Fatalf("Put with size -1: %v", err)
	}
	if got := get(t, s, "unsized", 0, -1); string(got) != "xyz" {
		t.Fatalf("unsized Get = %q", got)
	}
}

func testRangeGet(t *testing.T, s blob.Store) {
	data := pattern(1000)
	put(t, s, "r/obj", data)
	for _, c := range []struct {
		off, n int64
		want   []byte
	}{
		{0, 10, data[:10]},       // first bytes
		{100, 50, data[100:150]}, // middle
		{990, -1, data[990:]},    // tail, to the end
		{0, -1, data},            // whole
		{0, 1000, data},          // exactly the size
		{900, 100, data[900:]},   // exact tail
		{999, 1, data[999:]},     // last byte
		{995, 100, data[995:]},   // cut at the end
		{0, 1 << 40, data},       // huge n
		{1000, -1, nil},          // at the end
		{1000, 1, nil},           // one past the end
		{2000, 5, nil},           // far past the end
		{10, 0, nil},             // empty range
		{511, 2, data[511:513]},  // straddling a power of two
	} {
		got := get(t, s, "r/obj", c.off, c.n)
		if !bytes.Equal(got, c.want) {
			t.Errorf("Get(off=%d, n=%d) = %d bytes, want %d", c.off, c.n, len(got), len(c.want))
		}
	}
	_, err := s.Get(ctx(t), "r/missing", 10, 10)
	wantErr(t, "ranged Get of a missing object", err, blob.ErrNotFound)
	_, err = s.Get(ctx(t), "r/missing", 0, 0)
	wantErr(t, "empty Get of a missing object", err, blob.ErrNotFound)
	if _, err := s.Get(ctx(t), "r/obj", -1, 10); err == nil {
		t.Fatal("Get with a negative offset succeeded")
	}
}

func testImmutable(t *testing.T, s blob.Store) {
	orig := []byte("original")
	put(t, s, "imm/key", orig)
	err := s.Put(ctx(t), "imm/key", strings.NewReader("replaced!"), 9, time.Time{})
	wantErr(t, "second Put", err, blob.ErrExists)
	if fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("second Put: code %s, want conflict", fault.CodeOf(err))
	}
	if got := get(t, s, "imm/key", 0, -1); !bytes.Equal(got, orig) {
		t.Fatalf("after a refused Put the object reads %q, want %q", got, orig)
	}
	var n int
	if err := s.List(ctx(t), "imm/", func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("List after a refused Put shows %d objects, want 1", n)
	}
}

func testStat(t *testing.T, s blob.Store) {
	before := time.Now().Add(-time.Minute) // allow for a server's coarse clock
	put(t, s, "st/obj", pattern(1234))
	info, err := s.Stat(ctx(t), "st/obj")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "st/obj" || info.Size != 1234 {
		t.Fatalf("Stat = %+v, want key st/obj size 1234", info)
	}
	if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat mod time %v is not about now", info.ModTime)
	}
	if !info.RetainUntil.IsZero() {
		t.Fatalf("Stat retain-until = %v for an object put without retention", info.RetainUntil)
	}
}

func testList(t *testing.T, s blob.Store) {
	// "a-c" sorts before "a/b" ('-' < '/'), and "a0" after it: a store that
	// walks folders must still give byte order of whole keys.
	keys := []string{"p/b", "p/a0", "p/a/c", "q/x", "p/a-c", "pz", "p/a/b", "p/a/d/e"}
	for i, k := range keys {
		put(t, s, k, pattern(i+1))
	}
	list := func(prefix string) []string {
		t.Helper()
		var got []string
		err := s.List(ctx(t), prefix, func(i blob.Info) error {
			got = append(got, i.Key)
			want := 1 + indexOf(keys, i.Key)
			if i.Size != int64(want) {
				t.Errorf("List: %s has size %d, want %d", i.Key, i.Size, want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		return got
	}
	for _, c := range []struct {
		prefix string
		want   string
	}{
		{"", "p/a-c p/a/b p/a/c p/a/d/e p/a0 p/b pz q/x"},
		{"p/", "p/a-c p/a/b p/a/c p/a/d/e p/a0 p/b"},
		{"p", "p/a-c p/a/b p/a/c p/a/d/e p/a0 p/b pz"},
		{"p/a", "p/a-c p/a/b p/a/c p/a/d/e p/a0"},
		{"p/a/", "p/a/b p/a/c p/a/d/e"},
		{"p/a/d", "p/a/d/e"},
		{"p/a/b", "p/a/b"},
		{"q/", "q/x"},
		{"nothing/", ""},
		{"p/c", ""},
	} {
		if got := strings.Join(list(c.prefix), " "); got != c.want {
			t.Errorf("List(%q) = [%s], want [%s]", c.prefix, got, c.want)
		}
	}
	stop := errors.New("stop")
	var n int
	err := s.List(ctx(t), "", func(blob.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("List whose fn fails: err %v after %d calls, want stop after 1", err, n)
	}
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -2
}

func testDelete(t *testing.T, s blob.Store) {
	put(t, s, "del/a", []byte("a"))
	put(t, s, "del/b", []byte("b"))
	if err := s.Delete(ctx(t), "del/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Stat(ctx(t), "del/a")
	wantErr(t, "Stat after Delete", err, blob.ErrNotFound)
	_, err = s.Get(ctx(t), "del/a", 0, -1)
	wantErr(t, "Get after Delete", err, blob.ErrNotFound)
	if err := s.Delete(ctx(t), "del/a"); err != nil {
		t.Fatalf("second Delete: %v, want nil", err)
	}
	if err := s.Delete(ctx(t), "del/never"); err != nil {
		t.Fatalf("Delete of a missing object: %v, want nil", err)
	}
	var got []string
	if err := s.List(ctx(t), "del/", func(i blob.Info) error { got = append(got, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "del/b" {
		t.Fatalf("List after Delete = %v, want [del/b]", got)
	}
	// A deleted key may be written again.
	put(t, s, "del/a", []byte("again"))
	if got := get(t, s, "del/a", 0, -1); string(got) != "again" {
		t.Fatalf("re-put after Delete reads %q", got)
	}
}

func testNotFound(t *testing.T, s blob.Store) {
	_, err := s.Get(ctx(t), "nf/x", 0, -1)
	wantErr(t, "Get", err, blob.ErrNotFound)
	if fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("Get of a missing object: code %s, want not_found", fault.CodeOf(err))
	}
	_, err = s.Stat(ctx(t), "nf/x")
	wantErr(t, "Stat", err, blob.ErrNotFound)
	// A "folder" of other keys is not an object either.
	put(t, s, "nf/dir/obj", []byte("x"))
	_, err = s.Stat(ctx(t), "nf/dir")
	wantErr(t, "Stat of a key prefix", err, blob.ErrNotFound)
	_, err = s.Get(ctx(t), "nf/dir", 0, -1)
	wantErr(t, "Get of a key prefix", err, blob.ErrNotFound)
	// A missing key below an object's name.
	_, err = s.Stat(ctx(t), "nf/dir/obj/deeper")
	wantErr(t, "Stat below an object", err, blob.ErrNotFound)
}

// HostileKeys are keys every store must refuse before touching storage.
var HostileKeys = []string{
	"", "/abs", "/etc/passwd", "a//b", "a/", "../x", "a/../../b", "..", ".", "a/./b",
	`a\b`, `..\..\x`, "a\x00b", ".hidden", "a/.tmp", "a/\x01b", "a/b\x7f",
	strings.Repeat("x", 2000), strings.Repeat("y", 300) + "/z", "\xff\xfe",
}

func testHostileKeys(t *testing.T, s blob.Store) {
	c := ctx(t)
	for _, k := range HostileKeys {
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("%s(%q): got %v, want ErrInvalidKey", what, k, err)
			}
			if fault.CodeOf(err) != fault.Invalid {
				t.Errorf("%s(%q): code %s, want invalid", what, k, fault.CodeOf(err))
			}
		}
		check("Put", s.Put(c, k, strings.NewReader("evil"), 4, time.Time{}))
		_, err := s.Get(c, k, 0, -1)
		check("Get", err)
		_, err = s.Stat(c, k)
		check("Stat", err)
		check("Delete", s.Delete(c, k))
		if k != "" && k != "a/" { // "" lists everything; "a/" is a fine prefix
			check("List", s.List(c, k, func(blob.Info) error { return nil }))
		}
	}
	var n int
	if err := s.List(c, "", func(i blob.Info) error { n++; t.Errorf("hostile Put left %q", i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
}

func testConcurrentPuts(t *testing.T, s blob.Store) {
	const n = 24
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			d := bytes.Repeat([]byte{byte(i)}, 1000+i)
			errs[i] = s.Put(ctx(t), fmt.Sprintf("cc/%02d/obj", i), bytes.NewReader(d), int64(len(d)), time.Time{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	var got int
	err := s.List(ctx(t), "cc/", func(info blob.Info) error {
		var i int
		fmt.Sscanf(info.Key, "cc/%02d/obj", &i)
		if info.Key != fmt.Sprintf("cc/%02d/obj", got) {
			t.Errorf("List item %d is %q", got, info.Key)
		}
		if b := get(t, s, info.Key, 0, -1); !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, 1000+i)) {
			t.Errorf("%s has the wrong content", info.Key)
		}
		got++
		return nil
	})
	if err != nil || got != n {
		t.Fatalf("List after concurrent Puts: %d objects, err %v; want %d", got, err, n)
	}
}

// Writers racing on one key: exactly one wins, whole; the rest get ErrExists.
// On S3 this exercises the server's If-None-Match, not just the HEAD check.
func testConcurrentPutsOneKey(t *testing.T, s blob.Store) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			d := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
			errs[i] = s.Put(ctx(t), "race/key", bytes.NewReader(d), int64(len(d)), time.Time{})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("Puts %d and %d of one key both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, blob.ErrExists):
			t.Fatalf("losing Put %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Put of the key succeeded")
	}
	if got := get(t, s, "race/key", 0, -1); !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + winner)}, 64<<10)) {
		t.Fatal("the object is not the winning Put's content")
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

var errBroken = errors.New("reader broke")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errBroken
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

func testFailingReader(t *testing.T, s blob.Store) {
	err := s.Put(ctx(t), "fail/obj", &failingReader{n: 100 << 10}, 1<<20, time.Time{})
	if !errors.Is(err, errBroken) {
		t.Fatalf("Put with a failing reader: %v, want the reader's error", err)
	}
	// A reader that ends early is a failure too: size is a promise.
	err = s.Put(ctx(t), "fail/short", strings.NewReader("short"), 100, time.Time{})
	if err == nil {
		t.Fatal("Put of 5 bytes announced as 100 succeeded")
	}
	err = s.Put(ctx(t), "fail/long", strings.NewReader("longer than said"), 4, time.Time{})
	if err == nil {
		t.Fatal("Put of 16 bytes announced as 4 succeeded")
	}
	// A cancelled context fails the Put and leaves nothing.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(cctx, "fail/cancelled", strings.NewReader("x"), 1, time.Time{}); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	for _, k := range []string{"fail/obj", "fail/short", "fail/long", "fail/cancelled"} {
		_, err := s.Stat(ctx(t), k)
		wantErr(t, "Stat after a failed Put of "+k, err, blob.ErrNotFound)
	}
	if err := s.List(ctx(t), "", func(i blob.Info) error {
		t.Errorf("a failed Put left %q", i.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The key is still free.
	put(t, s, "fail/obj", []byte("fine"))
}

func testLarge(t *testing.T, s blob.Store) {
	data := make([]byte, 20<<20+13)
	rand.Read(data)
	if err := s.Put(ctx(t), "big/obj", bytes.NewReader(data), int64(len(data)), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "big/obj", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("20 MB round trip: got %d bytes, not equal", len(got))
	}
	off := int64(len(data) / 2)
	if got := get(t, s, "big/obj", off, 4096); !bytes.Equal(got, data[off:off+4096]) {
		t.Fatal("range in the middle of a large object differs")
	}
	if info, err := s.Stat(ctx(t), "big/obj"); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
}

func testRetention(t *testing.T, s blob.Store) {
	c := ctx(t)
	if err := s.Put(c, "ret/past", strings.NewReader("x"), 1, time.Now().Add(-time.Hour)); err == nil {
		t.Fatal("Put with a retain-until in the past succeeded")
	}
	long := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := s.Put(c, "ret/long", strings.NewReader("kept"), 4, long); err != nil {
		t.Fatal(err)
	}
	short := time.Now().Add(3 * time.Second).Truncate(time.Second)
	if err := s.Put(c, "ret/short", strings.NewReader("brief"), 5, short); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(c, "ret/long")
	if err != nil {
		t.Fatal(err)
	}
	if !info.RetainUntil.Equal(long) {
		t.Fatalf("Stat retain-until = %v, want %v", info.RetainUntil, long)
	}
	for _, k := range []string{"ret/long", "ret/short"} {
		err := s.Delete(c, k)
		wantErr(t, "Delete of "+k+" under retention", err, blob.ErrRetained)
		if fault.CodeOf(err) != fault.Refused {
			t.Fatalf("Delete under retention: code %s, want refused", fault.CodeOf(err))
		}
		if got := get(t, s, k, 0, -1); len(got) == 0 {
			t.Fatalf("%s is gone after a refused Delete", k)
		}
	}
	// Immutability holds for retained objects too.
	err = s.Put(c, "ret/long", strings.NewReader("nope"), 4, time.Time{})
	wantErr(t, "Put over a retained object", err, blob.ErrExists)

	time.Sleep(time.Until(short) + 1500*time.Millisecond)
	if err := s.Delete(c, "ret/short"); err != nil {
		t.Fatalf("Delete after retention passed: %v", err)
	}
	_, err = s.Stat(c, "ret/short")
	wantErr(t, "Stat after Delete", err, blob.ErrNotFound)
	wantErr(t, "Delete of ret/long, still retained", s.Delete(c, "ret/long"), blob.ErrRetained)
}

func testCounting(t *testing.T, s blob.Store) {
	cs := blob.Count(s)
	data := pattern(10000)
	put(t, cs, "cnt/obj", data)
	if cs.Puts() != 1 || cs.BytesWritten() != 10000 {
		t.Fatalf("after one Put: puts %d bytes %d", cs.Puts(), cs.BytesWritten())
	}
	cs.Reset()
	get(t, cs, "cnt/obj", 100, 100)
	get(t, cs, "cnt/obj", 9000, -1)
	if cs.Gets() != 2 || cs.BytesRead() != 1100 {
		t.Fatalf("after ranged Gets of 100 and 1000 bytes: gets %d, bytes read %d", cs.Gets(), cs.BytesRead())
	}
	if _, err := cs.Get(ctx(t), "cnt/missing", 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get of a missing object through Counting: %v", err)
	}
	if cs.Gets() != 2 {
		t.Fatalf("a failed Get was counted: gets %d", cs.Gets())
	}
}
