package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"lifeline/internal/blob"
	"lifeline/internal/blob/blobtest"
	"lifeline/internal/fault"
)

func TestMain(m *testing.M) {
	blobtest.S3Env()
	code := m.Run()
	blobtest.StopS3()
	os.Exit(code)
}

func openS3(t *testing.T, rawURL string) blob.Store {
	t.Helper()
	s, err := blob.Open(context.Background(), rawURL, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openS3Parts opens the store of rawURL with 5 MiB parts, so that objects
// over 5 MiB are uploaded in parts.
func openS3Parts(t *testing.T, rawURL string) *blob.S3 {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	s, err := blob.OpenS3(context.Background(), blob.S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"),
		Endpoint: q.Get("endpoint"), Region: q.Get("region"), PathStyle: true, Lock: q.Get("lock"), PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// interposed is a proxy in front of the test's S3 server that lets answer
// answer a request itself (returning true) instead of passing it on.
func interposed(t *testing.T, answer func(http.ResponseWriter, *http.Request) bool) *httptest.Server {
	t.Helper()
	target, _ := url.Parse(blobtest.S3Endpoint(t))
	forward := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the request was signed for the proxy's host
	}}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !answer(w, r) {
			forward.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(proxy.Close)
	return proxy
}

func TestS3Conformance(t *testing.T) {
	t.Parallel()
	endpoint := blobtest.S3Endpoint(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return openS3(t, blobtest.S3URL(endpoint, blobtest.LockBucket, "governance"))
	})
}

// The suite again with 5 MiB parts: its large object (20 MiB) is uploaded
// in parts, and must behave like any other.
func TestS3ConformanceMultipart(t *testing.T) {
	t.Parallel()
	endpoint := blobtest.S3Endpoint(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return openS3Parts(t, blobtest.S3URL(endpoint, blobtest.LockBucket, "governance"))
	})
}

// Without Object Lock the store still refuses early deletes, from the
// retain-until it records as object metadata.
func TestS3WithoutLockRetention(t *testing.T) {
	t.Parallel()
	s := openS3(t, blobtest.S3URL(blobtest.S3Endpoint(t), blobtest.PlainBucket, ""))
	ctx := context.Background()
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := s.Put(ctx, "seg", strings.NewReader("x"), 1, until); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "seg"); !errors.Is(err, blob.ErrRetained) {
		t.Fatalf("Delete under retention: %v, want ErrRetained", err)
	}
	if info, err := s.Stat(ctx, "seg"); err != nil || !info.RetainUntil.Equal(until) {
		t.Fatalf("Stat = %+v, %v; want retain-until %v", info, err, until)
	}
}

// The retention must be real Object Lock, enforced by the server even for a
// client that goes around the store, on an object uploaded whole as on one
// uploaded in parts.
func TestS3ObjectLockEnforcedByServer(t *testing.T) {
	t.Parallel()
	for _, size := range []int{7, 11 << 20} {
		endpoint := blobtest.S3Endpoint(t)
		rawURL := blobtest.S3URL(endpoint, blobtest.LockBucket, "governance")
		s := openS3Parts(t, rawURL)
		ctx := context.Background()
		until := time.Now().Add(time.Hour)
		data := bytes.Repeat([]byte("k"), size)
		if err := s.Put(ctx, "locked", bytes.NewReader(data), int64(size), until); err != nil {
			t.Fatal(err)
		}
		prefix := strings.TrimPrefix(strings.SplitN(rawURL, "?", 2)[0], "s3://"+blobtest.LockBucket+"/")
		key := aws.String(prefix + "/locked")
		h, err := s.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(blobtest.LockBucket), Key: key})
		if err != nil {
			t.Fatal(err)
		}
		// A multipart object's ETag ends in its number of parts.
		if multipart := strings.HasSuffix(strings.Trim(aws.ToString(h.ETag), `"`), "-3"); multipart != (size > 5<<20) {
			t.Errorf("%d bytes: ETag %s; want 3 parts exactly above 5 MiB", size, aws.ToString(h.ETag))
		}
		if h.ObjectLockMode != "GOVERNANCE" || h.ObjectLockRetainUntilDate == nil {
			t.Fatalf("%d bytes: object lock mode %q until %v; want GOVERNANCE retention", size, h.ObjectLockMode, h.ObjectLockRetainUntilDate)
		}
		_, err = s.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(blobtest.LockBucket), Key: key, VersionId: h.VersionId})
		if err == nil {
			t.Fatalf("%d bytes: the server deleted an object under Object Lock retention", size)
		}
		if info, err := s.Stat(ctx, "locked"); err != nil || info.Size != int64(size) || !info.RetainUntil.After(time.Now()) {
			t.Fatalf("%d bytes: locked object after a refused raw delete: %+v, %v", size, info, err)
		}
	}
}

