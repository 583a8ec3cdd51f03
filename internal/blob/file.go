package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"lifeline/internal/fault"
)

// File is a Store in a local folder: each object is a plain file at its key's
// path, so an operator can inspect or copy the repository with ordinary tools.
//
// Durability: Put writes a hidden temp file beside the target, fsyncs it,
// hard-links it to the final name (link, unlike rename, fails if the name is
// taken, which makes objects write-once) and fsyncs the folder. A crash leaves
// at worst a hidden temp file, which List never shows.
//
// Retention is kept in a hidden sidecar file beside the object
// (".NAME.retain", an RFC 3339 time), written before the object appears.
// Puts and Deletes are serialised within one process; two processes putting
// the same key at the same moment could leave the loser's retention date on
// the winner's object, so give each folder one writing process.
//
// A key cannot also be a folder of other keys (a/b and a/b/c); the folder
// store refuses the second with ErrInvalidKey. The repository layout never
// needs both.
type File struct {
	root string
	now  func() time.Time
	mu   sync.Mutex // serialises publishing and deleting (see the type's doc)
}

// OpenFile returns the folder store rooted at dir, creating the folder.
func OpenFile(dir string) (*File, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "set backups: file:DIR to a usable folder", "backups folder %q", dir)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fault.Wrap(err, fault.Invalid,
			"create the folder or point backups: file:DIR at a writable one", "backups folder %q", root)
	}
	return &File{root: root, now: time.Now}, nil
}

// Root is the absolute folder the store writes under.
func (s *File) Root() string { return s.root }

func (s *File) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

func sidecarPath(objPath string) string {
	return filepath.Join(filepath.Dir(objPath), "."+filepath.Base(objPath)+".retain")
}

func (s *File) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !retainUntil.IsZero() && !retainUntil.After(s.now()) {
		return fault.New(fault.Invalid, "pass a future time, or zero for no retention",
			"blob put %q: retain-until %s is not in the future", key, retainUntil.Format(time.RFC3339))
	}
	final := s.path(key)
	if err := s.existing(key, final); err != nil {
		return err
	}
	dir := filepath.Dir(final)
	if err := s.mkdirAll(key, dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(final)+".tmp-*")
	if err != nil {
		return unavailable(err, "put", key)
	}
	defer os.Remove(tmp.Name()) // after Link the object lives on under its own name
	defer tmp.Close()
	if size >= 0 {
		r = io.LimitReader(r, size+1) // one byte over is enough to tell
	}
	n, err := io.Copy(tmp, ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("blob put %q: reading the content: %w", key, err)
	}
	if size >= 0 && n != size {
		return fault.New(fault.Internal, "", "blob put %q: content was %d bytes, expected %d", key, n, size)
	}
	if err := tmp.Sync(); err != nil {
		return unavailable(err, "put", key)
	}
	if err := tmp.Close(); err != nil {
		return unavailable(err, "put", key)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.existing(key, final); err != nil {
		return err
	}
	// No object exists, so any sidecar here is left from a crashed Put:
	// replace or remove it so the new object carries only its own retention.
	side := sidecarPath(final)
	if retainUntil.IsZero() {
		if err := os.Remove(side); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return unavailable(err, "put", key)
		}
	} else if err := writeSidecar(side, retainUntil); err != nil {
		return unavailable(err, "put", key)
	}
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("blob put %q: %w", key, ErrExists)
		}
		os.Remove(side)
		return unavailable(err, "put", key)
	}
	return unavailable(syncDir(dir), "put", key)
}

// existing returns ErrExists if key already names an object, or an
// ErrInvalidKey if it names a folder of other keys.
func (s *File) existing(key, final string) error {
	fi, err := os.Lstat(final)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil // ENOTDIR: a parent is an object; mkdirAll reports it
	case err != nil:
		return unavailable(err, "put", key)
	case fi.IsDir():
		return fmt.Errorf("%w %q: the folder store already holds keys under %q/", ErrInvalidKey, key, key)
	default:
		return fmt.Errorf("blob put %q: %w", key, ErrExists)
	}
}

