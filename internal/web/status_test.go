package web

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/status"
)

// fakeAuth accepts a fixed set of secrets.
type fakeAuth map[string]state.Token

func (a fakeAuth) Authenticate(_ context.Context, secret string) (state.Token, error) {
	if t, ok := a[secret]; ok {
		return t, nil
	}
	return state.Token{}, fault.New(fault.Unauthorized, "", "unknown token")
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type statusBundle struct {
	ctx     context.Context
	svc     *status.Service
	page    *StatusPage
	srv     *httptest.Server
	store   *state.Store
	dsn     string // the state store's, for a second process on it
	clock   *testClock
	reg     *prometheus.Registry
	tracker status.Component
}

// setupStatus serves a status page over a fresh SQLite state store with two
// components (tracker, wiki) in a group. tweaks adjust the status service's
// config before it is built.
func setupStatus(t *testing.T, tweaks ...func(*status.Config)) *statusBundle {
	t.Helper()
	ctx := context.Background()
	clk := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "state.db")
	st, err := state.Open(ctx, dsn, "", clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := status.Config{Store: st, Now: clk.Now}
	for _, tw := range tweaks {
		tw(&cfg)
	}
	svc, err := status.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.PutGroup(ctx, status.Group{Name: status.Text{En: "Products", Zh: "产品"}})
	if err != nil {
		t.Fatal(err)
	}
	tracker, err := svc.PutComponent(ctx, status.Component{Name: status.Text{En: "tracker", Zh: "追踪器"}, GroupID: g.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutComponent(ctx, status.Component{Name: status.Text{En: "wiki", Zh: "维基"}, GroupID: g.ID, Position: 1}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	page := &StatusPage{Service: svc, Name: "Example Status", URL: "https://status.example.test"}
	s := &Server{Auth: fakeAuth{
		"viewer-secret":   {Name: "vera", Role: state.RoleViewer},
		"operator-secret": {Name: "otto", Role: state.RoleOperator},
	}, Registry: reg, Log: slog.New(slog.DiscardHandler), Status: page}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &statusBundle{ctx: ctx, svc: svc, page: page, srv: srv, store: st, dsn: dsn, clock: clk, reg: reg, tracker: tracker}
}

func pct(v float64) *float64 { return &v }

func criticalBody() status.Body {
	return status.Body{
		Situation:          status.Text{En: "A script deleted 883 sites.", Zh: "一个脚本删除了 883 个站点。"},
		AffectedGroups:     []status.AffectedGroup{{Kind: "product", Name: "tracker", Count: 883}},
		Timeline:           status.Text{En: "Most sites back within 6 hours.", Zh: "大部分站点将在 6 小时内恢复。"},
		TimelineConfidence: status.Medium,
		FullerPictureAt:    time.Date(2026, 4, 5, 15, 0, 0, 0, time.UTC),
		PercentRestored:    pct(12.5), PercentConfidence: status.High,
		DataLoss: status.Text{En: "At most 5 minutes."}, DataLossConfidence: status.Low,
		Support: status.Text{En: "Open a ticket."}, SupportNoLogin: status.Text{En: "Call +1 555 0100."},
		Known: status.Text{En: "Which sites."}, Unknown: status.Text{En: "Attachments."},
	}
}

func (b *statusBundle) openCritical(t *testing.T) *status.Incident {
	t.Helper()
	inc, err := b.svc.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: "Sites deleted", Zh: "站点被删除"},
		Draft: status.Draft{Impact: status.ImpactCritical, Body: criticalBody(), Author: "alice",
			Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.MajorOutage}}}})
	if err != nil {
		t.Fatal(err)
	}
	b.clock.Add(10 * time.Minute)
	body := criticalBody()
	body.PercentRestored = pct(40)
	inc, err = b.svc.PostUpdate(b.ctx, inc.ID, status.Draft{Status: status.Identified, Body: body,
		Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.PartialOutage}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}
	return inc
}

