package contacts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// A verification link carries a token "ID.EXPIRY.MAC": the contact id, the
// expiry in Unix seconds, and HMAC-SHA256 over both and the contact's
// current address. Changing any part, or the address changing since, makes
// the MAC fail; the expiry cannot be moved because it is signed.

// The link errors; test with errors.Is.
var (
	ErrLinkInvalid = &fault.Error{Code: fault.Invalid, Msg: "this verification link is not valid",
		Hint: "use the link exactly as it arrived, or ask for a new one"}
	ErrLinkExpired = &fault.Error{Code: fault.Refused, Msg: "this verification link has expired",
		Hint: "ask for a new one; links are valid for a limited time"}
)

// VerifyPath is where serve answers verification links.
const VerifyPath = "/contacts/verify"

// linkSecret returns the configured secret, or the vault's own, made on
// first use.
func (s *Service) linkSecret(ctx context.Context) ([]byte, error) {
	if s.cfg.LinkSecret != nil {
		return s.cfg.LinkSecret, nil
	}
	var secret string
	_, err := s.store.write(ctx, s.now(), false, func(t *tx) error {
		v, err := t.meta("link_secret")
		if err != nil || v != "" {
			secret = v
			return err
		}
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		secret = hex.EncodeToString(b[:])
		return t.setMeta("link_secret", secret)
	})
	return []byte(secret), err
}

func linkMAC(secret []byte, id string, exp int64, emailKey string) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "lifeline contacts verify v1\x00%s\x00%d\x00%s", id, exp, emailKey)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// linkFor makes the token and URL for one contact.
func (s *Service) linkFor(secret []byte, c *contactRow, now time.Time) (token, link string) {
	exp := now.Add(s.cfg.LinkTTL).Unix()
	token = c.ID + "." + strconv.FormatInt(exp, 10) + "." + linkMAC(secret, c.ID, exp, c.EmailKey)
	return token, s.cfg.LinkBase + VerifyPath + "?t=" + url.QueryEscape(token)
}

// VerifyOptions choose whom SendVerifications writes to.
type VerifyOptions struct {
	Actor string
	// Stale selects every contact with an active link that is stale and
	// has not bounced, and has no unexpired link outstanding.
	Stale bool
	// Emails selects these contacts (in addition), whatever their state.
	Emails []string
	DryRun bool
}

// VerifyResult says what SendVerifications did.
type VerifyResult struct {
	Sent    []string     `json:"sent"`    // masked addresses
	Pending int          `json:"pending"` // stale, but a link sent earlier is still valid
	Bounced []string     `json:"bounced"` // refused for good; marked bounced
	Failed  []SendFailed `json:"failed"`  // transient; tried again next time
	DryRun  bool         `json:"dry_run"`
}

// SendFailed is one transient send failure.
type SendFailed struct {
	Email string `json:"email"` // masked
	Error string `json:"error"`
}

