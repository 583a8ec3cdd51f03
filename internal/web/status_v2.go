package web

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"lifeline/internal/status"
)

// The Statuspage v2 public API, which monitoring tools and aggregators read.
// Field names, nesting and enums follow it; what Lifeline adds sits under
// "lifeline" keys, which such clients ignore.
const (
	v2Summary        = "/api/v2/summary.json"
	v2Status         = "/api/v2/status.json"
	v2Components     = "/api/v2/components.json"
	v2Incidents      = "/api/v2/incidents.json"
	v2Unresolved     = "/api/v2/incidents/unresolved.json"
	v2Maintenances   = "/api/v2/scheduled-maintenances.json"
	v2UpcomingMaint  = "/api/v2/scheduled-maintenances/upcoming.json"
	v2ActiveMaint    = "/api/v2/scheduled-maintenances/active.json"
	v2IncidentsLimit = 50 // incidents.json and scheduled-maintenances.json list the 50 newest, as Statuspage does
	v2TimeLayout     = "2006-01-02T15:04:05.000Z07:00"
	v2CacheControl   = "public, max-age=10"
	jsonType         = "application/json; charset=utf-8"
	statusHTMLType   = "text/html; charset=utf-8"
	atomType         = "application/atom+xml; charset=utf-8"
	pageCacheControl = "public, max-age=10"
)

var v2Paths = []string{v2Summary, v2Status, v2Components, v2Incidents, v2Unresolved, v2Maintenances, v2UpcomingMaint, v2ActiveMaint}

type v2Page struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	URL      string `json:"url"`
	TimeZone string `json:"time_zone"`
	Updated  string `json:"updated_at"`
}

type v2Indicator struct {
	Indicator   string `json:"indicator"`
	Description string `json:"description"`
}

type v2Component struct {
	ID                 string     `json:"id"`
	Name               string     `json:"name"`
	Status             string     `json:"status"`
	Created            string     `json:"created_at"`
	Updated            string     `json:"updated_at"`
	Position           int        `json:"position"`
	Description        *string    `json:"description"`
	Showcase           bool       `json:"showcase"`
	StartDate          *string    `json:"start_date"`
	GroupID            *string    `json:"group_id"`
	PageID             string     `json:"page_id"`
	Group              bool       `json:"group"`
	OnlyShowIfDegraded bool       `json:"only_show_if_degraded"`
	Components         []string   `json:"components,omitempty"` // member ids, groups only
	Lifeline           *v2CompExt `json:"lifeline,omitempty"`
}

// v2CompExt is Lifeline's addition to a component: its Chinese name and its
// uptime over 90 days, one entry per day, oldest first.
type v2CompExt struct {
	NameZh string        `json:"name_zh,omitempty"`
	Uptime float64       `json:"uptime_90d"`
	Days   []v2UptimeDay `json:"uptime_days,omitempty"`
}

type v2UptimeDay struct {
	Date        string   `json:"date"`
	Worst       string   `json:"worst"`
	DownSeconds int64    `json:"down_seconds"`
	Incidents   []string `json:"incidents,omitempty"`
	NoData      bool     `json:"no_data,omitempty"`
}

type v2AffectedComponent struct {
	Code      string `json:"code"`
	Name      string `json:"name"`
	OldStatus string `json:"old_status"`
	NewStatus string `json:"new_status"`
}

type v2Update struct {
	ID                   string                `json:"id"`
	Status               string                `json:"status"`
	Body                 string                `json:"body"`
	IncidentID           string                `json:"incident_id"`
	Created              string                `json:"created_at"`
	Updated              string                `json:"updated_at"`
	DisplayAt            string                `json:"display_at"`
	AffectedComponents   []v2AffectedComponent `json:"affected_components"`
	DeliverNotifications bool                  `json:"deliver_notifications"`
	CustomTweet          *string               `json:"custom_tweet"`
	TweetID              *string               `json:"tweet_id"`
	Lifeline             v2UpdateExt           `json:"lifeline"`
}

// v2UpdateExt carries the structured template behind the plain body, and
// the body in Chinese.
type v2UpdateExt struct {
	BodyZh   string      `json:"body_zh"`
	Template status.Body `json:"template"`
	Author   string      `json:"author,omitempty"`
}

type v2Incident struct {
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	Status         string        `json:"status"`
	Created        string        `json:"created_at"`
	Updated        string        `json:"updated_at"`
	MonitoringAt   *string       `json:"monitoring_at"`
	ResolvedAt     *string       `json:"resolved_at"`
	Impact         string        `json:"impact"`
	Shortlink      string        `json:"shortlink"`
	StartedAt      string        `json:"started_at"`
	PageID         string        `json:"page_id"`
	ScheduledFor   *string       `json:"scheduled_for,omitempty"`
	ScheduledUntil *string       `json:"scheduled_until,omitempty"`
	Updates        []v2Update    `json:"incident_updates"`
	Components     []v2Component `json:"components"`
	Lifeline       v2IncidentExt `json:"lifeline"`
}