func get(t *testing.T, u string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp := get(t, u)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var m map[string]any
	if err := json.Unmarshal(readAll(t, resp), &m); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return m
}

// at walks a decoded JSON document: at(doc, "incidents", 0, "name").
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestStatusV2JSON(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	inc := b.openCritical(t)
	start := b.clock.Now().Add(24 * time.Hour)
	if _, err := b.svc.ScheduleMaintenance(b.ctx, status.NewMaintenance{Name: status.Text{En: "Upgrade"}, ScheduledFor: start, ScheduledUntil: start.Add(time.Hour),
		Components: []string{"wiki"}, Draft: status.Draft{Body: status.Body{Situation: status.Text{En: "Wiki read-only."}}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}
	base := b.srv.URL + "/api/v2/"

	sum := getJSON(t, base+"summary.json")
	for _, k := range []string{"id", "name", "url", "time_zone", "updated_at"} {
		if at(sum, "page", k) == nil {
			t.Errorf("page.%s missing", k)
		}
	}
	if at(sum, "status", "indicator") != "critical" || at(sum, "status", "description") != "Major System Outage" {
		t.Fatalf("status = %v", sum["status"])
	}
	// The group comes first, with its members' ids and their worst status.
	if at(sum, "components", 0, "group") != true || at(sum, "components", 0, "status") != "partial_outage" ||
		len(at(sum, "components", 0, "components").([]any)) != 2 {
		t.Fatalf("group component = %v", at(sum, "components", 0))
	}
	tracker := at(sum, "components", 1)
	if at(tracker, "name") != "tracker" || at(tracker, "status") != "partial_outage" || at(tracker, "group_id") != at(sum, "components", 0, "id") ||
		at(tracker, "lifeline", "name_zh") != "追踪器" || len(at(tracker, "lifeline", "uptime_days").([]any)) != status.UptimeDays {
		t.Fatalf("tracker component = %v", tracker)
	}
	if at(sum, "incidents", 0, "id") != inc.ID || at(sum, "scheduled_maintenances", 0, "status") != "scheduled" {
		t.Fatalf("summary incidents %v, maintenances %v", sum["incidents"], sum["scheduled_maintenances"])
	}

	st := getJSON(t, base+"status.json")
	if len(st) != 2 || at(st, "status", "indicator") != "critical" {
		t.Fatalf("status.json = %v", st)
	}

	incs := getJSON(t, base+"incidents.json")
	i0 := at(incs, "incidents", 0)
	if at(i0, "impact") != "critical" || at(i0, "status") != "identified" || at(i0, "resolved_at") != nil || at(i0, "shortlink") == "" ||
		at(i0, "lifeline", "name_zh") != "站点被删除" {
		t.Fatalf("incident = %v", i0)
	}
	// Updates newest first, each saying which component went from what to what.
	u0, u1 := at(i0, "incident_updates", 0), at(i0, "incident_updates", 1)
	if at(u0, "status") != "identified" || at(u1, "status") != "investigating" {
		t.Fatalf("updates not newest first: %v, %v", at(u0, "status"), at(u1, "status"))
	}
	if ac := at(u0, "affected_components", 0); at(ac, "old_status") != "major_outage" || at(ac, "new_status") != "partial_outage" || at(ac, "name") != "tracker" {
		t.Fatalf("affected_components = %v", ac)
	}
	if body := at(u0, "body").(string); !strings.Contains(body, "Sites restored: 40%") || !strings.Contains(body, "If you cannot sign in: Call +1 555 0100.") {
		t.Fatalf("body = %q", body)
	}
	if at(u0, "lifeline", "template", "timeline_confidence") != "medium" || !strings.HasPrefix(at(u0, "lifeline", "body_zh").(string), "一个脚本删除了") {
		t.Fatalf("update extension = %v", at(u0, "lifeline"))
	}
	if at(i0, "components", 0, "status") != "partial_outage" {
		t.Fatalf("incident components = %v", at(i0, "components"))
	}

	if n := len(at(getJSON(t, base+"incidents/unresolved.json"), "incidents").([]any)); n != 1 {
		t.Fatalf("unresolved = %d", n)
	}
	if n := len(at(getJSON(t, base+"scheduled-maintenances/upcoming.json"), "scheduled_maintenances").([]any)); n != 1 {
		t.Fatalf("upcoming = %d", n)
	}
	if n := len(at(getJSON(t, base+"scheduled-maintenances/active.json"), "scheduled_maintenances").([]any)); n != 0 {
		t.Fatalf("active = %d", n)
	}
	m := at(getJSON(t, base+"scheduled-maintenances.json"), "scheduled_maintenances", 0)
	if at(m, "impact") != "maintenance" || at(m, "scheduled_for") == nil || at(m, "scheduled_until") == nil {
		t.Fatalf("maintenance = %v", m)
	}

	// The maintenance starts: it moves to active, wiki goes under maintenance.
	b.clock.Add(24*time.Hour + time.Minute)
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}
	if act := getJSON(t, base+"scheduled-maintenances/active.json"); at(act, "scheduled_maintenances", 0, "status") != "in_progress" {
		t.Fatalf("active = %v", act)
	}
	if c := at(getJSON(t, base+"components.json"), "components", 2); at(c, "name") != "wiki" || at(c, "status") != "under_maintenance" {
		t.Fatalf("wiki = %v", c)
	}

	// Resolving returns the indicator to none.
	if _, err := b.svc.Resolve(b.ctx, inc.ID, status.Draft{Body: criticalBody()}); err != nil {
		t.Fatal(err)
	}
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}
	if st := getJSON(t, base+"status.json"); at(st, "status", "indicator") != "none" {
		t.Fatalf("after resolve: %v", st)
	}
	if r := at(getJSON(t, base+"incidents.json"), "incidents", 0, "resolved_at"); r == nil {
		t.Fatal("resolved_at is null after resolve")
	}
}