// mkdirAll creates the folders down to dir, fsyncing each new folder's parent
// so the object's path survives a crash along with its content.
func (s *File) mkdirAll(key, dir string) error {
	rel, err := filepath.Rel(s.root, dir)
	if err != nil || rel == "." {
		return unavailable(err, "put", key)
	}
	p := s.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := p
		p = filepath.Join(p, seg)
		err := os.Mkdir(p, 0o755)
		if err == nil {
			if err := syncDir(parent); err != nil {
				return unavailable(err, "put", key)
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return unavailable(err, "put", key)
		}
		if fi, err := os.Lstat(p); err != nil {
			return unavailable(err, "put", key)
		} else if !fi.IsDir() {
			k, _ := filepath.Rel(s.root, p)
			return fmt.Errorf("%w %q: the folder store holds object %q, which cannot also be a folder",
				ErrInvalidKey, key, filepath.ToSlash(k))
		}
	}
	return nil
}

func writeSidecar(path string, t time.Time) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.WriteString(t.UTC().Format(time.RFC3339Nano) + "\n"); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readSidecar returns the retention recorded for the object at objPath, or
// zero if there is none.
func readSidecar(objPath string) (time.Time, error) {
	b, err := os.ReadFile(sidecarPath(objPath))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		// A damaged sidecar must not make the object deletable.
		return time.Time{}, fault.Wrap(err, fault.Internal, "inspect or restore the sidecar file",
			"retention sidecar %s is unreadable", sidecarPath(objPath))
	}
	return t, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *File) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fault.New(fault.Invalid, "", "blob get %q: negative offset %d", key, off)
	}
	f, err := s.openObject(key)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, unavailable(err, "get", key)
	}
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	return readCloser{r, f}, nil
}

func (s *File) openObject(key string) (*os.File, error) {
	f, err := os.Open(s.path(key))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("blob %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, unavailable(err, "get", key)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("blob %q: %w", key, ErrNotFound)
	}
	return f, nil
}

func (s *File) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	p := s.path(key)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || (err == nil && !fi.Mode().IsRegular()) {
		return Info{}, fmt.Errorf("blob %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return Info{}, unavailable(err, "stat", key)
	}
	ru, err := readSidecar(p)
	if err != nil {
		return Info{}, unavailable(err, "stat", key)
	}
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), RetainUntil: ru}, nil
}

// List walks only the folders that can hold keys with the prefix. Within a
// folder, a subfolder sorts as its name plus "/", which makes a depth-first
// walk yield exactly the lexical order of whole keys ("a-c" < "a/b").
func (s *File) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := validPrefix(prefix); err != nil {
		return err
	}
	start := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
	}
	return s.walk(ctx, start, prefix, fn)
}

func (s *File) walk(ctx context.Context, rel, prefix string, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, filepath.FromSlash(rel)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return unavailable(err, "list", prefix)
	}
	type entry struct {
		sortName string
		e        fs.DirEntry
	}
	var es []entry
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // temp files and sidecars
		}
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		es = append(es, entry{n, e})
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.sortName, b.sortName) })
	for _, x := range es {
		key := x.e.Name()
		if rel != "" {
			key = rel + "/" + key
		}
		if x.e.IsDir() {
			if strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				if err := s.walk(ctx, key, prefix, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !x.e.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			continue
		}
		fi, err := x.e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we listed
		}
		if err != nil {
			return unavailable(err, "list", prefix)
		}
		if err := fn(Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

func (s *File) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	p := s.path(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || (err == nil && !fi.Mode().IsRegular()) {
		return nil
	}
	if err != nil {
		return unavailable(err, "delete", key)
	}
	ru, err := readSidecar(p)
	if err != nil {
		return err
	}
	if now := s.now(); ru.After(now) {
		return fmt.Errorf("blob delete %q: retained until %s: %w", key, ru.Format(time.RFC3339), ErrRetained)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return unavailable(err, "delete", key)
	}
	if err := os.Remove(sidecarPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return unavailable(err, "delete", key)
	}
	return unavailable(syncDir(filepath.Dir(p)), "delete", key)
}

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readCloser struct {
	io.Reader
	io.Closer
}
