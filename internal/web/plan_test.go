package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/demo"
	"lifeline/internal/plan"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// setupPlans serves plans over a 20-site demo SaaS.
func setupPlans(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := demo.Generate(ctx, dir, demo.Options{Tenants: 20}); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(ctx, "sqlite:state.db", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts := &tenant.Service{Store: st, Retention: time.Hour, Owner: "web-test:1"}
	for _, name := range []string{"tracker", "wiki"} {
		db, err := productdb.Open(ctx, "sqlite:"+name+".db", dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		spec := productdb.Spec{Product: name, TenantColumn: "site_id", TenantsTable: "sites", Apps: map[string][]string{}}
		if name == "tracker" {
			spec.Apps["insight"] = []string{"insight_objects", "insight_links"}
		}
		l, err := tenant.Protect(ctx, st, db, spec, "tester")
		if err != nil {
			t.Fatal(err)
		}
		ts.Products = append(ts.Products, &tenant.Product{Name: name, DB: db, Layout: l})
	}
	svc, err := plan.OpenService(ctx, &plan.Service{Tenants: ts})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Auth: fakeAuth{
		"viewer-secret":   {Name: "vera", Role: state.RoleViewer},
		"operator-secret": {Name: "otto", Role: state.RoleOperator},
		"otto-approver":   {Name: "otto", Role: state.RoleApprover},
		"admin-secret":    {Name: "ada", Role: state.RoleAdmin},
	}, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Plans: &Plans{Service: svc}}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPlansAPI(t *testing.T) {
	t.Parallel()
	base := setupPlans(t)
	api := base + "/api/v1/plans"
	bad := map[string]any{"action": "delete", "kind": "app", "targets": []string{"1", "2"}, "reason": "remove insight"}
	if code, _ := apiCall(t, "POST", api, "viewer-secret", bad); code != http.StatusForbidden {
		t.Fatalf("create as viewer: %d", code)
	}
	code, res := apiCall(t, "POST", api, "operator-secret", bad)
	if code != http.StatusUnprocessableEntity || !strings.Contains(at(res, "error").(string), "`1` is a site, not an app: this plan would delete whole sites") ||
		at(res, "plan", "status") != "draft" || at(res, "plan", "report", "problems", 1, "kind") != "wrong_kind" {
		t.Fatalf("the April plan over the API: %d %v", code, res)
	}
	good := map[string]any{"action": "deactivate", "kind": "app", "targets": []string{"1/tracker/insight", "2/tracker/insight", "3/tracker/insight"},
		"reason": "remove insight", "waves": []string{"internal", "100%"}, "bake": "0s"}
	code, res = apiCall(t, "POST", api, "operator-secret", good)
	if code != http.StatusCreated || at(res, "status") != "validated" || at(res, "requester") != "otto" {
		t.Fatalf("create: %d %v", code, res)
	}
	id, hash := at(res, "id").(string), at(res, "report_hash").(string)
	if code, res := apiCall(t, "POST", api+"/"+id+"/approve", "otto-approver", map[string]any{"hash": hash}); code != http.StatusUnprocessableEntity ||
		!strings.Contains(at(res, "error").(string), "cannot also approve") {
		t.Fatalf("approval by the requester: %d %v", code, res)
	}
	if code, _ := apiCall(t, "POST", api+"/"+id+"/approve", "operator-secret", map[string]any{"hash": hash}); code != http.StatusForbidden {
		t.Fatalf("approval by an operator: %d", code)
	}
	if code, res := apiCall(t, "POST", api+"/"+id+"/approve", "admin-secret", map[string]any{"hash": hash}); code != http.StatusOK || at(res, "approval", "by") != "ada" {
		t.Fatalf("approval: %d %v", code, res)
	}
	if code, res := apiCall(t, "POST", base+"/api/v1/freeze", "operator-secret", map[string]any{"on": true, "reason": "INC-2"}); code != 200 || at(res, "on") != true {
		t.Fatalf("freeze: %d %v", code, res)
	}
	if code, _ := apiCall(t, "POST", api+"/"+id+"/run", "operator-secret", nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("run while frozen: %d", code)
	}
	if code, _ := apiCall(t, "POST", base+"/api/v1/freeze", "operator-secret", map[string]any{"on": false}); code != http.StatusForbidden {
		t.Fatalf("an operator lifting the freeze: %d", code)
	}
	if code, _ := apiCall(t, "POST", base+"/api/v1/freeze", "admin-secret", map[string]any{"on": false}); code != 200 {
		t.Fatalf("lifting the freeze: %d", code)
	}
	if code, res := apiCall(t, "POST", api+"/"+id+"/run", "operator-secret", nil); code != http.StatusAccepted {
		t.Fatalf("run: %d %v", code, res)
	}
	for i := 0; ; i++ {
		_, res = apiCall(t, "GET", api+"/"+id, "viewer-secret", nil)
		if at(res, "status") == "done" {
			break
		}
		if i == 500 {
			t.Fatalf("the plan did not finish: %v", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if at(res, "progress", "done") != 3.0 || at(res, "steps", 0, "status") != "done" || at(res, "gates", 0, "result") != "pass" {
		t.Fatalf("finished plan: %v", res)
	}
	if code, res := apiCall(t, "GET", api, "viewer-secret", nil); code != 200 || at(res, "plans", 0, "id") != id {
		t.Fatalf("list: %d %v", code, res)
	}
	if code, res := apiCall(t, "POST", api+"/"+id+"/rollback", "operator-secret", nil); code != 200 || at(res, "status") != "rolled_back" {
		t.Fatalf("rollback: %d %v", code, res)
	}
}
