package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lifeline/internal/browsertest"
)

// TestConsoleFormNamesAffectedTenants opens an incident from the operator
// console in headless Chromium against a real serve: bad tenant keys are
// refused, each one named, with the form kept; the corrected form opens
// the incident, and the console shows each tenant's private notice queued
// by serve's delivery (contacts from the vault, mail to mailpit).
func TestConsoleFormNamesAffectedTenants(t *testing.T) {
	t.Parallel()
	c, _ := mailedSaaS(t, 6)
	token := strings.TrimSpace(c.must("tokens", "create", "--role", "operator", "--name", "otto"))
	base := startServe(t, c)

	br := browsertest.New(t, 90*time.Second)
	ctx, do, text := br.Ctx, br.Do, br.Text
	do(chromedp.Navigate(base+"/console/incidents/login"), chromedp.SetValue(chromedp.CSS(`input[name=token]`), token),
		chromedp.Submit(chromedp.CSS(`input[name=token]`)), chromedp.WaitVisible(chromedp.CSS("#new-incident")))

	field := func(name, value string) chromedp.Action[chromedp.Void] {
		return chromedp.SetValue(chromedp.CSS(`#new-incident [name=`+name+`]`), value)
	}
	fill := []chromedp.Action[chromedp.Void]{field("name", "Sites deleted"), field("impact", "major"), field("situation", "A script deleted sites."),
		field("affected_groups", "product tracker 2"), field("timeline", "Within the day"), field("timeline_confidence", "low"),
		field("fuller_picture_at", "2026-04-05T15:00"), field("data_loss", "None expected"), field("data_loss_confidence", "medium"),
		field("support", "Reply to this mail"), field("support_no_login", "Call +1 555 0100"), field("known", "Which sites"), field("unknown", "Why"),
		field("tenants", "2, site:3\nproduct:4/tracker\n5/x")}
	do(append(fill, chromedp.Submit(chromedp.CSS(`#new-incident [name=name]`)), chromedp.WaitVisible(chromedp.CSS("#form-error")))...)
	if msg := text("#form-error"); !strings.Contains(msg, `"product:4/tracker"`) || !strings.Contains(msg, `"5/x"`) || strings.Contains(msg, `"2"`) {
		t.Fatalf("refused form says %q; want it to name product:4/tracker and 5/x, and only those", msg)
	}
	kept, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(`#new-incident [name=tenants]`)))
	if err != nil || !strings.Contains(kept, "site:3") || !strings.Contains(text("#open-incidents"), "No open incidents.") {
		t.Fatalf("after the refusal: tenants field %q (%v), open incidents %q", kept, err, text("#open-incidents"))
	}

	do(field("tenants", "2\nsite:3"), chromedp.Submit(chromedp.CSS(`#new-incident [name=name]`)), chromedp.WaitVisible(chromedp.CSS(".notices")))
	// serve's drainer queues each tenant's notice to its contacts within
	// seconds; the console shows it on the next load.
	var notices string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if notices = text(".notices"); strings.Contains(notices, "2 queued") {
			break
		}
		do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(".notices")))
	}
	if !strings.Contains(notices, "2 affected tenants") || !strings.Contains(notices, "2 queued") || strings.Contains(notices, "pending") {
		t.Fatalf("console says %q; want 2 affected tenants, both notices queued", notices)
	}
}
