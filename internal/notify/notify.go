// Package notify delivers the status page's notices: incident updates to
// email and webhook subscribers, the double opt-in confirmation mails, and
// the mail that tells a webhook's owner it was disabled.
//
// Everything goes through River, the job queue, on Lifeline's state store
// (SQLite or PostgreSQL), so delivery survives restarts and spreads across
// several `lifeline serve` processes. The notices an update owes are
// recorded by internal/status in the transaction that publishes it; the
// drainer here turns them into unique River jobs, one per (notice, channel,
// subscriber).
//
// The two channels meet at one seam, Sender, with one contract that both
// implementations pass (sender_test.go): a delivery is recorded as sent just
// before its last byte leaves, so a crash at any point neither loses a
// notice that was not handed over nor sends one twice.
package notify

import (
	"context"
	"errors"
	"fmt"
)

// Message is one delivery to one address. Email uses Subject, Text and
// Header; a webhook uses Body and Secret. ID is the same on every attempt,
// so a receiver can tell a retry from a new message.
type Message struct {
	// ID identifies the message across attempts: the email's Message-ID
	// (without angle brackets) or the webhook's webhook-id.
	ID string
	// To is an email address or a webhook URL.
	To string

	Subject string
	Text    string
	// Header holds extra email headers, such as List-Unsubscribe.
	Header map[string]string

	// Body is the webhook's JSON payload, signed with Secret (whsec_…).
	Body   []byte
	Secret string
}

// Sender hands messages to a provider: an SMTP server or a webhook
// receiver. Implementations are safe for concurrent use.
type Sender interface {
	// Provider names the rate-limit bucket a message to addr counts
	// against: the SMTP server for email, the receiving host for webhooks.
	Provider(addr string) string

	// Send delivers m. It calls commit exactly once, at the last moment the
	// delivery can still be withdrawn: after the provider has accepted the
	// sender and recipient and received everything but the final byte. If
	// commit returns an error, Send withdraws the message (the provider
	// never sees it complete) and returns an error that wraps commit's.
	//
	// A nil error means the provider accepted the message. Any other error
	// means it did not, even if commit was called (the provider refused it
	// at the end, or the connection broke before its answer): the caller
	// undoes what commit recorded. Errors that retrying cannot fix (an
	// address the provider rejects for good) satisfy IsPermanent.
	Send(ctx context.Context, m Message, commit func(context.Context) error) error
}

// DeliveryError is a provider's refusal or a failure to reach it.
type DeliveryError struct {
	Provider string
	// Permanent is set when retrying cannot help: SMTP 5xx replies, HTTP
	// 410 Gone, a malformed address.
	Permanent bool
	// Bounce is set when the refusal is about the recipient's address (a
	// 5xx answer to RCPT TO, or an address that is not one): mail to it
	// will not arrive, whatever it says. A 5xx to MAIL FROM or DATA is about
	// the sender or the message, and is not a bounce.
	Bounce bool
	Err    error
}

func (e *DeliveryError) Error() string {
	kind := "temporary"
	if e.Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("delivery through %s failed (%s): %v", e.Provider, kind, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a delivery failure that retrying
// cannot fix.
func IsPermanent(err error) bool {
	var d *DeliveryError
	return errors.As(err, &d) && d.Permanent
}

// IsBounce reports whether err is a permanent refusal of the recipient's
// address.
func IsBounce(err error) bool {
	var d *DeliveryError
	return errors.As(err, &d) && d.Permanent && d.Bounce
}

// ErrWithdrawn wraps the commit error of a delivery that Send withdrew.
var ErrWithdrawn = errors.New("delivery withdrawn before its last byte")