// v2IncidentExt: the Chinese title, live restore progress, the links that
// feed it, and whether the incident owes customers an update.
type v2IncidentExt struct {
	NameZh   string         `json:"name_zh,omitempty"`
	Progress *status.Counts `json:"progress,omitempty"`
	Percent  *float64       `json:"percent_restored,omitempty"`
	Links    []string       `json:"links,omitempty"`
	Overdue  bool           `json:"overdue"`
}

func v2Time(t time.Time) string { return t.UTC().Format(v2TimeLayout) }

func v2TimePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := v2Time(t)
	return &s
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// indicatorText is Statuspage's wording for each page indicator.
var indicatorText = map[status.Lang]map[status.Impact]string{
	status.English: {
		status.ImpactNone: "All Systems Operational", status.ImpactMinor: "Minor Service Outage",
		status.ImpactMajor: "Partial System Outage", status.ImpactCritical: "Major System Outage",
	},
	status.Chinese: {
		status.ImpactNone: "所有系统运行正常", status.ImpactMinor: "轻微服务中断",
		status.ImpactMajor: "部分系统中断", status.ImpactCritical: "重大系统中断",
	},
}

// v2Doc renders one snapshot into the v2 objects, shared by every endpoint.
type v2Doc struct {
	page       v2Page
	indicator  v2Indicator
	components []v2Component
	byID       map[string]v2Component
	incidents  []v2Incident // newest first
	unresolved []v2Incident
	maint      []v2Incident
	upcoming   []v2Incident
	active     []v2Incident
}

func (p *StatusPage) v2(snap *status.Snapshot) *v2Doc {
	if p.pageID == "" {
		sum := sha256.Sum256([]byte(p.Name + "\x00" + p.URL))
		p.pageID = hex.EncodeToString(sum[:6])
	}
	d := &v2Doc{
		page:      v2Page{ID: p.pageID, Name: p.Name, URL: p.URL, TimeZone: "Etc/UTC", Updated: v2Time(snap.At)},
		indicator: v2Indicator{Indicator: string(snap.Indicator), Description: indicatorText[status.English][snap.Indicator]},
		byID:      map[string]v2Component{},
	}
	members := map[string][]string{}
	for _, c := range snap.Components {
		v := v2Component{ID: c.ID, Name: c.Name.In(status.English), Status: string(c.Status), Created: v2Time(c.Created), Updated: v2Time(c.Updated),
			Position: c.Position, Description: strPtr(c.Description.In(status.English)), Showcase: true, StartDate: strPtr(c.Created.UTC().Format("2006-01-02")),
			GroupID: strPtr(c.GroupID), PageID: p.pageID,
			Lifeline: &v2CompExt{NameZh: c.Name.Zh, Uptime: c.Uptime.Percent}}
		for _, day := range c.Uptime.Days {
			v.Lifeline.Days = append(v.Lifeline.Days, v2UptimeDay{Date: day.Date.Format("2006-01-02"), Worst: string(day.Worst),
				DownSeconds: int64(day.Down / time.Second), Incidents: day.Incidents, NoData: day.NoData})
		}
		d.byID[c.ID] = v
		if c.GroupID != "" {
			members[c.GroupID] = append(members[c.GroupID], c.ID)
		}
	}
	// Groups are components with group: true, listed before their members.
	for _, g := range snap.Groups {
		worst := status.Operational
		for _, id := range members[g.ID] {
			if st := status.ComponentStatus(d.byID[id].Status); st.Rank() > worst.Rank() {
				worst = st
			}
		}
		d.components = append(d.components, v2Component{ID: g.ID, Name: g.Name.In(status.English), Status: string(worst),
			Created: v2Time(g.Created), Updated: v2Time(g.Updated), Position: g.Position, PageID: p.pageID, Group: true,
			Components: orEmptyStrings(members[g.ID]), Lifeline: &v2CompExt{NameZh: g.Name.Zh, Uptime: 100}})
		for _, id := range members[g.ID] {
			d.components = append(d.components, d.byID[id])
		}
	}
	for _, c := range snap.Components {
		if c.GroupID == "" {
			d.components = append(d.components, d.byID[c.ID])
		}
	}
	if d.components == nil {
		d.components = []v2Component{}
	}
	for _, inc := range snap.Incidents {
		v := p.v2Incident(d, inc)
		d.incidents = append(d.incidents, v)
		if !inc.Status.Closed() {
			d.unresolved = append(d.unresolved, v)
		}
	}
	for _, m := range snap.Maintenances {
		d.maint = append(d.maint, p.v2Incident(d, m))
	}
	for _, m := range snap.UpcomingMaintenances() {
		d.upcoming = append(d.upcoming, p.v2Incident(d, m))
	}
	for _, m := range snap.ActiveMaintenances() {
		d.active = append(d.active, p.v2Incident(d, m))
	}
	return d
}

