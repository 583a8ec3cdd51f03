package blob

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"lifeline/internal/fault"
)

// S3Config says where an S3 store keeps its objects. Open builds it from an
// s3:// URL; tests may fill it in directly.
type S3Config struct {
	Bucket string
	Prefix string // prepended to every key, as PREFIX/KEY; may be empty
	// Endpoint is an S3-compatible server's base URL; empty means AWS.
	Endpoint  string
	Region    string // empty: from the AWS config chain, else us-east-1 with an Endpoint
	PathStyle bool   // bucket in the path, not the host name (most S3-compatible servers)
	// Lock is the Object Lock mode written with each retained object:
	// "governance" or "compliance"; empty writes no lock, and retention is
	// then enforced by Lifeline alone. The bucket must have Object Lock
	// enabled for either mode.
	Lock string
	// PartSize: an object larger than this is uploaded in parts of this
	// size (multipart; more when it would take over 10,000 parts). 0 means
	// 256 MiB; at least 5 MiB. Not in the URL: tests lower it.
	PartSize int64
}

// S3 is a Store in an S3 bucket, through aws-sdk-go-v2.
//
// Immutability: Put sends If-None-Match: * so the server refuses to replace
// an object, and checks with HEAD first so that a retry after a crash does
// not upload the body again. A server that answers If-None-Match with "not
// implemented" is remembered and then only the HEAD guards; two writers racing
// on one key between HEAD and PUT could then both succeed, the later
// replacing the earlier. Lifeline writes each key from one shipper, so the race
// needs two shippers on one product, which its leases prevent.
//
// Retention: a retained object carries its retain-until date as metadata
// (x-amz-meta-retain-until), which Delete honours on any server, and, with a
// Lock mode, as Object Lock retention, which the server enforces even against
// credentials that can delete. Delete never bypasses governance mode.
type S3 struct {
	client *s3.Client
	cfg    S3Config
	now    func() time.Time
	// noIfNoneMatch is set once the server has said it does not support
	// conditional writes.
	noIfNoneMatch atomic.Bool
}

// metaRetain is the user-metadata name of the retain-until date.
const metaRetain = "retain-until"

// spoolInMemory is the largest body Put buffers in memory; larger ones go
// through a temp file. The SDK needs a seekable body to sign a request over
// plain HTTP and to retry it, and spooling first means a reader that fails
// part-way never starts an upload.
const spoolInMemory = 8 << 20

// parseS3URL reads s3://BUCKET/PREFIX?endpoint=…&region=…&path_style=…&lock=….
func parseS3URL(u *url.URL) (S3Config, error) {
	const form = "write backups: s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=us-east-1&path_style=true&lock=governance"
	cfg := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	if cfg.Bucket == "" {
		return cfg, fault.New(fault.Invalid, form, "backups %q names no bucket", u.Redacted())
	}
	if u.User != nil {
		return cfg, fault.New(fault.Invalid,
			"remove the user part; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile) instead",
			"backups %q: credentials do not belong in the URL", u.Redacted())
	}
	if cfg.Prefix != "" {
		if err := ValidKey(cfg.Prefix); err != nil {
			return cfg, fault.Wrap(err, fault.Invalid, "use a prefix of plain path segments, e.g. s3://bucket/lifeline",
				"backups %q: bad prefix", u.Redacted())
		}
	}
	for name, vals := range u.Query() {
		v := vals[len(vals)-1]
		switch name {
		case "endpoint":
			e, err := url.Parse(v)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
				return cfg, fault.New(fault.Invalid, "write endpoint=http://HOST:PORT or https://HOST",
					"backups: endpoint %q is not an http(s) URL", v)
			}
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return cfg, fault.New(fault.Invalid, "write path_style=true or path_style=false",
					"backups: path_style %q is not true or false", v)
			}
			cfg.PathStyle = b
		case "lock":
			if v != "governance" && v != "compliance" {
				return cfg, fault.New(fault.Invalid,
					"write lock=governance or lock=compliance, or leave it out for no Object Lock",
					"backups: lock %q is not an Object Lock mode", v)
			}
			cfg.Lock = v
		default:
			return cfg, fault.New(fault.Invalid, "the options are endpoint, region, path_style and lock",
				"backups: unknown option %q in %q", name, u.Redacted())
		}
	}
	return cfg, nil
}

