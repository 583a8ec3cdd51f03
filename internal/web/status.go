package web

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/status"
)

// StatusPage serves the public status page and its Statuspage v2 JSON from
// memory. Every response is rendered, gzipped and hashed once per change, so
// a request costs a map lookup and a write: the page must stay up, and
// cheap, while everything else is on fire, and it needs no product database.
// If the state store goes down, the last rendering keeps being served.
type StatusPage struct {
	Service *status.Service
	// Name and URL identify the page in the v2 "page" object and the feed.
	Name string
	URL  string
	Log  *slog.Logger
	// Poll is how often Run checks for changes made by other processes
	// (the CLI, other `lifeline serve`s); 0 means 2s.
	Poll time.Duration
	// Every is how often Run re-renders even without a change, because time
	// moves maintenances along and makes incidents overdue; 0 means 30s.
	Every time.Duration
	// Subscriptions serves the public subscribe, confirm and unsubscribe
	// pages (status_subscribe.go); nil serves none of them.
	Subscriptions Subscriptions
	// FormEvery and FormBurst are the per-address token bucket of those
	// forms: a post every FormEvery, FormBurst at once (0: 6s and 5). The
	// buckets are in the state store, shared by every serve process.
	FormEvery time.Duration
	FormBurst int

	cur     atomic.Pointer[rendering]
	buildMu sync.Mutex // one render at a time
	pageID  string
}

// rendering is one snapshot rendered into every response the page serves.
type rendering struct {
	snap  *status.Snapshot
	files map[string]*asset
}

// asset is one pre-rendered response. Header values are kept as slices so
// serving assigns them without allocating.
type asset struct {
	body, gz         []byte
	ctype            []string
	etag             []string
	cache            []string
	bodyLen, gzipLen []string
}

func newAsset(ctype, cache string, body []byte) *asset {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(body)
	_ = zw.Close()
	sum := sha256.Sum256(body)
	return &asset{body: body, gz: buf.Bytes(), ctype: []string{ctype}, cache: []string{cache},
		etag:    []string{`"` + hex.EncodeToString(sum[:12]) + `"`},
		bodyLen: []string{strconv.Itoa(len(body))}, gzipLen: []string{strconv.Itoa(buf.Len())}}
}

func (p *StatusPage) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

// Refresh reads a new snapshot and renders it. On failure the previous
// rendering stays in place.
func (p *StatusPage) Refresh(ctx context.Context) error {
	p.buildMu.Lock()
	defer p.buildMu.Unlock()
	snap, err := p.Service.Snapshot(ctx)
	if err != nil {
		return err
	}
	r, err := p.render(snap)
	if err != nil {
		return err
	}
	p.cur.Store(r)
	return nil
}

