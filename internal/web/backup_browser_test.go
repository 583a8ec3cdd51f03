package web

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/browsertest"
	"lifeline/internal/capture/capturetest"
	"lifeline/internal/demo"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// TestBackupPageRefreshesLive serves the console's backup page over a real
// repository fed by a real shipper of a protected SQLite product, signs in
// with a viewer token, and watches the product turn red, with the reason,
// when the blob store goes down and green again when it is back, without
// reloading the page.
func TestBackupPageRefreshesLive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := demo.Generate(ctx, dir, demo.Options{Tenants: 5}); err != nil {
		t.Fatal(err)
	}
	_, store, src := capturetest.SQLite(t, dir, "sqlite:tracker.db", productdb.Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites"})
	files, err := blob.OpenFile(filepath.Join(dir, "backups"))
	if err != nil {
		t.Fatal(err)
	}
	faulty := blob.NewFaulty(files)
	repo, err := backup.OpenRepo(ctx, &backup.Repo{Blobs: faulty, State: store})
	if err != nil {
		t.Fatal(err)
	}
	ship := &backup.Shipper{Repo: repo, Product: "tracker", Source: src}
	if _, err := ship.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	secret, _, err := store.CreateToken(ctx, "vera", state.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Auth: store, Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Backups: &Backups{Repo: repo, Products: []string{"tracker"}, BacklogLimit: 1000}}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	// Without a session the JSON is not served, nor the API without a token.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]int{"/console/backups/status.json": http.StatusSeeOther, "/api/v1/backups": http.StatusUnauthorized} {
		resp, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without credentials: %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/backups", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var api backupsView
	err = json.NewDecoder(resp.Body).Decode(&api)
	resp.Body.Close()
	if err != nil || len(api.Products) != 1 || api.Products[0].Red || api.Products[0].Snapshots != 1 {
		t.Fatalf("GET /api/v1/backups: %+v, %v", api, err)
	}

	br := browsertest.New(t, 60*time.Second)
	// Script errors and exceptions on the page fail the test.
	cctx, stopConsole := context.WithCancel(br.Ctx)
	var logged []string
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		for m, err := range chromedp.Console(cctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				logged = append(logged, fmt.Sprintf("%s (%s)", m, m.URL))
			}
		}
	}()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(br.Ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	rowText := func() string { return br.Text("#product-tracker") }
	_, err = chromedp.Call(br.Ctx, network.SetCookie, network.SetCookieParams{Name: consoleCookie, Value: secret, URL: srv.URL + "/console/"})
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	run("open the page", chromedp.Navigate(srv.URL+"/console/backups"), chromedp.WaitVisible(chromedp.CSS("#product-tracker.green")))
	if green := rowText(); !strings.Contains(green, "OK") || !strings.Contains(green, "1 snapshots") {
		t.Errorf("green row: %q", green)
	}

	// The blob store goes down while the application writes.
	faulty.SetDown(true)
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "tracker.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec("UPDATE issues SET priority = priority + 1 WHERE site_id = 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := ship.Ship(ctx); err == nil {
		t.Fatal("shipping into a blob store that is down succeeded")
	}
	run("turn red", chromedp.WaitVisible(chromedp.CSS("#product-tracker.red")))
	red := rowText()
	if !strings.Contains(red, "RED") || !strings.Contains(red, "shipping fails since") || !strings.Contains(red, "store unavailable") || !strings.Contains(red, "\t24\t") {
		t.Errorf("red row does not say why: %q", red)
	}
	shot, err := chromedp.Run(br.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "backups-red.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}

	faulty.SetDown(false)
	if _, err := ship.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	run("turn green again", chromedp.WaitVisible(chromedp.CSS("#product-tracker.green")))
	if again := rowText(); strings.Contains(again, "fails") {
		t.Errorf("green again, yet: %q", again)
	}
	stopConsole()
	<-listened
	if len(logged) > 0 {
		t.Errorf("the page threw: %v", logged)
	}
}
