package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"lifeline/internal/fault"
)

// TLS modes of an SMTP server, as written in lifeline.yaml.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which must succeed (port 587)
	TLSImplicit = "tls"      // TLS from the first byte (SMTPS, port 465)
	TLSNone     = "none"     // no encryption: a relay on the same host, or a test server
)

// SMTPConfig says how to reach the mail server.
type SMTPConfig struct {
	Host     string
	Port     int
	From     string // the From address, "status@example.com" or "Status <status@example.com>"
	Username string // empty: no authentication
	Password string
	TLS      string // TLSStartTLS (default), TLSImplicit or TLSNone
	// TLSConfig overrides certificate checks (tests trust their own CA).
	TLSConfig *tls.Config
	// Timeout bounds each connection and command; 0 means 30s.
	Timeout time.Duration
	// Idle is how many connections are kept open for reuse; 0 means 4.
	Idle int
}

// String shows the config without the password, so it can be logged.
func (c SMTPConfig) String() string {
	auth := "no auth"
	if c.Username != "" {
		auth = "user " + c.Username + ", password set"
	}
	return fmt.Sprintf("smtp %s:%d (%s, %s, from %s)", c.Host, c.Port, c.TLS, auth, c.From)
}

// LogValue keeps the password out of structured logs.
func (c SMTPConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// SMTPSender sends email through one SMTP server. It keeps a few
// connections open between messages, because a handshake with TLS and
// AUTH costs more than a message.
type SMTPSender struct {
	cfg    SMTPConfig
	client *mail.Client // dials, upgrades and authenticates; the transaction is ours
	from   string       // the envelope sender

	mu   sync.Mutex
	idle []*idleConn
}

type idleConn struct {
	c     *smtp.Client
	since time.Time
}

// maxIdleAge is how long an idle connection is trusted; servers drop idle
// clients after a few minutes.
const maxIdleAge = 30 * time.Second

// NewSMTPSender checks cfg and returns a sender. Nothing is dialled until
// the first message. A config error is fault.Invalid.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	if cfg.Host == "" {
		return nil, fault.New(fault.Invalid, "set smtp.host in lifeline.yaml", "no SMTP server configured")
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Port == 0 {
		cfg.Port = map[string]int{TLSStartTLS: 587, TLSImplicit: 465, TLSNone: 25}[cfg.TLS]
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 4
	}
	from, err := mailAddress(cfg.From)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "set smtp.from to an address such as status@example.com", "smtp.from %q is not an email address", cfg.From)
	}
	opts := []mail.Option{mail.WithPort(cfg.Port), mail.WithTimeout(cfg.Timeout)}
	switch cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, mail.WithSSL())
	case TLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		return nil, fault.New(fault.Invalid, "use starttls, tls or none", "smtp.tls %q is not a TLS mode", cfg.TLS)
	}
	if cfg.TLSConfig != nil {
		opts = append(opts, mail.WithTLSConfig(cfg.TLSConfig))
	}
	if cfg.Username != "" {
		// Auto-discovery refuses PLAIN and LOGIN on an unencrypted
		// connection, so a password never crosses the network in clear.
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	}
	c, err := mail.NewClient(cfg.Host, opts...)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "check smtp.host, smtp.port and smtp.tls", "SMTP client")
	}
	return &SMTPSender{cfg: cfg, client: c, from: from}, nil
}

// String and LogValue show the server without its password.
func (s *SMTPSender) String() string { return s.cfg.String() }

// LogValue keeps the password out of structured logs.
func (s *SMTPSender) LogValue() slog.Value { return s.cfg.LogValue() }

// Domain is the domain of the From address; Message-IDs end with it.
func (s *SMTPSender) Domain() string {
	_, d, _ := strings.Cut(s.from, "@")
	return d
}

// Provider is the one SMTP server every email goes through.
func (s *SMTPSender) Provider(string) string {
	return "smtp:" + net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
}

func (s *SMTPSender) fail(permanent bool, err error) error {
	return &DeliveryError{Provider: s.Provider(""), Permanent: permanent, Err: err}
}

// replyErr classifies an SMTP reply: 5xx is permanent, anything else is
// worth retrying.
func (s *SMTPSender) replyErr(stage string, err error) error {
	var tp *textproto.Error
	permanent := errors.As(err, &tp) && tp.Code >= 500
	return s.fail(permanent, fmt.Errorf("%s: %w", stage, err))
}