func TestStatusServedFromMemory(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	b.openCritical(t)
	u := b.srv.URL + "/api/v2/summary.json"

	plain := readAll(t, get(t, u))
	resp := get(t, u, "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatal("gzip not served")
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, plain) {
		t.Fatal("gzip variant differs from the plain body")
	}
	if r := get(t, u, "If-None-Match", resp.Header.Get("Etag")); r.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.StatusCode)
	}

	// The state store goes away: the page keeps serving its last rendering.
	b.store.Close()
	if err := b.page.Refresh(b.ctx); err == nil {
		t.Fatal("refresh over a closed store succeeded")
	}
	if r := get(t, u); r.StatusCode != 200 || !bytes.Equal(readAll(t, r), plain) {
		t.Fatalf("after the store closed: %d", r.StatusCode)
	}
	if r := get(t, b.srv.URL+"/"); r.StatusCode != 200 {
		t.Fatalf("page after the store closed: %d", r.StatusCode)
	}
}

func TestStatusPageLanguages(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	inc := b.openCritical(t)

	en := string(readAll(t, get(t, b.srv.URL+"/", "Accept-Language", "de-DE,en;q=0.8")))
	if !strings.Contains(en, `<html lang="en">`) || !strings.Contains(en, "Major System Outage") || !strings.Contains(en, "A script deleted 883 sites.") ||
		!strings.Contains(en, `id="incident-`+inc.ID+`"`) {
		t.Fatalf("english page:\n%s", en)
	}
	// Updates newest first on the page too.
	if strings.Index(en, "Identified") > strings.Index(en, "Investigating") {
		t.Fatal("updates not newest first on the page")
	}
	zh := string(readAll(t, get(t, b.srv.URL+"/", "Accept-Language", "zh-CN,zh;q=0.9,en;q=0.8")))
	if !strings.Contains(zh, `<html lang="zh-CN">`) || !strings.Contains(zh, "重大系统中断") || !strings.Contains(zh, "一个脚本删除了 883 个站点。") ||
		!strings.Contains(zh, "站点被删除") || !strings.Contains(zh, "追踪器") {
		t.Fatalf("chinese page:\n%s", zh)
	}
	// Switching on the page sets a cookie that wins over Accept-Language.
	resp := get(t, b.srv.URL+"/?lang=en", "Accept-Language", "zh-CN")
	if body := string(readAll(t, resp)); !strings.Contains(body, `<html lang="en">`) {
		t.Fatal("?lang=en ignored")
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == langCookie {
			c = k
		}
	}
	if c == nil || c.Value != "en" {
		t.Fatalf("language cookie = %v", c)
	}
	if body := string(readAll(t, get(t, b.srv.URL+"/", "Accept-Language", "zh-CN", "Cookie", langCookie+"=en"))); !strings.Contains(body, `<html lang="en">`) {
		t.Fatal("language cookie ignored")
	}

	// The page uses nothing from elsewhere.
	for _, s := range []string{"http://", "https://cdn", "//cdn", "<script src"} {
		if strings.Contains(strings.ReplaceAll(en, "https://status.example.test", ""), s) {
			t.Errorf("page refers to %q", s)
		}
	}
	if r := get(t, b.srv.URL+"/status-assets/status.css"); r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("stylesheet: %d", r.StatusCode)
	}
}