// A multipart upload whose completion fails is aborted: no object, and no
// parts left on the server.
func TestS3FailedMultipartLeavesNothing(t *testing.T) {
	t.Parallel()
	var completes atomic.Int64
	proxy := interposed(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !r.URL.Query().Has("uploadId") {
			return false
		}
		completes.Add(1)
		http.Error(w, "completion refused by the test", http.StatusServiceUnavailable)
		return true
	})
	rawURL := blobtest.S3URL(proxy.URL, blobtest.PlainBucket, "")
	s := openS3Parts(t, rawURL)
	ctx := context.Background()
	data := bytes.Repeat([]byte("p"), 6<<20)
	if err := s.Put(ctx, "parts", bytes.NewReader(data), int64(len(data)), time.Time{}); fault.CodeOf(err) != fault.Unavailable {
		t.Fatalf("Put whose completion failed: %v, want unavailable", err)
	}
	if completes.Load() == 0 {
		t.Fatal("the upload was never completed: not multipart")
	}
	if _, err := s.Stat(ctx, "parts"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after the failed Put: %v, want ErrNotFound", err)
	}
	prefix := strings.TrimPrefix(strings.SplitN(rawURL, "?", 2)[0], "s3://"+blobtest.PlainBucket+"/")
	ups, err := s.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(blobtest.PlainBucket), Prefix: aws.String(prefix + "/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) > 0 {
		t.Fatalf("%d multipart uploads left on the server after the failed Put", len(ups.Uploads))
	}
}

// Ranged Gets must be Range requests: a proxy in front of the server counts
// the bytes that cross the wire.
func TestS3RangedGetTransfersOnlyTheRange(t *testing.T) {
	t.Parallel()
	target, _ := url.Parse(blobtest.S3Endpoint(t))
	var wire atomic.Int64
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the request was signed for the proxy's host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodGet {
				resp.Body = countingBody{resp.Body, &wire}
			}
			return nil
		},
	})
	defer proxy.Close()
	s := openS3(t, blobtest.S3URL(proxy.URL, blobtest.LockBucket, ""))
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := s.Put(ctx, "obj", bytes.NewReader(data), int64(len(data)), time.Time{}); err != nil {
		t.Fatal(err)
	}
	wire.Store(0)
	rc, err := s.Get(ctx, "obj", 500_000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data[500_000:501_000]) {
		t.Fatal("ranged Get returned the wrong bytes")
	}
	if n := wire.Load(); n > 4096 {
		t.Fatalf("a 1000-byte ranged Get moved %d bytes over the wire", n)
	}
}

// Some S3-compatible servers do not implement conditional writes and answer
// If-None-Match with 501 NotImplemented. The store then writes without it,
// once more, and stops sending it; the HEAD before each Put still refuses a
// key that exists. (Two writers racing on one key could then both succeed:
// on such servers only the shipping lease keeps a product's keys to one
// writer; docs/backup.md says so.)
func TestS3WithoutConditionalWrites(t *testing.T) {
	t.Parallel()
	var refused atomic.Int64
	proxy := interposed(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("If-None-Match") == "" || r.Method == http.MethodGet || r.Method == http.MethodHead {
			return false
		}
		refused.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotImplemented)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>`+
			`<Message>A header you provided implies functionality that is not implemented</Message></Error>`)
		return true
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int
		s    blob.Store
	}{
		{"whole", 1000, openS3(t, blobtest.S3URL(proxy.URL, blobtest.LockBucket, "governance"))},
		{"in parts", 11 << 20, openS3Parts(t, blobtest.S3URL(proxy.URL, blobtest.LockBucket, "governance"))},
	} {
		refused.Store(0)
		data := bytes.Repeat([]byte{7}, tc.size)
		until := time.Now().Add(time.Hour)
		for _, key := range []string{"nocond/" + tc.name + "/a", "nocond/" + tc.name + "/b"} {
			if err := tc.s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), until); err != nil {
				t.Fatalf("%s: Put %s through a server without conditional writes: %v", tc.name, key, err)
			}
			rc, err := tc.s.Get(ctx, key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, data) {
				t.Fatalf("%s: %s reads back %d bytes, not the %d written", tc.name, key, len(got), len(data))
			}
		}
		if n := refused.Load(); n != 1 {
			t.Errorf("%s: the server refused %d conditional writes; want 1, then writes without the header", tc.name, n)
		}
		if err := tc.s.Put(ctx, "nocond/"+tc.name+"/a", bytes.NewReader(data), int64(len(data)), time.Time{}); !errors.Is(err, blob.ErrExists) {
			t.Errorf("%s: Put over an existing key returned %v; want ErrExists", tc.name, err)
		}
	}
}

// An unreachable server is an Unavailable error, which shipping treats as
// "back off and retry", never as lost data.
func TestS3UnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	s := openS3(t, blobtest.S3URL(dead, blobtest.PlainBucket, ""))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = s.Put(ctx, "k", strings.NewReader("x"), 1, time.Time{})
	if fault.CodeOf(err) != fault.Unavailable || fault.HintOf(err) == "" {
		t.Fatalf("Put to a dead server: %v (code %s), want unavailable with a hint", err, fault.CodeOf(err))
	}
	if _, err := s.Get(ctx, "k", 0, -1); fault.CodeOf(err) != fault.Unavailable {
		t.Fatalf("Get from a dead server: %v, want unavailable", err)
	}
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
