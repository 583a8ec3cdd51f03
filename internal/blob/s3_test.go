package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"lifeline/internal/blob"
	"lifeline/internal/blob/blobtest"
	"lifeline/internal/fault"
)

// The S3 store is tested against a real S3-compatible server, versitygw with
// its posix backend, started once per test binary on a free loopback port.
const versityInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

const (
	lockBucket  = "lifeline-lock"  // Object Lock enabled; stores use lock=governance
	plainBucket = "lifeline-plain" // no Object Lock: retention from metadata alone
)

var versity struct {
	once     sync.Once
	endpoint string
	err      error
	cmd      *exec.Cmd
	dir      string
	prefixes atomic.Int64
}

func TestMain(m *testing.M) {
	// Credentials reach the store through the standard AWS chain, as in
	// production; keep the developer's own AWS settings out of it.
	os.Setenv("AWS_ACCESS_KEY_ID", "lifelinetest")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "lifelinetestsecret")
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Unsetenv("AWS_PROFILE")
	os.Unsetenv("AWS_SESSION_TOKEN")
	code := m.Run()
	if versity.cmd != nil {
		versity.cmd.Process.Kill()
		versity.cmd.Wait()
	}
	if versity.dir != "" {
		os.RemoveAll(versity.dir)
	}
	os.Exit(code)
}

// s3Endpoint starts versitygw once and returns its URL. A missing binary is a
// failure, not a skip: the S3 store must never go untested.
func s3Endpoint(t *testing.T) string {
	t.Helper()
	versity.once.Do(func() { versity.endpoint, versity.err = startVersity() })
	if versity.err != nil {
		t.Fatal(versity.err)
	}
	return versity.endpoint
}

func findVersity() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw (the S3-compatible server these tests run against) is not on PATH "+
		"nor in $(go env GOPATH)/bin; .ci/run installs it when missing: %s", versityInstall)
}

func startVersity() (string, error) {
	bin, err := findVersity()
	if err != nil {
		return "", err
	}
	versity.dir, err = os.MkdirTemp("", "lifeline-versitygw-")
	if err != nil {
		return "", err
	}
	root := filepath.Join(versity.dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	log, err := os.Create(filepath.Join(versity.dir, "versitygw.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "--port", addr, "--quiet",
		"--access", os.Getenv("AWS_ACCESS_KEY_ID"), "--secret", os.Getenv("AWS_SECRET_ACCESS_KEY"),
		"posix", root)
	cmd.Stdout, cmd.Stderr = log, log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting %s: %w", bin, err)
	}
	versity.cmd = cmd
	endpoint := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(endpoint)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			return "", fmt.Errorf("versitygw did not answer on %s within 30s: %v\n%s", addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := context.Background()
	s, err := blob.OpenS3(ctx, blob.S3Config{Bucket: "x", Endpoint: endpoint, PathStyle: true})
	if err != nil {
		return "", err
	}
	for _, b := range []string{lockBucket, plainBucket} {
		_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{
			Bucket:                     aws.String(b),
			ObjectLockEnabledForBucket: aws.Bool(b == lockBucket),
		})
		if err != nil {
			return "", fmt.Errorf("creating bucket %s: %w", b, err)
		}
	}
	return endpoint, nil
}

// s3URL is a backups URL for a fresh prefix in bucket, so parallel tests
// never share keys.
func s3URL(endpoint, bucket, lock string) string {
	u := fmt.Sprintf("s3://%s/t%d?endpoint=%s&region=us-east-1&path_style=true",
		bucket, versity.prefixes.Add(1), url.QueryEscape(endpoint))
	if lock != "" {
		u += "&lock=" + lock
	}
	return u
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
	endpoint := s3Endpoint(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return openS3(t, s3URL(endpoint, lockBucket, "governance"))
	})
}

// Without Object Lock the store still refuses early deletes, from the
// retain-until it records as object metadata.
func TestS3WithoutLockRetention(t *testing.T) {
	t.Parallel()
	s := openS3(t, s3URL(s3Endpoint(t), plainBucket, ""))
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
	endpoint := s3Endpoint(t)
	rawURL := s3URL(endpoint, lockBucket, "governance")
	s := openS3(t, rawURL).(*blob.S3)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	if err := s.Put(ctx, "locked", strings.NewReader("keep me"), 7, until); err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimPrefix(strings.SplitN(rawURL, "?", 2)[0], "s3://"+lockBucket+"/")
	key := aws.String(prefix + "/locked")
	h, err := s.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(lockBucket), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if h.ObjectLockMode != "GOVERNANCE" || h.ObjectLockRetainUntilDate == nil {
		t.Fatalf("object lock mode %q until %v; want GOVERNANCE retention", h.ObjectLockMode, h.ObjectLockRetainUntilDate)
	}
	_, err = s.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(lockBucket), Key: key, VersionId: h.VersionId})
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
	target, _ := url.Parse(s3Endpoint(t))
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
	s := openS3(t, s3URL(proxy.URL, lockBucket, ""))
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
	s := openS3(t, s3URL(dead, plainBucket, ""))
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