func TestStatusAtomFeed(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	inc := b.openCritical(t)
	resp := get(t, b.srv.URL+"/history.atom?lang=zh-CN")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/atom+xml") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var f struct {
		XMLName xml.Name `xml:"http://www.w3.org/2005/Atom feed"`
		Entries []struct {
			ID      string `xml:"id"`
			Title   string `xml:"title"`
			Content string `xml:"content"`
		} `xml:"entry"`
	}
	if err := xml.Unmarshal(readAll(t, resp), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Entries) != 1 || !strings.HasSuffix(f.Entries[0].ID, inc.ID) || !strings.HasPrefix(f.Entries[0].Title, "站点被删除") ||
		!strings.Contains(f.Entries[0].Content, "一个脚本删除了 883 个站点。") {
		t.Fatalf("feed = %+v", f)
	}
}

func TestStatusCadenceMetric(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	b.openCritical(t)
	gauge := func() float64 {
		mfs, err := b.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "lifeline_status_incidents_overdue" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("lifeline_status_incidents_overdue not registered")
		return 0
	}
	if g := gauge(); g != 0 {
		t.Fatalf("overdue = %v right after an update", g)
	}
	b.clock.Add(61 * time.Minute)
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != 1 {
		t.Fatalf("overdue = %v after 61 min of silence", g)
	}
	if r := at(getJSON(t, b.srv.URL+"/api/v2/incidents.json"), "incidents", 0, "lifeline", "overdue"); r != true {
		t.Fatalf("lifeline.overdue = %v", r)
	}
}

