package web

import (
	"encoding/xml"
	"net/http"
	"strings"
	"testing"
)

// atomEntries reads a feed's entry titles.
func atomEntries(t *testing.T, u string) []string {
	t.Helper()
	resp := get(t, u)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/atom+xml") {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var f struct {
		Title   string `xml:"title"`
		Entries []struct {
			Title string `xml:"title"`
		} `xml:"entry"`
	}
	if err := xml.Unmarshal(readAll(t, resp), &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range f.Entries {
		out = append(out, e.Title)
	}
	return out
}

func TestComponentFeedsAndTheSubscribePageListsThem(t *testing.T) {
	t.Parallel()
	b := setupSubscribe(t, 10)
	b.openCritical(t) // affects tracker only
	_, comps, err := b.svc.Components(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, c := range comps {
		ids[c.Name.En] = c.ID
	}
	if all := atomEntries(t, b.url+"/history.atom"); len(all) != 1 {
		t.Fatalf("the whole feed: %v", all)
	}
	if tr := atomEntries(t, b.url+"/history.atom?component="+ids["tracker"]); len(tr) != 1 || !strings.HasPrefix(tr[0], "Sites deleted") {
		t.Fatalf("tracker's feed: %v", tr)
	}
	if wiki := atomEntries(t, b.url+"/history.atom?component="+ids["wiki"]+"&lang=zh-CN"); len(wiki) != 0 {
		t.Fatalf("wiki's feed lists %v; the incident does not affect it", wiki)
	}
	if r := get(t, b.url+"/history.atom?component=nosuchthing"); r.StatusCode != http.StatusNotFound {
		t.Fatalf("an unknown component's feed: %d", r.StatusCode)
	}

	_, _, form := fetch(t, browser(t), "GET", b.url+"/subscribe", nil, nil)
	if !strings.Contains(form, `id="feed-all"`) || !strings.Contains(form, `href="/history.atom?component=`+ids["wiki"]+`&amp;lang=en"`) {
		t.Fatalf("the subscribe page does not offer the feeds:\n%s", form)
	}
}