// Run keeps the rendering current until ctx ends: it re-renders when the
// store's revision moves, and every Every regardless.
func (p *StatusPage) Run(ctx context.Context) {
	poll, every := p.Poll, p.Every
	if poll <= 0 {
		poll = 2 * time.Second
	}
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	last := time.Time{}
	for {
		if cur := p.cur.Load(); cur == nil || time.Since(last) >= every || p.changed(ctx, cur.snap.Revision) {
			// Full rate buckets are dropped as time refills them.
			if err := p.Service.PruneRates(ctx); err != nil && ctx.Err() == nil {
				p.log().Warn("status page: pruning the forms' rate buckets", "err", err)
			}
			if err := p.Refresh(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				p.log().Warn("status page: refresh failed; serving the last rendering", "err", err)
			} else {
				last = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *StatusPage) changed(ctx context.Context, rev int64) bool {
	now, err := p.Service.Revision(ctx)
	return err == nil && now != rev
}

// current returns the current rendering, rendering one first if needed.
func (p *StatusPage) current(ctx context.Context) (*rendering, error) {
	if r := p.cur.Load(); r != nil {
		return r, nil
	}
	if err := p.Refresh(ctx); err != nil {
		return nil, err
	}
	return p.cur.Load(), nil
}

// serve writes the pre-rendered asset key, honouring If-None-Match and
// gzip.
func (p *StatusPage) serve(w http.ResponseWriter, r *http.Request, key string) {
	rd, err := p.current(r.Context())
	if err != nil {
		p.log().Error("status page: no rendering to serve", "err", err)
		http.Error(w, "status page temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	a := rd.files[key]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h["Content-Type"] = a.ctype
	h["Etag"] = a.etag
	h["Cache-Control"] = a.cache
	h["Vary"] = varyHeader
	if match := r.Header["If-None-Match"]; len(match) > 0 && match[0] == a.etag[0] {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body, length := a.body, a.bodyLen
	if acceptsGzip(r) {
		h["Content-Encoding"] = gzipHeader
		body, length = a.gz, a.gzipLen
	}
	h["Content-Length"] = length
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

var (
	varyHeader = []string{"Accept-Encoding, Accept-Language, Cookie"}
	gzipHeader = []string{"gzip"}
)

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header["Accept-Encoding"] {
		for part := range strings.SplitSeq(v, ",") {
			name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(q) != "q=0" {
				return true
			}
		}
	}
	return false
}

// langCookie remembers a language picked on the page.
const langCookie = "lifeline_lang"

// pageLang picks the page language: ?lang= (remembered in a cookie), then
// the cookie, then Accept-Language. Any Chinese preference gets Simplified
// Chinese, the only Chinese the page has.
func pageLang(w http.ResponseWriter, r *http.Request) status.Lang {
	// The checks for a query and a cookie come first because parsing either
	// allocates, and most requests have neither.
	if r.URL.RawQuery != "" {
		if q := r.URL.Query().Get("lang"); q != "" {
			l := parseLang(q)
			http.SetCookie(w, &http.Cookie{Name: langCookie, Value: string(l), Path: "/", MaxAge: 365 * 24 * 3600, SameSite: http.SameSiteLaxMode})
			return l
		}
	}
	if len(r.Header["Cookie"]) > 0 {
		if c, err := r.Cookie(langCookie); err == nil {
			return parseLang(c.Value)
		}
	}
	best, bestQ := status.English, -1.0
	for _, v := range r.Header["Accept-Language"] {
		for part := range strings.SplitSeq(v, ",") {
			tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			q := 1.0
			if qs, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(qs, 64); err == nil {
					q = f
				}
			}
			tag = strings.ToLower(strings.TrimSpace(tag))
			known := strings.HasPrefix(tag, "zh") || strings.HasPrefix(tag, "en")
			if q > 0 && q > bestQ && known {
				best, bestQ = parseLang(tag), q
			}
		}
	}
	return best
}

func parseLang(s string) status.Lang {
	if strings.HasPrefix(strings.ToLower(s), "zh") {
		return status.Chinese
	}
	return status.English
}

// statusRoutes adds the public page, its feed and the v2 JSON to mux, and
// the status metrics to the registry.
func (s *Server) statusRoutes(mux *http.ServeMux) {
	p := s.Status
	if p == nil {
		return
	}
	for _, path := range v2Paths {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { p.serve(w, r, path) })
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { p.serve(w, r, "page:"+string(pageLang(w, r))) })
	// ?component=ID narrows the feed to one component; an unknown one is 404.
	mux.HandleFunc("GET /history.atom", func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, feedKey(pageLang(w, r), r.URL.Query().Get("component")))
	})
	mux.HandleFunc("GET /status-assets/{name}", p.serveAsset)
	mux.HandleFunc("GET "+status.TenantPath, p.tenantPage)
	s.statusAPIRoutes(mux)
	s.consoleRoutes(mux)
	s.subscribeRoutes(mux)
	if s.Registry != nil {
		s.registerStatusMetrics(p)
	}
}

func (s *Server) registerStatusMetrics(p *StatusPage) {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeline_status_incidents_overdue",
			Help: "Open major or critical incidents whose last update is older than the cadence interval."},
			func() float64 {
				if r := p.cur.Load(); r != nil {
					return float64(len(r.snap.Overdue))
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeline_status_snapshot_age_seconds",
			Help: "Age of the status page's rendering; it grows while the state store cannot be read."},
			func() float64 {
				if r := p.cur.Load(); r != nil {
					return time.Since(r.snap.At).Seconds()
				}
				return -1
			}),
	} {
		var dup prometheus.AlreadyRegisteredError
		if err := s.Registry.Register(c); err != nil && !errors.As(err, &dup) {
			s.Log.Error("status metrics", "err", err)
		}
	}
}
