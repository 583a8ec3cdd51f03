package web

import (
	"context"
	stdhtml "html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"lifeline/internal/status"
)

// restoreRecords stands in for the restore engine: restore:r1 restores
// site 42 in tracker and has yet to in wiki.
type restoreRecords struct{}

func (restoreRecords) AffectedTenants(context.Context, string) ([]string, error) {
	return []string{"42"}, nil
}

func (restoreRecords) TenantProgress(_ context.Context, links []string, tenant string) ([]status.TenantStep, error) {
	if tenant != "42" {
		return nil, nil
	}
	return []status.TenantStep{
		{Link: links[0], Product: "tracker", State: status.StepRestored, Finished: time.Date(2026, 4, 5, 10, 0, 0, 0, time.UTC)},
		{Link: links[0], Product: "wiki", State: status.StepWaiting},
	}, nil
}

// deletedEverywhere is a vault that remembers site 42 deleted in tracker
// and purged in wiki.
type deletedEverywhere struct{}

func (deletedEverywhere) TenantStates(context.Context, string) (map[string]string, time.Time, error) {
	return map[string]string{"tracker": "deleted", "wiki": "purged"}, time.Date(2026, 4, 5, 8, 0, 0, 0, time.UTC), nil
}

func TestTenantPageIsPrivateSignedAndExpires(t *testing.T) {
	t.Parallel()
	b := setupStatus(t, func(c *status.Config) {
		c.Targets, c.States, c.TenantLinkTTL = restoreRecords{}, deletedEverywhere{}, time.Hour
	})
	body := criticalBody()
	body.SupportNoLogin = status.Text{En: "Call +1 555 0100.", Zh: "请致电 +1 555 0100。"}
	inc, err := b.svc.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: "Sites deleted", Zh: "站点被删除"},
		Draft: status.Draft{Impact: status.ImpactCritical, Body: body, Links: []string{"restore:r1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if inc.Tenants != 1 {
		t.Fatalf("the restore's tenant was not recorded: %d tenants", inc.Tenants)
	}
	token, _, err := b.svc.TenantToken(b.ctx, inc.ID, "42")
	if err != nil {
		t.Fatal(err)
	}
	page := b.srv.URL + status.TenantPath + "?t=" + url.QueryEscape(token)

	// Pages are read unescaped: html/template writes '+' as &#43;.
	resp := get(t, page)
	html := stdhtml.UnescapeString(string(readAll(t, resp)))
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d\n%s", resp.StatusCode, html)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	for _, want := range []string{"Site 42", "deleted (data kept, can be restored)", "purged", "As last recorded, on 2026-04-05 08:00 UTC",
		"1 of 2 products restored and verified", "restored and verified against the backup", "waiting to be restored",
		"If you cannot sign in:</b> Call +1 555 0100.", "Sites deleted", "A script deleted 883 sites.", `href="/"`} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	resp = get(t, page+"&lang=zh-CN")
	html = stdhtml.UnescapeString(string(readAll(t, resp)))
	for _, want := range []string{"站点 42", "已删除（数据保留，可恢复）", "2 个产品中已恢复并验证 1 个", "请致电 +1 555 0100。", "站点被删除"} {
		if !strings.Contains(html, want) {
			t.Errorf("the Chinese page lacks %q", want)
		}
	}

	// Forged, damaged or missing links show nothing of the tenant.
	enc, _, _ := strings.Cut(token, ".")
	for name, bad := range map[string]string{"other mac": enc + ".AAAAAAAAAAAAAAAAAAAAAAAA", "truncated": token[:len(token)-2], "none": ""} {
		resp := get(t, b.srv.URL+status.TenantPath+"?t="+url.QueryEscape(bad))
		html := string(readAll(t, resp))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html, "not valid") || strings.Contains(html, "Site 42") || strings.Contains(html, "883") {
			t.Errorf("%s: %d\n%s", name, resp.StatusCode, html)
		}
	}

	// Expired: 410, and nothing of the tenant.
	b.clock.Add(time.Hour)
	resp = get(t, page)
	html = string(readAll(t, resp))
	if resp.StatusCode != http.StatusGone || !strings.Contains(html, "expired") || strings.Contains(html, "Site 42") {
		t.Fatalf("expired: %d\n%s", resp.StatusCode, html)
	}
}

func TestIncidentAPITakesTenants(t *testing.T) {
	t.Parallel()
	b := setupStatus(t)
	api := b.srv.URL + "/api/v1/incidents"
	open := status.Request{Name: "Sites deleted", Impact: status.ImpactCritical, Body: criticalBody(), Tenants: []string{"site:1", "2"}}
	bad := open
	bad.Tenants = []string{"app:1/tracker/insight"}
	if code, e := apiCall(t, "POST", api, "operator-secret", bad); code != http.StatusBadRequest || !strings.Contains(e["error"].(string), `not tenant keys: "app:1/tracker/insight"`) {
		t.Fatalf("an app target as a tenant: %d %v", code, e)
	}
	code, inc := apiCall(t, "POST", api, "operator-secret", open)
	if code != http.StatusCreated || inc["tenants"] != 2.0 {
		t.Fatalf("open: %d %v", code, inc)
	}
	id := inc["id"].(string)
	code, inc = apiCall(t, "POST", api+"/"+id+"/updates", "operator-secret", status.Request{CarryOver: true, Tenants: []string{"3"}})
	if code != http.StatusCreated || inc["tenants"] != 3.0 {
		t.Fatalf("update adding a tenant: %d %v", code, inc)
	}
	code, list := apiCall(t, "GET", api+"/"+id+"/tenants", "viewer-secret", nil)
	ts, _ := list["tenants"].([]any)
	if code != 200 || len(ts) != 3 || ts[0].(map[string]any)["tenant"] != "1" || ts[0].(map[string]any)["source"] != "list" {
		t.Fatalf("tenants: %d %v", code, list)
	}
	if code, _ := apiCall(t, "GET", api+"/nope/tenants", "viewer-secret", nil); code != http.StatusNotFound {
		t.Fatalf("an unknown incident's tenants: %d", code)
	}
	// The public JSON never shows them.
	if strings.Contains(string(readAll(t, get(t, b.srv.URL+"/api/v2/incidents.json"))), `"tenants"`) {
		t.Error("incidents.json mentions the tenants")
	}
}
