package blobtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
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
)

// The S3 store is tested against a real S3-compatible server, versitygw with
// its posix backend, started once per test binary on a free loopback port.
const versityInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// The buckets S3Endpoint creates.
const (
	LockBucket  = "lifeline-lock"  // Object Lock enabled; stores use lock=governance
	PlainBucket = "lifeline-plain" // no Object Lock: retention from metadata alone
)

var versity struct {
	once     sync.Once
	endpoint string
	err      error
	cmd      *exec.Cmd
	dir      string
	prefixes atomic.Int64
}

// S3Env points the AWS credential chain at the test server's credentials,
// as production would, and keeps the developer's own AWS settings out of
// it. A package's TestMain calls it before running tests that use S3.
func S3Env() {
	os.Setenv("AWS_ACCESS_KEY_ID", "lifelinetest")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "lifelinetestsecret")
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Unsetenv("AWS_PROFILE")
	os.Unsetenv("AWS_SESSION_TOKEN")
}

// StopS3 stops the server S3Endpoint started, if any; TestMain calls it
// after the tests.
func StopS3() {
	if versity.cmd != nil {
		versity.cmd.Process.Kill()
		versity.cmd.Wait()
	}
	if versity.dir != "" {
		os.RemoveAll(versity.dir)
	}
}

// S3Endpoint starts versitygw once and returns its URL. A missing binary is a
// failure, not a skip: the S3 store must never go untested.
func S3Endpoint(t *testing.T) string {
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
	for _, b := range []string{LockBucket, PlainBucket} {
		_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{
			Bucket:                     aws.String(b),
			ObjectLockEnabledForBucket: aws.Bool(b == LockBucket),
		})
		if err != nil {
			return "", fmt.Errorf("creating bucket %s: %w", b, err)
		}
	}
	return endpoint, nil
}

// S3URL is a backups URL for a fresh prefix in bucket, so parallel tests
// never share keys.
func S3URL(endpoint, bucket, lock string) string {
	u := fmt.Sprintf("s3://%s/t%d?endpoint=%s&region=us-east-1&path_style=true",
		bucket, versity.prefixes.Add(1), url.QueryEscape(endpoint))
	if lock != "" {
		u += "&lock=" + lock
	}
	return u
}
