package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/status"
)

// The public subscription pages: /subscribe (the form), /subscribe/confirm
// (the double opt-in link) and /unsubscribe (the signed one-click link).
// Confirming and unsubscribing take a POST: link scanners in mail systems
// open every GET, and must neither confirm nor unsubscribe anyone. The
// unsubscribe POST also serves RFC 8058 one-click requests, which mail
// providers send from their own servers with the token in the URL.

// Subscriptions is the public side of subscribing: the domain's double
// opt-in and the mail that carries it. *notify.Service implements it.
type Subscriptions interface {
	// Subscribe records a subscriber and queues its confirmation mail.
	Subscribe(ctx context.Context, req status.SubscribeRequest) (*status.Pending, error)
	// Confirm completes a double opt-in; the subscriber carries a
	// webhook's signing secret.
	Confirm(ctx context.Context, token string) (status.Subscriber, error)
	// Unsubscribe stops notices to the holder of a signed token.
	Unsubscribe(ctx context.Context, token string) (status.Subscriber, error)
}

// formCookie holds the subscribe form's CSRF token (double submit: the
// form must echo the cookie, which another site can neither read nor set).
const formCookie = "lifeline_form"

var subscribeWords = map[status.Lang]map[string]string{
	status.English: {
		"title": "Subscribe to updates", "intro": "Get a message whenever an incident or maintenance is posted or updated.",
		"email": "Email", "webhook": "Webhook", "address": "Email address", "url": "Webhook URL (https)",
		"owner": "Owner's email (confirms the webhook and is told if it is disabled)", "components": "Components (none ticked: all)",
		"submit": "Subscribe", "sent": "Check your inbox", "sentbody": "If the address can be subscribed, a confirmation link is on its way to %s. Nothing is sent until it is confirmed.",
		"confirm": "Confirm your subscription", "confirmbtn": "Confirm", "confirmed": "Subscription confirmed",
		"confirmedbody": "%s will now receive updates.", "secret": "The secret that signs every delivery (Standard Webhooks). It is shown once; keep it:",
		"unsub": "Unsubscribe", "unsubbody": "Stop sending status updates to this subscription?", "unsubbtn": "Unsubscribe",
		"unsubbed": "Unsubscribed", "unsubbedbody": "%s will receive no more updates.",
		"error": "Something is not right", "back": "Back to the status page", "again": "Subscribe again",
		"feeds": "Or follow a feed", "feedsintro": "No address needed: add one of these Atom feeds to a feed reader. Each lists the incidents and maintenance with every update.",
		"allincidents": "All incidents and maintenance",
	},
	status.Chinese: {
		"title": "订阅状态更新", "intro": "每当发布或更新事件、维护时，我们都会通知您。",
		"email": "邮件", "webhook": "Webhook", "address": "邮箱地址", "url": "Webhook 地址 (https)",
		"owner": "负责人邮箱（用于确认 Webhook，停用时会收到通知）", "components": "服务组件（不勾选表示全部）",
		"submit": "订阅", "sent": "请查收邮件", "sentbody": "如果该地址可以订阅，确认链接已发送至 %s。确认之前我们不会发送任何内容。",
		"confirm": "确认订阅", "confirmbtn": "确认", "confirmed": "订阅已确认",
		"confirmedbody": "%s 今后将收到状态更新。", "secret": "用于签名每次推送的密钥（Standard Webhooks）。仅显示一次，请妥善保存：",
		"unsub": "退订", "unsubbody": "不再向此订阅发送状态更新？", "unsubbtn": "退订",
		"unsubbed": "已退订", "unsubbedbody": "%s 将不再收到状态更新。",
		"error": "出现问题", "back": "返回状态页面", "again": "重新订阅",
		"feeds": "或订阅 Atom 源", "feedsintro": "无需提供地址：将以下任一 Atom 源添加到阅读器即可。每个源列出事件和维护及其全部更新。",
		"allincidents": "所有事件和维护",
	},
}

var subscribeTemplates = map[status.Lang]*template.Template{}