func (p *StatusPage) v2Incident(d *v2Doc, inc status.Incident) v2Incident {
	v := v2Incident{ID: inc.ID, Name: inc.Name.In(status.English), Status: string(inc.Status), Created: v2Time(inc.Created), Updated: v2Time(inc.Updated),
		ResolvedAt: v2TimePtr(inc.Resolved), Impact: string(inc.Impact), Shortlink: p.URL + "/#incident-" + inc.ID, StartedAt: v2Time(inc.Created),
		PageID: p.pageID, Updates: []v2Update{}, Components: []v2Component{},
		Lifeline: v2IncidentExt{NameZh: inc.Name.Zh, Progress: inc.Progress, Links: inc.Links, Overdue: inc.Overdue}}
	if inc.Kind == status.KindMaintenance {
		v.ScheduledFor, v.ScheduledUntil = v2TimePtr(inc.ScheduledFor), v2TimePtr(inc.ScheduledUntil)
		v.StartedAt = v2Time(inc.ScheduledFor)
	}
	if inc.Progress != nil {
		pct := inc.Progress.Percent()
		v.Lifeline.Percent = &pct
	}
	names := map[string]string{}
	for _, a := range inc.Affected {
		names[a.ComponentID] = a.Name.In(status.English)
		if c, ok := d.byID[a.ComponentID]; ok {
			c.Lifeline = nil // the uptime history belongs to components.json
			v.Components = append(v.Components, c)
		}
	}
	// Each update's affected_components says old → new, replayed oldest first.
	prev := map[string]status.ComponentStatus{}
	updates := make([]v2Update, len(inc.Updates))
	for i := len(inc.Updates) - 1; i >= 0; i-- {
		u := inc.Updates[i]
		vu := v2Update{ID: u.ID, Status: string(u.Status), Body: u.Body.Plain(status.English), IncidentID: inc.ID,
			Created: v2Time(u.Created), Updated: v2Time(u.Created), DisplayAt: v2Time(u.Created), AffectedComponents: []v2AffectedComponent{},
			DeliverNotifications: true, Lifeline: v2UpdateExt{BodyZh: u.Body.Plain(status.Chinese), Template: u.Body, Author: u.Author}}
		for _, c := range u.Changes {
			old, ok := prev[c.ComponentID]
			if !ok {
				old = status.Operational
			}
			vu.AffectedComponents = append(vu.AffectedComponents, v2AffectedComponent{Code: c.ComponentID, Name: names[c.ComponentID], OldStatus: string(old), NewStatus: string(c.Status)})
			prev[c.ComponentID] = c.Status
		}
		if u.Status == status.Monitoring && v.MonitoringAt == nil {
			v.MonitoringAt = v2TimePtr(u.Created)
		}
		updates[i] = vu
	}
	v.Updates = updates
	return v
}

func orEmptyStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func limit(list []v2Incident, n int) []v2Incident {
	if list == nil {
		return []v2Incident{}
	}
	return list[:min(len(list), n)]
}

// files renders every v2 endpoint's body.
func (d *v2Doc) files() (map[string][]byte, error) {
	type doc = map[string]any
	docs := map[string]doc{
		v2Summary: {"page": d.page, "components": d.components, "incidents": limit(d.unresolved, len(d.unresolved)),
			"scheduled_maintenances": limit(append(append([]v2Incident{}, d.active...), d.upcoming...), v2IncidentsLimit), "status": d.indicator},
		v2Status:        {"page": d.page, "status": d.indicator},
		v2Components:    {"page": d.page, "components": d.components},
		v2Incidents:     {"page": d.page, "incidents": limit(d.incidents, v2IncidentsLimit)},
		v2Unresolved:    {"page": d.page, "incidents": limit(d.unresolved, len(d.unresolved))},
		v2Maintenances:  {"page": d.page, "scheduled_maintenances": limit(d.maint, v2IncidentsLimit)},
		v2UpcomingMaint: {"page": d.page, "scheduled_maintenances": limit(d.upcoming, len(d.upcoming))},
		v2ActiveMaint:   {"page": d.page, "scheduled_maintenances": limit(d.active, len(d.active))},
	}
	out := map[string][]byte{}
	for path, v := range docs {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[path] = b
	}
	return out, nil
}
