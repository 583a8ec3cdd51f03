// Package blob stores the backup repository's immutable objects. One small
// interface, Store, has two implementations: a local folder (the default) and
// S3-compatible object storage. Both pass the one conformance suite in
// blobtest, so the repository code above never knows which one it talks to.
//
// Objects are write-once: the repository relies on that to make shipping
// idempotent after a crash (a retried Put of the same key reports ErrExists
// instead of overwriting what a reader may already trust).
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"lifeline/internal/fault"
)

// Store holds immutable objects under slash-separated keys.
//
// Every method first checks its key with ValidKey and returns an error
// wrapping ErrInvalidKey for a bad one, before touching storage. Failures to
// reach the storage are fault.Unavailable errors.
type Store interface {
	// Put writes an object of size bytes read from r (size < 0: unknown).
	// It returns an error wrapping ErrExists if key already holds an object,
	// leaving that object unchanged. When Put returns nil the object is
	// durable; when it returns an error no object was created, even if r
	// failed part-way or yielded a different number of bytes than size.
	// A non-zero retainUntil must lie in the future: Delete refuses the
	// object until then (and S3 Object Lock enforces it server-side when
	// configured).
	Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error

	// Get returns a reader of the byte range [off, off+n) of the object, or
	// to its end when n < 0. A range running past the end is cut there, as
	// with io.ReaderAt; off at or beyond the end yields no bytes. Only the
	// requested bytes are fetched. It returns an error wrapping ErrNotFound
	// if the object does not exist. The caller must close the reader.
	Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)

	// Stat describes one object, including its retention. It returns an
	// error wrapping ErrNotFound if the object does not exist.
	Stat(ctx context.Context, key string) (Info, error)

	// List calls fn for every object whose key starts with prefix, in
	// lexical (byte) order of keys. The Infos carry no RetainUntil; Stat an
	// object for that. An error from fn stops List, which returns it.
	List(ctx context.Context, prefix string, fn func(Info) error) error

	// Delete removes an object. It returns an error wrapping ErrRetained if
	// the object's retention has not passed, and nil if there is no object.
	Delete(ctx context.Context, key string) error
}

// Info describes a stored object.
type Info struct {
	Key         string
	Size        int64
	ModTime     time.Time // when it was written
	RetainUntil time.Time // zero: no retention (or not reported, in List)
}

// The sentinel errors. Test for them with errors.Is. Each is a *fault.Error,
// so the CLI and API map it to the right exit and HTTP status.
var (
	ErrNotFound = &fault.Error{Code: fault.NotFound, Msg: "object not found"}
	ErrExists   = &fault.Error{Code: fault.Conflict, Msg: "object already exists (objects are immutable)"}
	ErrRetained = &fault.Error{Code: fault.Refused, Msg: "object is under retention",
		Hint: "objects cannot be deleted before their retain-until date"}
	ErrInvalidKey = &fault.Error{Code: fault.Invalid, Msg: "invalid object key"}
)

// Key limits: S3 allows 1024-byte keys; most file systems 255-byte names.
const (
	maxKeyLen     = 1024
	maxSegmentLen = 255
)

// ValidKey reports why key cannot name an object, or nil. Keys come from
// repository metadata that may be hostile, so the rules make it impossible for
// the folder store to address anything outside its root: a key is one or more
// non-empty segments separated by "/", none starting with "." (which rules out
// "." and "..", and leaves dot-names to the stores' own temp files and
// sidecars), with no NUL, backslash or other control character.
func ValidKey(key string) error { return validPath(key) }

// validPrefix accepts what List may take: "" or a key, possibly with a
// trailing "/" or a partial last segment.
func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return validPath(strings.TrimSuffix(prefix, "/"))
}

func validPath(key string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why)
	}
	switch {
	case key == "":
		return bad("empty")
	case len(key) > maxKeyLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxKeyLen))
	case !utf8.ValidString(key):
		return bad("not UTF-8")
	case strings.HasPrefix(key, "/"):
		return bad("absolute path")
	}
	for _, r := range key {
		switch {
		case r == 0:
			return bad("contains NUL")
		case r == '\\':
			return bad("contains a backslash")
		case r < 0x20 || r == 0x7f:
			return bad("contains a control character")
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return bad("empty path segment")
		case seg == "." || seg == "..":
			return bad("contains a " + seg + " segment")
		case strings.HasPrefix(seg, "."):
			return bad("segment starts with a dot")
		case len(seg) > maxSegmentLen:
			return bad(fmt.Sprintf("segment longer than %d bytes", maxSegmentLen))
		}
	}
	return nil
}

// Open returns the store a `backups:` URL names:
//
//	file:DIR   a folder; a relative DIR is taken from baseDir (the config
//	           file's folder)
//	s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true&lock=governance|compliance
//
// S3 credentials come from the standard AWS chain (environment variables,
// shared config and credentials files). A malformed URL is a fault.Invalid
// error naming the bad part and how to fix it. Open does not contact S3.
func Open(ctx context.Context, rawURL, baseDir string) (Store, error) {
	scheme, rest, ok := strings.Cut(rawURL, ":")
	if !ok {
		return nil, fault.New(fault.Invalid,
			"write backups: file:backups (a folder) or s3://bucket/prefix?region=…",
			"backups %q has no scheme", rawURL)
	}
	switch scheme {
	case "file":
		dir := strings.TrimPrefix(rest, "//") // accept file://DIR too
		if dir == "" {
			return nil, fault.New(fault.Invalid, "write backups: file:backups, a folder relative to the config file",
				"backups %q names no folder", rawURL)
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(baseDir, dir)
		}
		return OpenFile(dir)
	case "s3":
		u, err := url.Parse(rawURL)
		if err != nil {
			// Not the URL itself in the message: it may hold a secret.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fault.Wrap(err, fault.Invalid, "write backups: s3://bucket/prefix?region=…",
				"backups: the s3 URL does not parse")
		}
		cfg, err := parseS3URL(u)
		if err != nil {
			return nil, err
		}
		return OpenS3(ctx, cfg)
	default:
		return nil, fault.New(fault.Invalid,
			"use file:DIR for a local folder or s3://bucket/prefix for S3-compatible storage",
			"backups: unknown scheme %q", scheme)
	}
}

// unavailable marks a storage failure as fault.Unavailable, so shipping
// backs off and retries instead of treating it as a bug.
func unavailable(err error, op, key string) error {
	if err == nil {
		return nil
	}
	var fe *fault.Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fault.Wrap(err, fault.Unavailable, "check that the backup store is reachable and writable",
		"blob %s %q", op, key)
}