// OpenS3 returns the store cfg describes. It reads the AWS configuration
// chain but does not contact the server.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	opts := []func(*config.LoadOptions) error{
		// S3-compatible servers reject or mishandle the flexible checksums
		// the SDK sends by default; Content-MD5 (below) covers integrity.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// The default retryer stops retrying for a while once an outage has
		// used up its retry budget; a daemon that ships every second should
		// keep trying each call instead.
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.RateLimiter = ratelimit.None })
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check AWS_PROFILE and the AWS config and credentials files",
			"backups: loading the AWS configuration")
	}
	if awsCfg.Region == "" {
		if cfg.Endpoint == "" {
			return nil, fault.New(fault.Invalid, "add &region=… to the backups URL or set AWS_REGION",
				"backups: s3://%s has no region", cfg.Bucket)
		}
		awsCfg.Region = "us-east-1" // what S3-compatible servers expect by default
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	return &S3{client: client, cfg: cfg, now: time.Now}, nil
}

// Client is the underlying SDK client, for tests and bucket administration.
func (s *S3) Client() *s3.Client { return s.client }

func (s *S3) objectKey(key string) string {
	if s.cfg.Prefix == "" {
		return key
	}
	return s.cfg.Prefix + "/" + key
}

func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !retainUntil.IsZero() && !retainUntil.After(s.now()) {
		return fault.New(fault.Invalid, "pass a future time, or zero for no retention",
			"blob put %q: retain-until %s is not in the future", key, retainUntil.Format(time.RFC3339))
	}
	if _, err := s.head(ctx, "put", key); err == nil {
		return fmt.Errorf("blob put %q: %w", key, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	body, n, cleanup, err := spool(ctx, r, size)
	if err != nil {
		return fmt.Errorf("blob put %q: reading the content: %w", key, err)
	}
	defer cleanup()
	if n > s.partSize() {
		return s.putErr(s.putParts(ctx, key, body, n, retainUntil), key)
	}
	sec := io.NewSectionReader(body, 0, n)
	sum, err := md5Of(ctx, sec)
	if err != nil {
		return fmt.Errorf("blob put %q: reading the content: %w", key, err)
	}
	in := &s3.PutObjectInput{
		Bucket:        &s.cfg.Bucket,
		Key:           aws.String(s.objectKey(key)),
		Body:          sec,
		ContentLength: &n,
		ContentMD5:    &sum,
	}
	in.Metadata, in.ObjectLockMode, in.ObjectLockRetainUntilDate = s.retention(retainUntil)
	return s.putErr(s.noOverwrite(func(ifNoneMatch *string) error {
		in.Body, in.IfNoneMatch = io.NewSectionReader(body, 0, n), ifNoneMatch
		_, err := s.client.PutObject(ctx, in)
		return err
	}), key)
}

// putErr turns the error of a PutObject or CompleteMultipartUpload into the
// store's error contract.
func (s *S3) putErr(err error, key string) error {
	switch {
	case err == nil:
		return nil
	case isCode(err, "PreconditionFailed", 412):
		return fmt.Errorf("blob put %q: %w", key, ErrExists)
	case isCode(err, "ConditionalRequestConflict", 409):
		return fault.Wrap(err, fault.Unavailable, "retry the write", "blob put %q: a concurrent write to the same key", key)
	}
	return s.fail(err, "put", key)
}

// retention is what a retained object carries (see S3): its retain-until
// date as metadata and, with a Lock mode, as Object Lock retention.
func (s *S3) retention(until time.Time) (map[string]string, types.ObjectLockMode, *time.Time) {
	if until.IsZero() {
		return nil, "", nil
	}
	meta := map[string]string{metaRetain: until.UTC().Format(time.RFC3339Nano)}
	if s.cfg.Lock == "" {
		return meta, "", nil
	}
	return meta, types.ObjectLockMode(strings.ToUpper(s.cfg.Lock)), aws.Time(until)
}

// Multipart: a single PutObject is limited to 5 GiB, and an upload of at
// most 10,000 parts of 5 MiB to 5 GiB each.
const (
	minPart     = 5 << 20
	maxParts    = 10000
	defaultPart = 256 << 20
)

// partSize is the part size of a multipart upload, and the size above which
// Put uses one: S3Config.PartSize, default 256 MiB, at least 5 MiB.
func (s *S3) partSize() int64 {
	if s.cfg.PartSize <= 0 {
		return defaultPart
	}
	return max(s.cfg.PartSize, minPart)
}

// putParts uploads the n bytes of body as a multipart upload, one part at a
// time, each with its own Content-MD5 (which Object Lock requires of every
// part, and which the SDK's upload manager drops). Retention and the
// If-None-Match guard go on the upload as on a single PutObject. An upload
// that fails is aborted, so its parts are not kept (and billed) by the
// server.
func (s *S3) putParts(ctx context.Context, key string, body io.ReaderAt, n int64, retainUntil time.Time) (err error) {
	bucket, objKey := &s.cfg.Bucket, aws.String(s.objectKey(key))
	in := &s3.CreateMultipartUploadInput{Bucket: bucket, Key: objKey}
	in.Metadata, in.ObjectLockMode, in.ObjectLockRetainUntilDate = s.retention(retainUntil)
	up, err := s.client.CreateMultipartUpload(ctx, in)
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		// Also when ctx was cancelled: the parts must not outlive it.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: objKey, UploadId: up.UploadId})
	}()
	part := max(s.partSize(), (n+maxParts-1)/maxParts)
	var done []types.CompletedPart
	for num, off := int32(1), int64(0); off < n; num, off = num+1, off+part {
		size := min(part, n-off)
		sec := io.NewSectionReader(body, off, size)
		sum, err := md5Of(ctx, sec)
		if err != nil {
			return err
		}
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: objKey, UploadId: up.UploadId,
			PartNumber: aws.Int32(num), Body: sec, ContentLength: &size, ContentMD5: &sum})
		if err != nil {
			return err
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
	}
	complete := &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: objKey, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}
	return s.noOverwrite(func(ifNoneMatch *string) error {
		complete.IfNoneMatch = ifNoneMatch
		_, err := s.client.CompleteMultipartUpload(ctx, complete)
		return err
	})
}

