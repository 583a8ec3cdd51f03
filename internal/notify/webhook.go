package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"lifeline/internal/fault"
)

// WebhookSender POSTs JSON to subscribers' URLs, signed per the Standard
// Webhooks specification (webhook-id, webhook-timestamp, webhook-signature).
type WebhookSender struct {
	// Client makes the requests; nil means one with a 15s timeout that
	// does not follow redirects (a redirect is a misconfigured endpoint,
	// and following it would send the signed body somewhere else).
	Client *http.Client
	// Now is the clock for the signature timestamp; nil means time.Now.
	Now func() time.Time
}

func (w *WebhookSender) client() *http.Client {
	if w.Client != nil {
		return w.Client
	}
	return defaultWebhookClient
}

var defaultWebhookClient = &http.Client{
	Timeout:       15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Provider is the receiving host: each host has its own rate limit.
func (w *WebhookSender) Provider(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return "webhook:?"
	}
	return "webhook:" + u.Host
}

// Send POSTs m.Body. commit is called when the request's body has been
// written but for its last byte; the receiver cannot act on a body shorter
// than its Content-Length.
func (w *WebhookSender) Send(ctx context.Context, m Message, commit func(context.Context) error) error {
	provider := w.Provider(m.To)
	fail := func(permanent bool, err error) error {
		return &DeliveryError{Provider: provider, Permanent: permanent, Err: err}
	}
	if len(m.Body) == 0 {
		return fail(true, fmt.Errorf("empty webhook body"))
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := now()
	sig, err := SignWebhook(m.Secret, m.ID, ts, m.Body)
	if err != nil {
		return fail(true, err)
	}
	body := &commitReader{ctx: ctx, data: m.Body, commit: commit}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.To, body)
	if err != nil {
		return fail(true, err)
	}
	req.ContentLength = int64(len(m.Body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Lifeline")
	req.Header.Set("webhook-id", m.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := w.client().Do(req)
	committed, commitErr := body.close()
	if commitErr != nil {
		return fmt.Errorf("%w: %w", ErrWithdrawn, commitErr)
	}
	if err != nil {
		return fail(false, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// 410 Gone is the receiver saying the endpoint no longer exists.
		return fail(resp.StatusCode == http.StatusGone, fmt.Errorf("%s answered %s", m.To, resp.Status))
	}
	if !committed {
		// A receiver that answers 2xx before reading the body has not
		// received it; treat it as a failure so the notice is retried.
		return fail(false, fmt.Errorf("%s answered before reading the body", m.To))
	}
	return nil
}

// commitReader yields data, calling commit before the last byte. If commit
// fails the read fails, and the transport abandons the request. The
// transport may read from another goroutine, hence the lock; once closed,
// a late read can no longer commit.
type commitReader struct {
	ctx       context.Context
	data      []byte
	commit    func(context.Context) error
	mu        sync.Mutex
	off       int
	committed bool
	closed    bool
	err       error
}

var errRequestDone = fmt.Errorf("webhook request already finished")

// close ends the reader and reports whether commit ran, and its error.
func (r *commitReader) close() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.committed, r.err
}

func (r *commitReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errRequestDone
	}
	if r.err != nil {
		return 0, r.err
	}
	last := len(r.data) - 1
	if r.off < last {
		n := copy(p, r.data[r.off:last])
		r.off += n
		return n, nil
	}
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if !r.committed {
		if err := r.commit(r.ctx); err != nil {
			r.err = err
			return 0, err
		}
		r.committed = true
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[last]
	r.off++
	return 1, nil
}

// SignWebhook signs a delivery per the Standard Webhooks specification: the
// webhook-signature header value for message id, timestamp and body, with a
// "whsec_" secret. A secret that is not base64 after its prefix is
// fault.Invalid.
func SignWebhook(secret, msgID string, ts time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", fault.Wrap(err, fault.Invalid, "use the whsec_ secret shown at subscription", "bad webhook secret")
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", msgID, ts.Unix())
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// WebhookTolerance is how far a delivery's timestamp may be from now.
const WebhookTolerance = 5 * time.Minute

// VerifyWebhook checks a received delivery as a receiver would: the
// webhook-id, webhook-timestamp and webhook-signature header values (the
// last may hold several space-separated signatures) against the body. A
// malformed timestamp is fault.Invalid; a stale timestamp or no matching
// signature is fault.Refused.
func VerifyWebhook(secret, msgID, timestamp, signatures string, body []byte, now time.Time) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fault.New(fault.Invalid, "", "bad webhook-timestamp %q", timestamp)
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > WebhookTolerance || d < -WebhookTolerance {
		return fault.New(fault.Refused, "", "webhook timestamp %s is too far from now", ts.UTC())
	}
	want, err := SignWebhook(secret, msgID, ts, body)
	if err != nil {
		return err
	}
	for sig := range strings.FieldsSeq(signatures) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fault.New(fault.Refused, "", "no valid webhook signature")
}

// VerifyRequest reads and checks a webhook request, returning its body.
// Receivers written in Go (and the tests) use it.
func VerifyRequest(secret string, r *http.Request, now time.Time) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	h := r.Header
	return body, VerifyWebhook(secret, h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature"), body, now)
}