func apiCall(t *testing.T, method, u, token string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, u, bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestIncidentAPI(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	api := b.srv.URL + "/api/v1/incidents"
	open := status.Request{Name: "Sites deleted", Impact: status.ImpactCritical, Body: criticalBody(),
		Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.MajorOutage}}}

	if code, _ := apiCall(t, "POST", api, "", open); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := apiCall(t, "POST", api, "viewer-secret", open); code != 403 {
		t.Fatalf("viewer opened an incident: %d", code)
	}
	partial := open
	partial.Body = status.Body{Situation: status.Text{En: "Sites deleted."}}
	code, e := apiCall(t, "POST", api, "operator-secret", partial)
	if code != 422 || e["code"] != "refused" || !strings.Contains(e["error"].(string), "percent_restored") {
		t.Fatalf("incomplete update: %d %v", code, e)
	}
	code, inc := apiCall(t, "POST", api, "operator-secret", open)
	if code != 201 || inc["status"] != "investigating" || at(inc, "incident_updates", 0, "author") != "otto" {
		t.Fatalf("open: %d %v", code, inc)
	}
	id := inc["id"].(string)
	// The public page shows it at once, without waiting for a poll.
	if at(getJSON(t, b.srv.URL+"/api/v2/summary.json"), "incidents", 0, "id") != id {
		t.Fatal("summary.json does not show the new incident")
	}

	code, inc = apiCall(t, "POST", api+"/"+id+"/updates", "operator-secret", status.Request{Status: status.Monitoring, CarryOver: true,
		Body: status.Body{Situation: status.Text{En: "Restores running."}}})
	if code != 201 || inc["status"] != "monitoring" || at(inc, "incident_updates", 0, "body", "situation", "en") != "Restores running." {
		t.Fatalf("update: %d %v", code, inc)
	}
	code, list := apiCall(t, "GET", api+"?open=true", "viewer-secret", nil)
	if code != 200 || len(list["incidents"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, list)
	}
	code, inc = apiCall(t, "POST", api+"/"+id+"/resolve", "operator-secret", status.Request{CarryOver: true,
		Body: status.Body{Situation: status.Text{En: "All sites restored."}, PercentRestored: pct(100)}})
	if code != 201 || inc["status"] != "resolved" || at(inc, "components", 0, "new_status") != "operational" {
		t.Fatalf("resolve: %d %v", code, inc)
	}
	if code, _ := apiCall(t, "GET", api+"/nope", "viewer-secret", nil); code != 404 {
		t.Fatalf("unknown incident: %d", code)
	}

	// Components and templates are managed through the same API.
	if code, c := apiCall(t, "PUT", b.srv.URL+"/api/v1/components/eu-west", "operator-secret", componentRequest{Group: "Regions", GroupZh: "区域"}); code != 200 || c["group_id"] == "" {
		t.Fatalf("put component: %d %v", code, c)
	}
	if code, _ := apiCall(t, "PUT", b.srv.URL+"/api/v1/incident-templates/deletion", "operator-secret", status.Template{Impact: "bad"}); code != 400 {
		t.Fatalf("bad template: %d", code)
	}
	if code, _ := apiCall(t, "PUT", b.srv.URL+"/api/v1/incident-templates/deletion", "operator-secret", status.Template{Title: status.Text{En: "Deletion"}, Impact: status.ImpactMajor}); code != 200 {
		t.Fatalf("put template: %d", code)
	}
	if code, l := apiCall(t, "GET", b.srv.URL+"/api/v1/incident-templates", "viewer-secret", nil); code != 200 || len(l["templates"].([]any)) != 1 {
		t.Fatalf("templates: %d %v", code, l)
	}
}