// noOverwrite runs a write that creates an object (PutObject, or the
// completion of a multipart upload) with the If-None-Match: * guard,
// unless the server has said it does not support it; a server that answers
// NotImplemented gets the write once more without it, and from then on
// every write goes without.
func (s *S3) noOverwrite(write func(ifNoneMatch *string) error) error {
	if s.noIfNoneMatch.Load() {
		return write(nil)
	}
	err := write(aws.String("*"))
	if isCode(err, "NotImplemented", 501) {
		s.noIfNoneMatch.Store(true)
		err = write(nil)
	}
	return err
}

// md5Of is the base64 MD5 of sec (Content-MD5: required with Object Lock,
// and integrity on every server), which it leaves rewound.
func md5Of(ctx context.Context, sec *io.SectionReader) (string, error) {
	h := md5.New()
	if _, err := io.Copy(h, ctxReader{ctx, sec}); err != nil {
		return "", err
	}
	if _, err := sec.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// spool returns r's content as something the SDK can read more than once
// (to sign a request over plain HTTP, and to retry it), checking its length
// against size (when size >= 0). A file of known size, such as the
// repository's spooled snapshots, is read in place; anything else is copied
// into memory (up to spoolInMemory) or a temp file, so that a reader that
// fails part-way never starts an upload.
func spool(ctx context.Context, r io.Reader, size int64) (body io.ReaderAt, n int64, cleanup func(), err error) {
	cleanup = func() {}
	if f, ok := r.(interface {
		io.ReaderAt
		io.Seeker
	}); ok && size >= 0 {
		start, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, 0, nil, err
		}
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, 0, nil, err
		}
		if end-start != size {
			return nil, 0, nil, fault.New(fault.Internal, "", "content was %d bytes, expected %d", end-start, size)
		}
		return io.NewSectionReader(f, start, size), size, cleanup, nil
	}
	var w io.Writer
	var buf *bytes.Buffer
	var f *os.File
	if size >= 0 && size <= spoolInMemory {
		buf = bytes.NewBuffer(make([]byte, 0, size))
		w = buf
	} else {
		if f, err = os.CreateTemp("", "lifeline-put-*"); err != nil {
			return nil, 0, nil, err
		}
		cleanup = func() { f.Close(); os.Remove(f.Name()) }
		w = f
	}
	if size >= 0 {
		r = io.LimitReader(r, size+1) // one byte over is enough to tell
	}
	n, err = io.Copy(w, ctxReader{ctx, r})
	if err == nil && size >= 0 && n != size {
		err = fault.New(fault.Internal, "", "content was %d bytes, expected %d", n, size)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	if buf != nil {
		return bytes.NewReader(buf.Bytes()), n, cleanup, nil
	}
	return f, n, cleanup, nil
}

