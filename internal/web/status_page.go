package web

import (
	"bytes"
	"embed"
	"encoding/xml"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/status"
)

//go:embed status_assets
var statusAssets embed.FS

// ui holds the page's own words, per language. Update text comes from the
// operators in either language; these are the headings around it. Status
// names are the domain's (status.Label), shared with the notices.
var ui = map[status.Lang]map[string]string{
	status.English: {
		"status": "Status", "language": "Language", "asof": "As of", "active": "Active incidents", "maintenance": "Scheduled maintenance",
		"components": "Components", "uptime90": "Uptime over the past 90 days, computed from incident history.", "uptime": "uptime",
		"daysago": "90 days ago", "today": "Today", "past": "Past incidents", "nopast": "No incidents in the past 90 days.",
		"feed": "Incident feed (Atom)", "api": "JSON API", "subscribe": "Subscribe to updates", "restored": "Sites restored", "affected": "Affected",
		"progress": "%s%% of %d affected sites restored and verified (%d so far), as of %s.",
		"window":   "Scheduled for %s – %s", "nodata": "No data", "down": "%s of outage",
	},
	status.Chinese: {
		"status": "服务状态", "language": "语言", "asof": "更新于", "active": "正在处理的事件", "maintenance": "计划维护",
		"components": "服务组件", "uptime90": "过去 90 天的可用率，根据事件记录计算。", "uptime": "可用率",
		"daysago": "90 天前", "today": "今天", "past": "历史事件", "nopast": "过去 90 天内没有事件。",
		"feed": "事件订阅 (Atom)", "api": "JSON 接口", "subscribe": "订阅更新", "restored": "已恢复站点", "affected": "受影响",
		"progress": "%d 个受影响站点中已恢复并验证 %s%%（目前 %d 个），截至 %s。",
		"window":   "计划时间 %s – %s", "nodata": "无数据", "down": "中断 %s",
	},
}

func word(lang status.Lang, key string) string {
	if s, ok := ui[lang][key]; ok {
		return s
	}
	if s, ok := ui[status.English][key]; ok {
		return s
	}
	return status.Label(lang, key)
}

var pageTemplates = map[status.Lang]*template.Template{}

func init() {
	for _, lang := range []status.Lang{status.English, status.Chinese} {
		funcs := template.FuncMap{"t": func(k string) string { return word(lang, k) }}
		pageTemplates[lang] = template.Must(template.New("page.html").Funcs(funcs).ParseFS(statusAssets, "status_assets/page.html"))
	}
}

// The view types below are what the template sees: strings already in the
// page's language, so the template holds no logic.
type pageView struct {
	Lang, Name, At           string
	Indicator, IndicatorText string
	Subscribe                bool // the subscription pages are served
	Active, Maint, Past      []incidentView
	Groups                   []groupView
}

type groupView struct {
	Name       string
	Components []componentView
}

type componentView struct {
	ID, Name, Description, Status, StatusText, Uptime string
	Days                                              []dayView
}

type dayView struct{ Worst, Title string }

type incidentView struct {
	ID, Name, Impact, StatusText, Window, Affected string
	Started, Resolved                              string
	HasProgress                                    bool
	PercentCSS, ProgressText                       string
	Updates                                        []updateView
}

type updateView struct {
	StatusText, At, ISO string
	Sections            []status.Section
}

func showTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func (p *StatusPage) pageView(snap *status.Snapshot, lang status.Lang) pageView {
	v := pageView{Lang: string(lang), Name: p.Name, At: showTime(snap.At), Indicator: string(snap.Indicator),
		IndicatorText: indicatorText[lang][snap.Indicator], Subscribe: p.Subscriptions != nil}
	for _, inc := range snap.Unresolved() {
		v.Active = append(v.Active, incidentViewOf(inc, lang))
	}
	for _, m := range append(snap.ActiveMaintenances(), snap.UpcomingMaintenances()...) {
		v.Maint = append(v.Maint, incidentViewOf(m, lang))
	}
	for _, inc := range snap.Incidents {
		if inc.Status.Closed() {
			v.Past = append(v.Past, incidentViewOf(inc, lang))
		}
	}
	comps := map[string][]componentView{}
	for _, c := range snap.Components {
		cv := componentView{ID: c.ID, Name: c.Name.In(lang), Description: c.Description.In(lang), Status: string(c.Status),
			StatusText: word(lang, string(c.Status)), Uptime: strconv.FormatFloat(c.Uptime.Percent, 'f', 2, 64)}
		for _, d := range c.Uptime.Days {
			if d.NoData {
				cv.Days = append(cv.Days, dayView{Worst: "nodata", Title: d.Date.Format("2006-01-02") + ": " + word(lang, "nodata")})
				continue
			}
			title := d.Date.Format("2006-01-02") + ": " + word(lang, string(d.Worst))
			if d.Down > 0 {
				title += ", " + fmt.Sprintf(word(lang, "down"), d.Down.Round(time.Minute))
			}
			cv.Days = append(cv.Days, dayView{Worst: string(d.Worst), Title: title})
		}
		comps[c.GroupID] = append(comps[c.GroupID], cv)
	}
	for _, g := range snap.Groups {
		if len(comps[g.ID]) > 0 {
			v.Groups = append(v.Groups, groupView{Name: g.Name.In(lang), Components: comps[g.ID]})
		}
	}
	if len(comps[""]) > 0 {
		v.Groups = append(v.Groups, groupView{Components: comps[""]})
	}
	return v
}

func incidentViewOf(inc status.Incident, lang status.Lang) incidentView {
	v := incidentView{ID: inc.ID, Name: inc.Name.In(lang), Impact: string(inc.Impact), StatusText: word(lang, string(inc.Status)),
		Started: showTime(inc.Created), Resolved: showTime(inc.Resolved)}
	if inc.Kind == status.KindMaintenance {
		v.Window = fmt.Sprintf(word(lang, "window"), showTime(inc.ScheduledFor), showTime(inc.ScheduledUntil))
		v.Started = showTime(inc.ScheduledFor)
	}
	var names []string
	for _, a := range inc.Affected {
		names = append(names, a.Name.In(lang)+" ("+word(lang, string(a.New))+")")
	}
	v.Affected = strings.Join(names, ", ")
	if pr := inc.Progress; pr != nil {
		pct := strconv.FormatFloat(pr.Percent(), 'f', -1, 64)
		v.HasProgress, v.PercentCSS = true, pct
		if lang == status.Chinese {
			v.ProgressText = fmt.Sprintf(word(lang, "progress"), pr.Sites, pct, pr.Verified, showTime(pr.AsOf))
		} else {
			v.ProgressText = fmt.Sprintf(word(lang, "progress"), pct, pr.Sites, pr.Verified, showTime(pr.AsOf))
		}
	}
	for _, u := range inc.Updates {
		v.Updates = append(v.Updates, updateView{StatusText: word(lang, string(u.Status)), At: showTime(u.Created),
			ISO: u.Created.UTC().Format(time.RFC3339), Sections: u.Body.Sections(lang)})
	}
	return v
}

// render turns a snapshot into every response the page serves.
func (p *StatusPage) render(snap *status.Snapshot) (*rendering, error) {
	r := &rendering{snap: snap, files: map[string]*asset{}}
	docs, err := p.v2(snap).files()
	if err != nil {
		return nil, err
	}
	for path, b := range docs {
		r.files[path] = newAsset(jsonType, v2CacheControl, b)
	}
	for lang, t := range pageTemplates {
		var buf bytes.Buffer
		if err := t.Execute(&buf, p.pageView(snap, lang)); err != nil {
			return nil, err
		}
		r.files["page:"+string(lang)] = newAsset(statusHTMLType, pageCacheControl, buf.Bytes())
		// The feed of every incident, and one per component: a reader can
		// follow only what they use, as email subscribers can.
		feeds := append([]status.ComponentState{{}}, snap.Components...)
		for _, c := range feeds {
			feed, err := p.feed(snap, lang, c.Component)
			if err != nil {
				return nil, err
			}
			r.files[feedKey(lang, c.ID)] = newAsset(atomType, pageCacheControl, feed)
		}
	}
	return r, nil
}