func TestConsoleFormCSRF(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values, hdr ...string) *http.Response {
		req, _ := http.NewRequest("POST", b.srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	if r := get(t, b.srv.URL+"/console/incidents"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/console/incidents/login" {
		t.Fatalf("unauthenticated console: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if r := post("/console/incidents/login", url.Values{"token": {"wrong"}}); r.StatusCode != 401 {
		t.Fatalf("bad token sign-in: %d", r.StatusCode)
	}
	r := post("/console/incidents/login", url.Values{"token": {"operator-secret"}})
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 || !r.Cookies()[0].HttpOnly || r.Cookies()[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in: %d %v", r.StatusCode, r.Cookies())
	}
	cookie := consoleCookie + "=" + r.Cookies()[0].Value

	page := string(readAll(t, get(t, b.srv.URL+"/console/incidents", "Cookie", cookie)))
	csrf := csrfToken("operator-secret")
	if !strings.Contains(page, `name="csrf" value="`+csrf+`"`) {
		t.Fatalf("console page has no CSRF token:\n%s", page)
	}

	form := url.Values{"name": {"Sites deleted"}, "impact": {"major"}, "status": {"investigating"}, "components": {"tracker=major_outage"},
		"situation": {"A script deleted sites."}, "affected_groups": {"product tracker 883"}, "timeline": {"Hours."}, "timeline_confidence": {"low"},
		"fuller_picture_at": {"2026-04-05T15:00"}, "data_loss": {"None expected."}, "data_loss_confidence": {"medium"},
		"support": {"Open a ticket."}, "support_no_login": {"Call us."}, "known": {"Which sites."}, "unknown": {"Why."}}

	// No token, a wrong token, or a cross-site origin: refused, nothing written.
	if r := post("/console/incidents", form, "Cookie", cookie); r.StatusCode != 403 {
		t.Fatalf("post without CSRF token: %d", r.StatusCode)
	}
	form.Set("csrf", csrfToken("someone-else"))
	if r := post("/console/incidents", form, "Cookie", cookie); r.StatusCode != 403 {
		t.Fatalf("post with a wrong CSRF token: %d", r.StatusCode)
	}
	form.Set("csrf", csrf)
	if r := post("/console/incidents", form, "Cookie", cookie, "Origin", "https://evil.example"); r.StatusCode != 403 {
		t.Fatalf("cross-origin post: %d", r.StatusCode)
	}
	if list, _ := b.svc.Incidents(b.ctx); len(list) != 0 {
		t.Fatalf("refused posts wrote %d incidents", len(list))
	}

	// A required field left empty: the form comes back naming it, values kept.
	form.Del("support_no_login")
	r = post("/console/incidents", form, "Cookie", cookie)
	body := string(readAll(t, r))
	if r.StatusCode != 422 || !strings.Contains(body, "support_no_login") || !strings.Contains(body, "A script deleted sites.") {
		t.Fatalf("refused form: %d\n%s", r.StatusCode, body)
	}
	form.Set("support_no_login", "Call us.")
	if r := post("/console/incidents", form, "Cookie", cookie); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("valid post: %d %s", r.StatusCode, readAll(t, r))
	}
	list, _ := b.svc.Incidents(b.ctx)
	if len(list) != 1 || list[0].Updates[0].Author != "otto" || list[0].Updates[0].Body.AffectedGroups[0].Count != 883 ||
		!list[0].Updates[0].Body.FullerPictureAt.Equal(time.Date(2026, 4, 5, 15, 0, 0, 0, time.UTC)) {
		t.Fatalf("incident from the form = %+v", list)
	}

	// Resolve from the form.
	r = post("/console/incidents/"+list[0].ID, url.Values{"csrf": {csrf}, "action": {"resolve"}, "carry_over": {"1"}, "situation": {"Done."}}, "Cookie", cookie)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("resolve: %d %s", r.StatusCode, readAll(t, r))
	}
	if inc, _ := b.svc.Incident(b.ctx, list[0].ID); inc.Status != status.Resolved {
		t.Fatalf("status after resolve = %s", inc.Status)
	}

	// A viewer sees the console but cannot post.
	vc := consoleCookie + "=viewer-secret"
	if r := get(t, b.srv.URL+"/console/incidents", "Cookie", vc); r.StatusCode != 200 {
		t.Fatalf("viewer console: %d", r.StatusCode)
	}
	form.Set("csrf", csrfToken("viewer-secret"))
	if r := post("/console/incidents", form, "Cookie", vc); r.StatusCode != 403 {
		t.Fatalf("viewer post: %d", r.StatusCode)
	}
}