func init() {
	for _, lang := range []status.Lang{status.English, status.Chinese} {
		funcs := template.FuncMap{"t": func(k string) string {
			if s, ok := subscribeWords[lang][k]; ok {
				return s
			}
			return word(lang, k)
		}}
		subscribeTemplates[lang] = template.Must(template.New("subscribe.html").Funcs(funcs).ParseFS(statusAssets, "status_assets/subscribe.html"))
	}
}

// subscribeView is what subscribe.html sees. Mode picks the section.
type subscribeView struct {
	Lang, Name, Mode string
	Message, Error   string
	CSRF, Token      string
	Secret           string
	Components       []componentChoice
	Form             map[string]string // a refused form's values
}

type componentChoice struct {
	ID, Name string
	Checked  bool
}

// limited answers 429 with Retry-After when ip has posted too often.
func (p *StatusPage) limited(w http.ResponseWriter, r *http.Request) bool {
	every, burst := p.FormEvery, p.FormBurst
	if every <= 0 {
		every = 6 * time.Second
	}
	if burst <= 0 {
		burst = 5
	}
	ok, wait, err := p.Service.Take(r.Context(), "form:"+clientIP(r), status.Rate{Every: every, Burst: burst})
	if err != nil {
		p.log().Error("subscribe: the forms' rate limit cannot be read", "err", err)
		p.subscribePage(w, r, http.StatusServiceUnavailable, subscribeView{Mode: "error", Error: "the form is unavailable; try again in a minute"})
		return true
	}
	if ok {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	p.subscribePage(w, r, http.StatusTooManyRequests, subscribeView{Mode: "error", Error: "too many requests from your address; try again in a minute"})
	return true
}

// subscribePage renders one of the pages in the visitor's language.
func (p *StatusPage) subscribePage(w http.ResponseWriter, r *http.Request, code int, v subscribeView) {
	lang := pageLang(w, r)
	v.Lang, v.Name = string(lang), p.Name
	var buf bytes.Buffer
	if err := subscribeTemplates[lang].Execute(&buf, v); err != nil {
		p.log().Error("subscribe page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	privatePage(w.Header())
	w.Header().Set("Referrer-Policy", "no-referrer") // the URL carries a token
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// publicError is what a public page says of a domain error: the visitor's
// mistake (a bad or used link; an expired one is 410) with its hint, or,
// for anything else, a plain "try later" while the detail goes to the log.
func (p *StatusPage) publicError(r *http.Request, err error) (code int, msg string) {
	code = map[fault.Code]int{fault.Invalid: 400, fault.NotFound: 404, fault.Conflict: 409, fault.Refused: 410, fault.Unavailable: 503}[fault.CodeOf(err)]
	msg = err.Error()
	if h := fault.HintOf(err); h != "" {
		msg += " (" + h + ")"
	}
	if code == 0 || code == 503 {
		p.log().Error("public page", "path", r.URL.Path, "err", err)
		code, msg = max(code, 500), "the request could not be completed; please try again later"
	}
	return code, msg
}

// errorPage shows a domain error on the subscription pages.
func (p *StatusPage) errorPage(w http.ResponseWriter, r *http.Request, err error, v subscribeView) {
	code, msg := p.publicError(r, err)
	if v.Mode == "" {
		v.Mode = "error"
	}
	v.Error = msg
	p.subscribePage(w, r, code, v)
}

func (p *StatusPage) choices(r *http.Request, picked []string) []componentChoice {
	rd, err := p.current(r.Context())
	if err != nil {
		return nil
	}
	lang := pageLang(httpDiscard{}, r)
	var out []componentChoice
	for _, c := range rd.snap.Components {
		out = append(out, componentChoice{ID: c.ID, Name: c.Name.In(lang), Checked: slices.Contains(picked, c.ID)})
	}
	return out
}

// httpDiscard lets pageLang be asked without setting its cookie twice.
type httpDiscard struct{}

func (httpDiscard) Header() http.Header         { return http.Header{} }
func (httpDiscard) Write(b []byte) (int, error) { return len(b), nil }
func (httpDiscard) WriteHeader(int)             {}

func (p *StatusPage) csrfCookie(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(formCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	v := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: formCookie, Value: v, Path: "/subscribe", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return v
}

func (p *StatusPage) subscribeForm(w http.ResponseWriter, r *http.Request) {
	p.subscribePage(w, r, http.StatusOK, subscribeView{Mode: "form", CSRF: p.csrfCookie(w, r), Components: p.choices(r, nil)})
}

func (p *StatusPage) subscribePost(w http.ResponseWriter, r *http.Request) {
	if p.limited(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(formCookie)
	if !sameOrigin(r) || err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		p.subscribePage(w, r, http.StatusForbidden, subscribeView{Mode: "error", Error: "the form expired or came from another site; open /subscribe and try again"})
		return
	}
	f := r.PostForm
	req := status.SubscribeRequest{Channel: status.Channel(f.Get("channel")), Lang: pageLang(httpDiscard{}, r), Components: f["component"]}
	req.Address = strings.TrimSpace(f.Get("address"))
	if req.Channel == status.ChannelWebhook {
		req.Address, req.OwnerEmail = strings.TrimSpace(f.Get("url")), strings.TrimSpace(f.Get("owner_email"))
	}
	pending, err := p.Subscriptions.Subscribe(r.Context(), req)
	if err != nil {
		form := map[string]string{"channel": f.Get("channel"), "address": f.Get("address"), "url": f.Get("url"), "owner_email": f.Get("owner_email")}
		p.errorPage(w, r, err, subscribeView{Mode: "form", CSRF: c.Value, Components: p.choices(r, req.Components), Form: form})
		return
	}
	// The same answer whether the address was new or already confirmed, so
	// the form does not reveal who is subscribed.
	to := pending.ConfirmTo
	if to == "" {
		to = req.Address
		if req.Channel == status.ChannelWebhook {
			to = req.OwnerEmail
		}
	}
	p.subscribePage(w, r, http.StatusOK, subscribeView{Mode: "sent", Message: to})
}

func (p *StatusPage) confirmForm(w http.ResponseWriter, r *http.Request) {
	p.subscribePage(w, r, http.StatusOK, subscribeView{Mode: "confirm", Token: r.URL.Query().Get("token")})
}

func (p *StatusPage) confirmPost(w http.ResponseWriter, r *http.Request) {
	if p.limited(w, r) {
		return
	}
	sub, err := p.Subscriptions.Confirm(r.Context(), r.PostFormValue("token"))
	if err != nil {
		p.errorPage(w, r, err, subscribeView{})
		return
	}
	v := subscribeView{Mode: "confirmed", Message: sub.Address}
	if sub.Channel == status.ChannelWebhook {
		v.Secret = sub.Secret
	}
	p.subscribePage(w, r, http.StatusOK, v)
}

func (p *StatusPage) unsubscribeForm(w http.ResponseWriter, r *http.Request) {
	p.subscribePage(w, r, http.StatusOK, subscribeView{Mode: "unsubscribe", Token: r.URL.Query().Get("token")})
}

// unsubscribePost takes the token from the URL (RFC 8058 one-click) or
// from the page's form. It is not rate limited per address: one-click
// requests come from mail providers' shared servers, and a forged token
// costs one HMAC check.
func (p *StatusPage) unsubscribePost(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	if token == "" {
		token = r.PostFormValue("token")
	}
	sub, err := p.Subscriptions.Unsubscribe(r.Context(), token)
	if err != nil {
		p.errorPage(w, r, err, subscribeView{})
		return
	}
	p.subscribePage(w, r, http.StatusOK, subscribeView{Mode: "unsubscribed", Message: sub.Address})
}

// subscribeRoutes adds the public subscription pages when subscriptions
// are wired.
func (s *Server) subscribeRoutes(mux *http.ServeMux) {
	p := s.Status
	if p == nil || p.Subscriptions == nil {
		return
	}
	mux.HandleFunc("GET /subscribe", p.subscribeForm)
	mux.HandleFunc("POST /subscribe", p.subscribePost)
	mux.HandleFunc("GET /subscribe/confirm", p.confirmForm)
	mux.HandleFunc("POST /subscribe/confirm", p.confirmPost)
	mux.HandleFunc("GET /unsubscribe", p.unsubscribeForm)
	mux.HandleFunc("POST /unsubscribe", p.unsubscribePost)
}
