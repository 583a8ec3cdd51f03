package blob

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"lifeline/internal/fault"
)

// Counting wraps a Store and counts what passes through it, so tests can
// prove that restoring a few tenants reads only a small share of the
// repository.
type Counting struct {
	Store
	gets, bytesRead, puts, bytesWritten atomic.Int64
}

// Count wraps s.
func Count(s Store) *Counting { return &Counting{Store: s} }

// Gets is the number of Get calls that returned a reader.
func (c *Counting) Gets() int64 { return c.gets.Load() }

// BytesRead is the number of bytes read from readers Get returned.
func (c *Counting) BytesRead() int64 { return c.bytesRead.Load() }

// Puts is the number of Put calls that succeeded.
func (c *Counting) Puts() int64 { return c.puts.Load() }

// BytesWritten is the number of bytes stored by successful Puts.
func (c *Counting) BytesWritten() int64 { return c.bytesWritten.Load() }

// Reset zeroes the counters, e.g. between writing a repository and
// measuring a restore from it.
func (c *Counting) Reset() {
	c.gets.Store(0)
	c.bytesRead.Store(0)
	c.puts.Store(0)
	c.bytesWritten.Store(0)
}

func (c *Counting) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := c.Store.Get(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	c.gets.Add(1)
	return readCloser{&countReader{rc, &c.bytesRead}, rc}, nil
}

func (c *Counting) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	var n atomic.Int64
	if err := c.Store.Put(ctx, key, &countReader{r, &n}, size, retainUntil); err != nil {
		return err
	}
	c.puts.Add(1)
	c.bytesWritten.Add(n.Load())
	return nil
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Faulty wraps a Store with a switch: while it is down every call, and every
// read from a reader Get returned earlier, fails with a fault.Unavailable
// error, as an unreachable blob store would. Tests use it to prove that
// shipping backs off and loses nothing.
type Faulty struct {
	s    Store
	down atomic.Bool
}

// NewFaulty wraps s, initially up.
func NewFaulty(s Store) *Faulty { return &Faulty{s: s} }

// SetDown takes the store down (true) or brings it back (false).
func (f *Faulty) SetDown(down bool) { f.down.Store(down) }

// Down reports whether the store is down.
func (f *Faulty) Down() bool { return f.down.Load() }

func (f *Faulty) check(op, key string) error {
	if f.down.Load() {
		return fault.New(fault.Unavailable, "the blob store is down (switched off by a test)", "blob %s %q: store unavailable", op, key)
	}
	return nil
}

func (f *Faulty) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	if err := f.check("put", key); err != nil {
		return err
	}
	return f.s.Put(ctx, key, r, size, retainUntil)
}

func (f *Faulty) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := f.check("get", key); err != nil {
		return nil, err
	}
	rc, err := f.s.Get(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	return readCloser{faultyReader{f, key, rc}, rc}, nil
}

func (f *Faulty) Stat(ctx context.Context, key string) (Info, error) {
	if err := f.check("stat", key); err != nil {
		return Info{}, err
	}
	return f.s.Stat(ctx, key)
}

func (f *Faulty) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := f.check("list", prefix); err != nil {
		return err
	}
	return f.s.List(ctx, prefix, func(i Info) error {
		if err := f.check("list", prefix); err != nil {
			return err
		}
		return fn(i)
	})
}

func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.check("delete", key); err != nil {
		return err
	}
	return f.s.Delete(ctx, key)
}

type faultyReader struct {
	f   *Faulty
	key string
	r   io.Reader
}

func (r faultyReader) Read(p []byte) (int, error) {
	if err := r.f.check("get", r.key); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