// bounce marks a refusal of the recipient as a bounce if it is permanent.
func (s *SMTPSender) bounce(err error) error {
	var d *DeliveryError
	if errors.As(err, &d) {
		d.Bounce = d.Permanent
	}
	return err
}

// bounceReason is what the vault records of a bounce: the server's reply
// ("550 5.1.1 no such user"), without the address, which the vault has.
func bounceReason(err error) string {
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return truncate(fmt.Sprintf("%d %s", tp.Code, tp.Msg), 300)
	}
	return "not a valid address"
}

// Send runs one SMTP transaction. commit is called after the message body
// has been written and before the final "." that completes it; without
// that dot the server discards the message.
func (s *SMTPSender) Send(ctx context.Context, m Message, commit func(context.Context) error) error {
	to, err := mailAddress(m.To)
	if err != nil {
		return s.bounce(s.fail(true, fmt.Errorf("recipient %q: %w", m.To, err)))
	}
	msg, err := s.compose(m)
	if err != nil {
		return s.fail(true, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := s.conn(ctx)
	if err != nil {
		return s.fail(false, fmt.Errorf("connect: %w", err))
	}
	keep := false
	defer func() {
		if keep {
			s.release(c)
		} else {
			_ = c.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = c.UpdateDeadline(-time.Second) }) // unblocks the I/O below
	defer stop()
	// go-mail's client sends the path as given: it must carry its brackets.
	if err := c.Mail("<" + s.from + ">"); err != nil {
		return s.replyErr("MAIL FROM", err)
	}
	if err := c.Rcpt("<" + to + ">"); err != nil {
		keep = c.Reset() == nil
		return s.bounce(s.replyErr("RCPT TO "+to, err))
	}
	w, err := c.Data()
	if err != nil {
		return s.replyErr("DATA", err)
	}
	if _, err := msg.WriteTo(w); err != nil {
		return s.fail(false, fmt.Errorf("writing the message: %w", err))
	}
	if err := commit(ctx); err != nil {
		// Closing the connection mid-DATA makes the server drop the message.
		return fmt.Errorf("%w: %w", ErrWithdrawn, err)
	}
	// Committed: the last line goes out even if ctx ends now, under the
	// connection's own timeout.
	stop()
	if err := w.Close(); err != nil {
		return s.replyErr("end of DATA", err)
	}
	keep = c.Reset() == nil
	return nil
}

// compose builds the MIME message.
func (s *SMTPSender) compose(m Message) (*mail.Msg, error) {
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := msg.From(s.cfg.From); err != nil {
		return nil, err
	}
	if err := msg.To(m.To); err != nil {
		return nil, err
	}
	msg.Subject(m.Subject)
	msg.SetMessageIDWithValue(m.ID)
	msg.SetDate()
	msg.SetGenHeader(mail.HeaderUserAgent, "Lifeline")
	for k, v := range m.Header {
		msg.SetGenHeader(mail.Header(k), v)
	}
	msg.SetBodyString(mail.TypeTextPlain, m.Text)
	return msg, nil
}

// conn returns an idle connection that still answers, or dials a new one.
func (s *SMTPSender) conn(ctx context.Context) (*smtp.Client, error) {
	for {
		s.mu.Lock()
		var ic *idleConn
		if n := len(s.idle); n > 0 {
			ic, s.idle = s.idle[n-1], s.idle[:n-1]
		}
		s.mu.Unlock()
		if ic == nil {
			break
		}
		if time.Since(ic.since) < maxIdleAge && ic.c.UpdateDeadline(s.cfg.Timeout) == nil && ic.c.Noop() == nil {
			return ic.c, nil
		}
		_ = ic.c.Close()
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	c, err := s.client.DialToSMTPClientWithContext(dctx)
	if err != nil {
		return nil, err
	}
	return c, c.UpdateDeadline(s.cfg.Timeout)
}

func (s *SMTPSender) release(c *smtp.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) >= s.cfg.Idle {
		go func() { _ = c.Quit() }()
		return
	}
	s.idle = append(s.idle, &idleConn{c: c, since: time.Now()})
}

// Close says goodbye on the idle connections.
func (s *SMTPSender) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, ic := range idle {
		_ = ic.c.Quit()
	}
	return nil
}

// mailAddress returns the bare address of "addr" or "Name <addr>".
func mailAddress(s string) (string, error) {
	if strings.ContainsAny(s, "\r\n") {
		return "", errors.New("address contains a line break")
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return "", err
	}
	return a.Address, nil
}