func (s *S3) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fault.New(fault.Invalid, "", "blob get %q: negative offset %d", key, off)
	}
	if n == 0 {
		if _, err := s.head(ctx, "get", key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.objectKey(key))}
	if off > 0 || n > 0 {
		rng := fmt.Sprintf("bytes=%d-", off)
		if n > 0 {
			rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
		}
		in.Range = &rng
	}
	out, err := s.client.GetObject(ctx, in)
	if isCode(err, "InvalidRange", 416) {
		// The range starts at or past the end: no bytes, if the object exists.
		if _, err := s.head(ctx, "get", key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err != nil {
		return nil, s.fail(err, "get", key)
	}
	if in.Range != nil && out.ContentRange == nil {
		// Restore's cost rests on ranged reads; never fall back silently
		// to downloading whole objects.
		out.Body.Close()
		return nil, fault.New(fault.Internal, "use an S3-compatible server that supports Range requests",
			"blob get %q: the server ignored the Range header", key)
	}
	return out.Body, nil
}

func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	h, err := s.head(ctx, "stat", key)
	if err != nil {
		return Info{}, err
	}
	return Info{Key: key, Size: aws.ToInt64(h.ContentLength), ModTime: aws.ToTime(h.LastModified), RetainUntil: retainOf(h)}, nil
}

func (s *S3) head(ctx context.Context, op, key string) (*s3.HeadObjectOutput, error) {
	h, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.objectKey(key))})
	if err != nil {
		return nil, s.fail(err, op, key)
	}
	return h, nil
}

// retainOf is the later of the Object Lock date and the metadata date: the
// lock may be missing (no lock mode, or no permission to read it) and the
// metadata may have been stripped by a copy.
func retainOf(h *s3.HeadObjectOutput) time.Time {
	t := aws.ToTime(h.ObjectLockRetainUntilDate)
	if v, ok := h.Metadata[metaRetain]; ok {
		if m, err := time.Parse(time.RFC3339Nano, v); err == nil && m.After(t) {
			t = m
		}
	}
	return t
}

func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := validPrefix(prefix); err != nil {
		return err
	}
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: &s.cfg.Bucket,
		Prefix: aws.String(strip + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.fail(err, "list", prefix)
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), strip)
			if ValidKey(key) != nil {
				continue // not written by a Store: folder markers and the like
			}
			if err := fn(Info{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	h, err := s.head(ctx, "delete", key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ru := retainOf(h)
	if ru.After(s.now()) {
		return fmt.Errorf("blob delete %q: retained until %s: %w", key, ru.Format(time.RFC3339), ErrRetained)
	}
	// Deleting the version, not just the key, frees the bytes in a
	// versioned bucket (Object Lock needs versioning) instead of hiding
	// them behind a delete marker.
	in := &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.objectKey(key))}
	if v := aws.ToString(h.VersionId); v != "" && v != "null" {
		in.VersionId = &v
	}
	_, err = s.client.DeleteObject(ctx, in)
	if err != nil && isCode(err, "AccessDenied", 403) && h.ObjectLockRetainUntilDate != nil {
		// The server's clock still holds the lock.
		return fmt.Errorf("blob delete %q: the server refused under Object Lock: %w", key, ErrRetained)
	}
	return s.fail(err, "delete", key)
}

// isCode reports whether err is an S3 error with the given code or, when
// status is not 0, HTTP status (HEAD responses carry no body, so no code).
func isCode(err error, code string, status int) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == code {
		return true
	}
	var re *smithyhttp.ResponseError
	return status != 0 && errors.As(err, &re) && re.HTTPStatusCode() == status
}

// fail turns an SDK error into the store's error contract.
func (s *S3) fail(err error, op, key string) error {
	if err == nil {
		return nil
	}
	switch {
	case isCode(err, "NoSuchBucket", 0):
		return fault.Wrap(err, fault.NotFound, "create the bucket (with Object Lock enabled if the URL sets lock=)",
			"blob %s %q: bucket %q does not exist", op, key, s.cfg.Bucket)
	case isCode(err, "NoSuchKey", 404) || isCode(err, "NotFound", 404):
		return fmt.Errorf("blob %s %q: %w", op, key, ErrNotFound)
	case isCode(err, "AccessDenied", 403) || isCode(err, "InvalidAccessKeyId", 403) || isCode(err, "SignatureDoesNotMatch", 403):
		return fault.Wrap(err, fault.Unauthorized,
			"check the AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket policy",
			"blob %s %q: access denied to bucket %q", op, key, s.cfg.Bucket)
	}
	return unavailable(err, op, key)
}