// TestStoppedSubscribersAreShown: a subscriber delivery disabled (a
// mailbox that refused for good) is listed with why by the API, to
// operators, and on the console (with its address to operators only); one
// who unsubscribed is not.
func TestStoppedSubscribersAreShown(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	var ids []string
	for _, addr := range []string{"gone@example.org", "left@example.org"} {
		p, err := b.svc.Subscribe(b.ctx, status.SubscribeRequest{Channel: status.ChannelEmail, Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := b.svc.Confirm(b.ctx, p.Token)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.ID)
	}
	const reason = "mailbox refused for good: 550 5.1.1 no such user"
	if _, err := b.svc.DisableSubscriber(b.ctx, ids[0], reason); err != nil {
		t.Fatal(err)
	}
	tok, err := b.svc.UnsubscribeToken(b.ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Unsubscribe(b.ctx, tok); err != nil {
		t.Fatal(err)
	}
	api := b.srv.URL + "/api/v1/subscribers/stopped"
	if code, _ := apiCall(t, "GET", api, "viewer-secret", nil); code != 403 {
		t.Fatalf("a viewer read subscribers' addresses: %d", code)
	}
	code, list := apiCall(t, "GET", api, "operator-secret", nil)
	if code != 200 || len(list["subscribers"].([]any)) != 1 || at(list, "subscribers", 0, "address") != "gone@example.org" ||
		at(list, "subscribers", 0, "disabled_reason") != reason {
		t.Fatalf("stopped subscribers: %d %v", code, list)
	}
	page := string(readAll(t, get(t, b.srv.URL+"/console/incidents", "Cookie", consoleCookie+"=operator-secret")))
	if !strings.Contains(page, "gone@example.org: "+reason) || strings.Contains(page, "left@example.org") {
		t.Fatalf("the operator's console does not show the stopped subscriber alone:\n%s", page)
	}
	page = string(readAll(t, get(t, b.srv.URL+"/console/incidents", "Cookie", consoleCookie+"=viewer-secret")))
	if !strings.Contains(page, "kept failing: 1.") || strings.Contains(page, "gone@example.org") {
		t.Fatalf("the viewer's console:\n%s", page)
	}
}

// knownTenants is a registry that knows tenants 1 to 9.
type knownTenants struct{}

func (knownTenants) UnknownTenants(_ context.Context, keys []string) ([]string, error) {
	var out []string
	for _, k := range keys {
		if len(k) != 1 || k < "1" || k > "9" {
			out = append(out, k)
		}
	}
	return out, nil
}

// TestConsoleRefusesUnknownTenants: the form's affected tenants are
// looked up; unknown keys come back named with the form kept, and the
// checkbox accepts them.
func TestConsoleRefusesUnknownTenants(t *testing.T) {
	t.Parallel()
	b := setupStatus(t, func(c *status.Config) { c.Registry = knownTenants{} })
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cookie := consoleCookie + "=operator-secret"
	form := url.Values{"csrf": {csrfToken("operator-secret")}, "name": {"Sites deleted"}, "impact": {"minor"}, "status": {"investigating"},
		"situation": {"A script deleted sites."}, "support": {"Open a ticket."}, "known": {"Which sites."}, "unknown": {"Why."},
		"tenants": {"4, 4711\n815"}}
	post := func() (int, string) {
		req, _ := http.NewRequest("POST", b.srv.URL+"/console/incidents", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", cookie)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, string(readAll(t, resp))
	}
	code, body := post()
	if code != 422 || !strings.Contains(body, `&#34;4711&#34;, &#34;815&#34;`) || !strings.Contains(body, "4, 4711\n815") {
		t.Fatalf("unknown tenants posted: %d\n%s", code, body)
	}
	if list, _ := b.svc.Incidents(b.ctx); len(list) != 0 {
		t.Fatalf("a refused post wrote %d incidents", len(list))
	}
	form.Set("allow_unknown_tenants", "1")
	if code, body := post(); code != http.StatusSeeOther {
		t.Fatalf("accepting unknown tenants: %d\n%s", code, body)
	}
	if list, _ := b.svc.Incidents(b.ctx); len(list) != 1 || list[0].Tenants != 3 {
		t.Fatalf("incidents after the accepted post: %+v", list)
	}
}
