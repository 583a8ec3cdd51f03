package web

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"lifeline/internal/browsertest"
)

// TestStatusPageInBrowser loads the public page in headless Chromium with an
// active incident, switches the language on the page, checks the browser
// logged no errors, and saves a screenshot of each language to the test's
// artifact directory (go test -artifacts keeps them).
func TestStatusPageInBrowser(t *testing.T) {
	b := setupStatus(t)
	inc := b.openCritical(t)

	br := browsertest.New(t, 60*time.Second)
	ctx, do, text := br.Ctx, br.Do, br.Text

	// Collect every console message, exception and browser log entry of
	// warning level or worse while the page is used.
	cctx, stopConsole := context.WithCancel(ctx)
	messages := chromedp.Console(cctx)
	var problems []string
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
			}
		}
	}()

	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatalf("%s[%s]: %v", sel, name, err)
		}
		return v.Value
	}
	shot := func() []byte {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		return b
	}

	_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": "en-US,en;q=0.9"}})
	if err != nil {
		t.Fatalf("set Accept-Language: %v", err)
	}
	do(chromedp.Navigate(b.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#active-incidents")))
	lang, active, banner, enShot := attr("html", "lang"), text("#active-incidents"), text("#overall"), shot()

	// Switch language with the link on the page.
	do(chromedp.Click(chromedp.CSS("#lang-zh"), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS(`html[lang="zh-CN"]`)))
	zhActive, zhShot := text("#active-incidents"), shot()

	// The choice sticks over an English Accept-Language.
	do(chromedp.Navigate(b.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#overall")))
	afterReload := attr("html", "lang")

	stopConsole()
	<-collected

	if lang != "en" || !strings.Contains(active, "Sites deleted") || !strings.Contains(active, "A script deleted 883 sites.") ||
		!strings.Contains(banner, "Major System Outage") {
		t.Errorf("english page: lang %q, banner %q, incidents %q", lang, banner, active)
	}
	// Newest update first: Identified before Investigating.
	if i, j := strings.Index(active, "Identified"), strings.Index(active, "Investigating"); i < 0 || j < 0 || i > j {
		t.Errorf("updates not newest first in the rendered page: %q", active)
	}
	if !strings.Contains(zhActive, "站点被删除") || !strings.Contains(zhActive, "一个脚本删除了 883 个站点。") || !strings.Contains(zhActive, "已确定原因") {
		t.Errorf("chinese page: %q", zhActive)
	}
	if afterReload != "zh-CN" {
		t.Errorf("language after reload = %q, want zh-CN (the page's switch is remembered)", afterReload)
	}
	if len(problems) > 0 {
		t.Errorf("browser reported problems:\n%s", strings.Join(problems, "\n"))
	}

	dir := t.ArtifactDir()
	for name, shot := range map[string][]byte{"status-en.png": enShot, "status-zh-CN.png": zhShot} {
		if len(shot) < 1000 {
			t.Errorf("%s: screenshot of %d bytes", name, len(shot))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("incident %s rendered; screenshots in %s", inc.ID, dir)
}
