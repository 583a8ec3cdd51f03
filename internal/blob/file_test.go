package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/blob/blobtest"
	"lifeline/internal/fault"
)

func TestFileConformance(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// allFiles lists every file and folder under dir, hidden ones included.
func allFiles(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestFileHostileKeysStayInRoot(t *testing.T) {
	t.Parallel()
	outer := t.TempDir()
	s, err := blob.OpenFile(filepath.Join(outer, "root"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range blobtest.HostileKeys {
		s.Put(ctx, k, strings.NewReader("evil"), 4, time.Time{})
		s.Delete(ctx, k)
	}
	if got := allFiles(t, outer); strings.Join(got, " ") != "root" {
		t.Fatalf("hostile keys created %v", got)
	}
}

func TestFileFailedPutLeavesNoTempFile(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := blob.OpenFile(root)
	ctx := context.Background()
	if err := s.Put(ctx, "a/b", strings.NewReader("short"), 100, time.Time{}); err == nil {
		t.Fatal("short Put succeeded")
	}
	if err := s.Put(ctx, "a/c", strings.NewReader("x"), 1, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Only the folder, the object and its retention sidecar remain.
	if got := strings.Join(allFiles(t, root), " "); got != "a a/.c.retain a/c" {
		t.Fatalf("files after one failed and one good Put: %s", got)
	}
}

func TestFileKeyCannotAlsoBeFolder(t *testing.T) {
	t.Parallel()
	s, _ := blob.OpenFile(t.TempDir())
	ctx := context.Background()
	put := func(k string) error { return s.Put(ctx, k, strings.NewReader("x"), 1, time.Time{}) }
	if err := put("a/b"); err != nil {
		t.Fatal(err)
	}
	if err := put("a/b/c"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("Put below an object: %v, want ErrInvalidKey", err)
	}
	if err := put("x/y/z"); err != nil {
		t.Fatal(err)
	}
	if err := put("x/y"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("Put over a folder of keys: %v, want ErrInvalidKey", err)
	}
}

// A crash between writing the sidecar and linking the object leaves an
// orphan sidecar; it must not lend its retention to a later object.
func TestFileOrphanSidecarIgnored(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := blob.OpenFile(root)
	ctx := context.Background()
	os.MkdirAll(filepath.Join(root, "k"), 0o755)
	orphan := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339Nano)
	os.WriteFile(filepath.Join(root, "k", ".obj.retain"), []byte(orphan), 0o644)
	if err := s.Put(ctx, "k/obj", strings.NewReader("x"), 1, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "k/obj"); err != nil {
		t.Fatalf("Delete of an object put without retention: %v", err)
	}
}

func TestFileDamagedSidecarKeepsObject(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := blob.OpenFile(root)
	ctx := context.Background()
	if err := s.Put(ctx, "obj", strings.NewReader("x"), 1, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, ".obj.retain"), []byte("garbage"), 0o644)
	if err := s.Delete(ctx, "obj"); err == nil {
		t.Fatal("Delete with a damaged retention sidecar succeeded")
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := t.TempDir()
	s, err := blob.Open(ctx, "file:backups", base)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*blob.File).Root(); got != filepath.Join(base, "backups") {
		t.Fatalf("file:backups opened %s, want it under the base folder", got)
	}
	abs := filepath.Join(t.TempDir(), "abs")
	if s, err = blob.Open(ctx, "file:"+abs, base); err != nil || s.(*blob.File).Root() != abs {
		t.Fatalf("file:%s opened %v, %v", abs, s, err)
	}
	if _, err := blob.Open(ctx, "s3://bucket/pre/fix?endpoint=http://127.0.0.1:9&region=us-east-1&path_style=true&lock=compliance", base); err != nil {
		t.Fatalf("a good s3 URL: %v", err)
	}

	for _, c := range []struct{ url, mention string }{
		{"backups", "no scheme"},
		{"ftp://host/x", "ftp"},
		{"file:", "no folder"},
		{"s3:///prefix", "no bucket"},
		{"s3://b/p?lock=forever", "forever"},
		{"s3://b/p?path_style=maybe", "maybe"},
		{"s3://b/p?endpoint=127.0.0.1:9000", "127.0.0.1:9000"},
		{"s3://b/p?colour=blue", "colour"},
		{"s3://b/a/../b", "prefix"},
		{"s3://key:secret@b/p", "credentials"},
	} {
		_, err := blob.Open(ctx, c.url, base)
		if err == nil {
			t.Errorf("Open(%q) succeeded", c.url)
			continue
		}
		if fault.CodeOf(err) != fault.Invalid || fault.HintOf(err) == "" || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("Open(%q) = %v (code %s, hint %q); want an invalid error mentioning %q with a hint",
				c.url, err, fault.CodeOf(err), fault.HintOf(err), c.mention)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error leaks the secret: %v", c.url, err)
		}
	}
}

func TestFaulty(t *testing.T) {
	t.Parallel()
	fs, _ := blob.OpenFile(t.TempDir())
	s := blob.NewFaulty(fs)
	ctx := context.Background()
	if err := s.Put(ctx, "a", strings.NewReader("hello"), 5, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Get(ctx, "a", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	s.SetDown(true)
	unavailable := func(what string, err error) {
		t.Helper()
		if fault.CodeOf(err) != fault.Unavailable {
			t.Errorf("%s while down: %v, want an unavailable error", what, err)
		}
	}
	_, err = rc.Read(make([]byte, 1))
	unavailable("reading an open reader", err)
	unavailable("Put", s.Put(ctx, "b", strings.NewReader("x"), 1, time.Time{}))
	_, err = s.Get(ctx, "a", 0, -1)
	unavailable("Get", err)
	_, err = s.Stat(ctx, "a")
	unavailable("Stat", err)
	unavailable("List", s.List(ctx, "", func(blob.Info) error { return nil }))
	unavailable("Delete", s.Delete(ctx, "a"))
	if _, err := fs.Stat(ctx, "b"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a Put while down reached the store: %v", err)
	}
	s.SetDown(false)
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil || buf.String() != "hello" {
		t.Fatalf("after coming back: read %q, %v", buf.String(), err)
	}
	if err := s.Put(ctx, "b", strings.NewReader("x"), 1, time.Time{}); err != nil {
		t.Fatal(err)
	}
}