// feedKey names a rendered feed: every incident (component "") or one
// component's.
func feedKey(lang status.Lang, component string) string {
	if component == "" {
		return "feed:" + string(lang)
	}
	return "feed:" + string(lang) + ":" + component
}

// serveAsset serves the embedded stylesheets.
func (p *StatusPage) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name != "status.css" && name != "console.css" {
		http.NotFound(w, r)
		return
	}
	b, err := statusAssets.ReadFile("status_assets/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(b)
}

// Atom (RFC 4287): one entry per incident, its updates newest first.
type atomFeed struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	Lang    string      `xml:"xml:lang,attr"`
	ID      string      `xml:"id"`
	Title   string      `xml:"title"`
	Updated string      `xml:"updated"`
	Links   []atomLink  `xml:"link"`
	Author  atomAuthor  `xml:"author"`
	Entries []atomEntry `xml:"entry"`
}

type atomLink struct {
	Rel  string `xml:"rel,attr,omitempty"`
	Href string `xml:"href,attr"`
	Type string `xml:"type,attr,omitempty"`
}

type atomAuthor struct {
	Name string `xml:"name"`
}

type atomEntry struct {
	ID        string      `xml:"id"`
	Title     string      `xml:"title"`
	Published string      `xml:"published"`
	Updated   string      `xml:"updated"`
	Link      atomLink    `xml:"link"`
	Content   atomContent `xml:"content"`
}

type atomContent struct {
	Type string `xml:"type,attr"`
	Body string `xml:",chardata"`
}

// feed renders the Atom feed of every incident and maintenance, or with a
// component (c.ID set) of those that affect it.
func (p *StatusPage) feed(snap *status.Snapshot, lang status.Lang, c status.Component) ([]byte, error) {
	self, title := p.URL+"/history.atom", p.Name+" · "+word(lang, "status")
	if c.ID != "" {
		self, title = self+"?component="+c.ID, title+" · "+c.Name.In(lang)
	}
	f := atomFeed{Lang: string(lang), ID: self, Title: title,
		Updated: snap.At.UTC().Format(time.RFC3339), Author: atomAuthor{Name: p.Name},
		Links: []atomLink{{Rel: "self", Href: self, Type: atomType}, {Rel: "alternate", Href: p.URL + "/", Type: "text/html"}}}
	var all []status.Incident
	for _, inc := range append(append([]status.Incident{}, snap.Incidents...), snap.Maintenances...) {
		if c.ID == "" || slices.ContainsFunc(inc.Affected, func(a status.AffectedComponent) bool { return a.ComponentID == c.ID }) {
			all = append(all, inc)
		}
	}
	for _, inc := range all[:min(len(all), v2IncidentsLimit)] {
		var body strings.Builder
		for _, u := range inc.Updates {
			body.WriteString("<p><strong>" + template.HTMLEscapeString(word(lang, string(u.Status))) + "</strong> · " + showTime(u.Created) + "</p>")
			for _, s := range u.Body.Sections(lang) {
				body.WriteString("<p>")
				if s.Title != "" {
					body.WriteString("<b>" + template.HTMLEscapeString(s.Title) + ":</b> ")
				}
				body.WriteString(template.HTMLEscapeString(s.Text) + "</p>")
			}
		}
		f.Entries = append(f.Entries, atomEntry{ID: p.URL + "/#incident-" + inc.ID, Title: inc.Name.In(lang) + " (" + word(lang, string(inc.Status)) + ")",
			Published: inc.Created.UTC().Format(time.RFC3339), Updated: inc.Updated.UTC().Format(time.RFC3339),
			Link: atomLink{Rel: "alternate", Href: p.URL + "/#incident-" + inc.ID}, Content: atomContent{Type: "html", Body: body.String()}})
	}
	out, err := xml.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), out...), nil
}
