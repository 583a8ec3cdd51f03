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

func TestS3Conformance(t *testing.T) {
	t.Parallel()
	endpoint := blobtest.S3Endpoint(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return openS3(t, blobtest.S3URL(endpoint, blobtest.LockBucket, "governance"))
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
// client that goes around the store.
func TestS3ObjectLockEnforcedByServer(t *testing.T) {
	t.Parallel()
	endpoint := blobtest.S3Endpoint(t)
	rawURL := blobtest.S3URL(endpoint, blobtest.LockBucket, "governance")
	s := openS3(t, rawURL).(*blob.S3)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	if err := s.Put(ctx, "locked", strings.NewReader("keep me"), 7, until); err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimPrefix(strings.SplitN(rawURL, "?", 2)[0], "s3://"+blobtest.LockBucket+"/")
	key := aws.String(prefix + "/locked")
	h, err := s.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(blobtest.LockBucket), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if h.ObjectLockMode != "GOVERNANCE" || h.ObjectLockRetainUntilDate == nil {
		t.Fatalf("object lock mode %q until %v; want GOVERNANCE retention", h.ObjectLockMode, h.ObjectLockRetainUntilDate)
	}
	_, err = s.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(blobtest.LockBucket), Key: key, VersionId: h.VersionId})
	if err == nil {
		t.Fatal("the server deleted an object under Object Lock retention")
	}
	if _, err := s.Stat(ctx, "locked"); err != nil {
		t.Fatalf("locked object after a refused raw delete: %v", err)
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