// SendVerifications emails each selected contact a signed link that expires
// after LinkTTL; following it sets verified_at. Each send is recorded
// (verify_sent_at and a history entry). Without a Mailer it is refused; an
// unknown address in o.Emails is fault.NotFound and nothing is sent.
func (s *Service) SendVerifications(ctx context.Context, o VerifyOptions) (*VerifyResult, error) {
	if s.cfg.Mailer == nil && !o.DryRun {
		return nil, fault.New(fault.Refused, "configure email delivery (internal/notify) for this command", "no mailer is configured, so no verification email can be sent")
	}
	if s.cfg.LinkBase == "" {
		return nil, fault.New(fault.Invalid, "set vault.public_url in lifeline.yaml", "no public address for verification links")
	}
	now := s.now()
	res := &VerifyResult{Sent: []string{}, Bounced: []string{}, Failed: []SendFailed{}, DryRun: o.DryRun}
	var targets []contactRow
	err := s.store.read(ctx, func(t *tx) error {
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts ORDER BY email_key")
		if err != nil {
			return err
		}
		activeIDs := map[string]bool{}
		if o.Stale {
			ids, err := load[linkRow](t, "SELECT "+linkCols+" FROM links WHERE removed_at = 0")
			if err != nil {
				return err
			}
			for _, l := range ids {
				activeIDs[l.ContactID] = true
			}
		}
		byKey := map[string]contactRow{}
		for _, r := range rows {
			byKey[r.EmailKey] = r
		}
		picked := map[string]bool{}
		for _, e := range o.Emails {
			a, err := NormalizeEmail(e)
			if err != nil {
				return err
			}
			r, ok := byKey[a.Key]
			if !ok {
				return fault.New(fault.NotFound, "", "no contact %s in the vault", Mask(a.Email))
			}
			if !picked[r.ID] {
				picked[r.ID] = true
				targets = append(targets, r)
			}
		}
		for _, r := range rows {
			if !o.Stale || picked[r.ID] || !activeIDs[r.ID] || r.BouncedAt != 0 || !stale(r.VerifiedAt, now, s.cfg.StaleAfter) {
				continue
			}
			if r.VerifySentAt != 0 && now.Sub(fromMicros(r.VerifySentAt)) < s.cfg.LinkTTL {
				res.Pending++
				continue
			}
			picked[r.ID] = true
			targets = append(targets, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o.DryRun {
		for _, r := range targets {
			res.Sent = append(res.Sent, Mask(r.Email))
		}
		return res, nil
	}
	secret, err := s.linkSecret(ctx)
	if err != nil {
		return nil, err
	}
	for i := range targets {
		r := &targets[i]
		_, link := s.linkFor(secret, r, now)
		subject, text := verifyMessage(r, link, now.Add(s.cfg.LinkTTL))
		err := s.cfg.Mailer.Send(ctx, r.Email, subject, text)
		switch {
		case errors.Is(err, ErrUndeliverable):
			if err := s.MarkBounced(ctx, r.Email, err.Error(), "verify", o.Actor); err != nil {
				return res, err
			}
			res.Bounced = append(res.Bounced, Mask(r.Email))
		case err != nil:
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			s.log.Warn("contacts: verification email not sent", "email", Mask(r.Email), "err", err)
			res.Failed = append(res.Failed, SendFailed{Email: Mask(r.Email), Error: err.Error()})
		default:
			if err := s.touch(ctx, r.ID, o.Actor, "verify", "verify.sent", func(c *contactRow) { c.VerifySentAt = micros(now) }); err != nil {
				return res, err
			}
			res.Sent = append(res.Sent, Mask(r.Email))
		}
	}
	return res, nil
}

// verifyMessage is the email a contact receives.
func verifyMessage(c *contactRow, link string, expires time.Time) (subject, text string) {
	name := c.Name
	if name == "" {
		name = "there"
	}
	subject = "Please confirm you are still our contact"
	text = strings.Join([]string{
		"Hello " + name + ",",
		"",
		"You are listed as an authorised contact for one or more of your organisation's sites.",
		"If something ever goes wrong with them, this is the address we will write to.",
		"Please confirm it is still right by opening this link:",
		"",
		"  " + link,
		"",
		"The link works until " + expires.UTC().Format("2 January 2006 15:04 MST") + ".",
		"If you are no longer the right person, reply and tell us who is.",
	}, "\n")
	return subject, text
}

// touch applies fn to one contact as a new version with one history entry.
func (s *Service) touch(ctx context.Context, id, actor, source, action string, fn func(*contactRow)) error {
	_, err := s.store.write(ctx, s.now(), false, func(t *tx) error {
		r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE id = $1", id)
		if err != nil || r == nil {
			return err
		}
		fn(r)
		r.Version++
		r.UpdatedAt = micros(t.now)
		if err := r.update(t); err != nil {
			return err
		}
		return t.record(Change{Actor: actor, Source: source, Action: action, ContactID: r.ID, Version: r.Version})
	})
	return err
}

// Confirmation is what following a verification link did.
type Confirmation struct {
	Email      string    `json:"email"` // masked
	VerifiedAt time.Time `json:"verified_at"`
}

// CheckLink validates a token without using it, for the page that asks the
// person to confirm (mail scanners open links; only the confirmation
// itself, a POST, sets verified_at). It returns the masked address.
func (s *Service) CheckLink(ctx context.Context, token string) (string, error) {
	r, err := s.linkContact(ctx, token)
	if err != nil {
		return "", err
	}
	return Mask(r.Email), nil
}

// Confirm follows a verification link: it sets verified_at to now and
// clears a bounce. A forged or mangled token wraps ErrLinkInvalid, an
// expired one ErrLinkExpired; neither changes anything.
func (s *Service) Confirm(ctx context.Context, token string) (*Confirmation, error) {
	r, err := s.linkContact(ctx, token)
	if err != nil {
		return nil, err
	}
	now := s.now()
	err = s.touch(ctx, r.ID, "link", "link", "verify", func(c *contactRow) {
		c.VerifiedAt, c.BouncedAt, c.BounceReason = micros(now), 0, ""
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("contact verified", "email", Mask(r.Email))
	return &Confirmation{Email: Mask(r.Email), VerifiedAt: now}, nil
}

// linkContact checks a token's signature, then its expiry, and returns the
// contact it names.
func (s *Service) linkContact(ctx context.Context, token string) (*contactRow, error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 || len(token) > 200 {
		return nil, ErrLinkInvalid
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	var r *contactRow
	err = s.store.read(ctx, func(t *tx) error {
		var err error
		r, err = loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE id = $1", parts[0])
		return err
	})
	if err != nil {
		return nil, err
	}
	secret, err := s.linkSecret(ctx)
	if err != nil {
		return nil, err
	}
	// The MAC is checked even for an unknown id, so both cases take the
	// same path and the answer does not tell which ids exist.
	key := ""
	if r != nil {
		key = r.EmailKey
	}
	if !hmac.Equal([]byte(parts[2]), []byte(linkMAC(secret, parts[0], exp, key))) || r == nil {
		return nil, ErrLinkInvalid
	}
	if !s.now().Before(time.Unix(exp, 0)) {
		return nil, ErrLinkExpired
	}
	return r, nil
}
