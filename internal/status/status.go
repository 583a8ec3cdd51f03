// Package status is the status page's domain: components and groups,
// incidents whose updates follow one template, scheduled maintenance, uptime
// from incident history, and the cadence check. The 2022 review found that
// customers heard too late, too narrowly and without numbers; the template
// and its per-impact required fields exist so that cannot happen by omission.
//
// It knows nothing of HTTP. The web package renders its Snapshot as the
// public page and as Statuspage v2 JSON.
package status

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// Impact is how bad an incident is. It decides which update fields are
// required and the page indicator.
type Impact string

const (
	ImpactNone     Impact = "none"
	ImpactMinor    Impact = "minor"
	ImpactMajor    Impact = "major"
	ImpactCritical Impact = "critical"
	// ImpactMaintenance is the impact of every scheduled maintenance, as in
	// Statuspage.
	ImpactMaintenance Impact = "maintenance"
)

// Impacts of incidents, in increasing order of severity.
var Impacts = []Impact{ImpactNone, ImpactMinor, ImpactMajor, ImpactCritical}

// Rank orders impacts; unknown impacts rank 0 like none.
func (i Impact) Rank() int { return max(slices.Index(Impacts, i), 0) }

// ParseImpact accepts one of Impacts.
func ParseImpact(s string) (Impact, error) { return oneOf(Impacts, s, "impact") }

// oneOf accepts s when it is one of allowed, and otherwise refuses it with
// what it is (for the message) and the allowed values (for the hint).
func oneOf[T ~string](allowed []T, s, what string) (T, error) {
	if slices.Contains(allowed, T(s)) {
		return T(s), nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return "", fault.New(fault.Invalid, "use one of: "+strings.Join(names, ", "), "unknown %s %q", what, s)
}

// ComponentStatus is a component's state, with Statuspage's names.
type ComponentStatus string

const (
	Operational         ComponentStatus = "operational"
	UnderMaintenance    ComponentStatus = "under_maintenance"
	DegradedPerformance ComponentStatus = "degraded_performance"
	PartialOutage       ComponentStatus = "partial_outage"
	MajorOutage         ComponentStatus = "major_outage"
)

// ComponentStatuses in increasing order of severity; the page shows the worst.
var ComponentStatuses = []ComponentStatus{Operational, UnderMaintenance, DegradedPerformance, PartialOutage, MajorOutage}

// Rank orders component statuses by severity.
func (c ComponentStatus) Rank() int { return max(slices.Index(ComponentStatuses, c), 0) }

// ParseComponentStatus accepts one of ComponentStatuses.
func ParseComponentStatus(s string) (ComponentStatus, error) {
	if slices.Contains(ComponentStatuses, ComponentStatus(s)) {
		return ComponentStatus(s), nil
	}
	return "", fault.New(fault.Invalid, "use one of: operational, degraded_performance, partial_outage, major_outage, under_maintenance", "unknown component status %q", s)
}

// IncidentStatus is where an incident or a maintenance is. Incidents use the
// first five, maintenances the last four, as in Statuspage.
type IncidentStatus string

const (
	Investigating IncidentStatus = "investigating"
	Identified    IncidentStatus = "identified"
	Monitoring    IncidentStatus = "monitoring"
	Resolved      IncidentStatus = "resolved"
	Postmortem    IncidentStatus = "postmortem"

	Scheduled  IncidentStatus = "scheduled"
	InProgress IncidentStatus = "in_progress"
	Verifying  IncidentStatus = "verifying"
	Completed  IncidentStatus = "completed"
)

var (
	incidentStatuses    = []IncidentStatus{Investigating, Identified, Monitoring, Resolved, Postmortem}
	maintenanceStatuses = []IncidentStatus{Scheduled, InProgress, Verifying, Completed}
)

// Closed reports whether the incident or maintenance is over.
func (s IncidentStatus) Closed() bool {
	return s == Resolved || s == Postmortem || s == Completed
}

// Kind separates incidents from scheduled maintenances; they share storage
// and the update template.
type Kind string

const (
	KindIncident    Kind = "incident"
	KindMaintenance Kind = "maintenance"
)

func parseStatus(k Kind, s string) (IncidentStatus, error) {
	allowed := incidentStatuses
	if k == KindMaintenance {
		allowed = maintenanceStatuses
	}
	return oneOf(allowed, s, string(k)+" status")
}

// Confidence qualifies every estimate in an update.
type Confidence string

const (
	Low    Confidence = "low"
	Medium Confidence = "medium"
	High   Confidence = "high"
)

func parseConfidence(field Field, c Confidence) error {
	switch c {
	case "", Low, Medium, High:
		return nil
	}
	return fault.New(fault.Invalid, "use low, medium or high", "%s: unknown confidence %q", field, c)
}

// Text is a piece of update text in English and Simplified Chinese. Either
// may be empty; readers fall back to the other.
type Text struct {
	En string `json:"en,omitempty"`
	Zh string `json:"zh,omitempty"`
}

// Lang is a language the page speaks.
type Lang string

const (
	English Lang = "en"
	Chinese Lang = "zh-CN"
)

// In returns the text in lang, or in the other language if lang's is empty.
func (t Text) In(lang Lang) string {
	if lang == Chinese && t.Zh != "" {
		return t.Zh
	}
	if t.En != "" {
		return t.En
	}
	return t.Zh
}

// Empty reports whether neither language has text.
func (t Text) Empty() bool { return strings.TrimSpace(t.En) == "" && strings.TrimSpace(t.Zh) == "" }

// Over returns o if it has text in any language, else t. A new statement
// replaces the old one in both languages, so a carried-over Chinese text
// never contradicts a fresh English one.
func (t Text) Over(o Text) Text {
	if o.Empty() {
		return t
	}
	return o
}

// Group gathers components on the page (products, regions).
type Group struct {
	ID       string    `json:"id"`
	Name     Text      `json:"name"`
	Position int       `json:"position"`
	Created  time.Time `json:"created_at"`
	Updated  time.Time `json:"updated_at"`
}

// Component is one thing whose status customers follow: a product, a region.
// Its status is not stored: it is derived from open incidents and
// maintenances, so it can never disagree with them.
type Component struct {
	ID          string    `json:"id"`
	Name        Text      `json:"name"`
	Description Text      `json:"description"`
	GroupID     string    `json:"group_id,omitempty"`
	Position    int       `json:"position"`
	Created     time.Time `json:"created_at"`
	Updated     time.Time `json:"updated_at"`
}

// AffectedGroup is one population hit by an incident, with a count, for
// example {Kind: "product", Name: "tracker", Count: 883}.
type AffectedGroup struct {
	Kind  string `json:"kind"` // product, region, cohort, app…
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// Body is the 8-part update template. Every update carries one; which
// parts must be filled depends on the impact (see Policy).
type Body struct {
	// 1. The situation: what happened and what is being done.
	Situation Text `json:"situation"`
	// 2. Who is affected: products, regions, cohorts, with counts.
	AffectedGroups []AffectedGroup `json:"affected_groups,omitempty"`
	// 3. The recovery timeline: a directional estimate, and when a fuller
	// picture is expected.
	Timeline           Text       `json:"timeline"`
	TimelineConfidence Confidence `json:"timeline_confidence,omitempty"`
	FullerPictureAt    time.Time  `json:"fuller_picture_at,omitzero"`
	// 4. The share of affected sites restored, 0–100. Nil means not stated.
	PercentRestored   *float64   `json:"percent_restored,omitempty"`
	PercentConfidence Confidence `json:"percent_confidence,omitempty"`
	// PercentSource is "verified_restores" when filled from a Progress source,
	// "manual" when typed by a person.
	PercentSource string `json:"percent_source,omitempty"`
	// 5. The data-loss estimate.
	DataLoss           Text       `json:"data_loss"`
	DataLossConfidence Confidence `json:"data_loss_confidence,omitempty"`
	// 7. How to reach support, and a route for those who cannot sign in.
	Support        Text `json:"support"`
	SupportNoLogin Text `json:"support_no_login"`
	// 8. What is known and what is not known yet.
	Known   Text `json:"known"`
	Unknown Text `json:"unknown"`
}

// Over returns b with every part that o fills replaced by o's. It layers a
// draft over a stored template.
func (b Body) Over(o Body) Body {
	b.Situation = b.Situation.Over(o.Situation)
	if len(o.AffectedGroups) > 0 {
		b.AffectedGroups = o.AffectedGroups
	}
	b.Timeline = b.Timeline.Over(o.Timeline)
	if o.TimelineConfidence != "" {
		b.TimelineConfidence = o.TimelineConfidence
	}
	if !o.FullerPictureAt.IsZero() {
		b.FullerPictureAt = o.FullerPictureAt
	}
	if o.PercentRestored != nil {
		b.PercentRestored, b.PercentSource = o.PercentRestored, o.PercentSource
	}
	if o.PercentConfidence != "" {
		b.PercentConfidence = o.PercentConfidence
	}
	b.DataLoss = b.DataLoss.Over(o.DataLoss)
	if o.DataLossConfidence != "" {
		b.DataLossConfidence = o.DataLossConfidence
	}
	b.Support = b.Support.Over(o.Support)
	b.SupportNoLogin = b.SupportNoLogin.Over(o.SupportNoLogin)
	b.Known = b.Known.Over(o.Known)
	b.Unknown = b.Unknown.Over(o.Unknown)
	return b
}

// Field names one part of the template. The names are the JSON keys, so an
// error message names the field the way the API and the CLI spell it.
type Field string

const (
	FieldSituation          Field = "situation"
	FieldAffectedGroups     Field = "affected_groups"
	FieldTimeline           Field = "timeline"
	FieldTimelineConfidence Field = "timeline_confidence"
	FieldFullerPictureAt    Field = "fuller_picture_at"
	FieldPercentRestored    Field = "percent_restored"
	FieldPercentConfidence  Field = "percent_confidence"
	FieldDataLoss           Field = "data_loss"
	FieldDataLossConfidence Field = "data_loss_confidence"
	FieldSupport            Field = "support"
	FieldSupportNoLogin     Field = "support_no_login"
	FieldKnown              Field = "known"
	FieldUnknown            Field = "unknown"
)

// empty reports whether field f of b is unfilled.
func (b Body) empty(f Field) bool {
	switch f {
	case FieldSituation:
		return b.Situation.Empty()
	case FieldAffectedGroups:
		return len(b.AffectedGroups) == 0
	case FieldTimeline:
		return b.Timeline.Empty()
	case FieldTimelineConfidence:
		return b.TimelineConfidence == ""
	case FieldFullerPictureAt:
		return b.FullerPictureAt.IsZero()
	case FieldPercentRestored:
		return b.PercentRestored == nil
	case FieldPercentConfidence:
		return b.PercentConfidence == ""
	case FieldDataLoss:
		return b.DataLoss.Empty()
	case FieldDataLossConfidence:
		return b.DataLossConfidence == ""
	case FieldSupport:
		return b.Support.Empty()
	case FieldSupportNoLogin:
		return b.SupportNoLogin.Empty()
	case FieldKnown:
		return b.Known.Empty()
	case FieldUnknown:
		return b.Unknown.Empty()
	}
	return true
}

// Policy says which template fields an update must fill, per impact.
type Policy map[Impact][]Field

// DefaultPolicy asks more as the impact grows. A critical incident (the
// 883-sites kind) must state every part of the template, numbers included.
func DefaultPolicy() Policy {
	minor := []Field{FieldSituation, FieldSupport, FieldKnown, FieldUnknown}
	major := append(slices.Clone(minor), FieldAffectedGroups, FieldTimeline, FieldFullerPictureAt,
		FieldDataLoss, FieldSupportNoLogin)
	critical := append(slices.Clone(major), FieldPercentRestored)
	return Policy{
		ImpactNone:        {FieldSituation},
		ImpactMinor:       minor,
		ImpactMajor:       major,
		ImpactCritical:    critical,
		ImpactMaintenance: {FieldSituation},
	}
}

// MissingFieldsError is why publishing refused an update: the named fields
// are required at this impact and empty.
type MissingFieldsError struct {
	Impact Impact
	Fields []Field
}

func (e *MissingFieldsError) Error() string {
	names := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		names[i] = string(f)
	}
	return fmt.Sprintf("%s required for a %s-impact incident and empty", strings.Join(names, ", "), e.Impact)
}

// Check returns an error naming every field the policy requires at impact
// that b leaves empty, and every estimate given without its confidence.
// Once an incident is resolved the timeline no longer needs an estimate.
func (p Policy) Check(impact Impact, st IncidentStatus, b Body) error {
	var missing []Field
	for _, f := range p[impact] {
		if st.Closed() && (f == FieldTimeline || f == FieldFullerPictureAt) {
			continue
		}
		if b.empty(f) {
			missing = append(missing, f)
		}
	}
	// An estimate without a confidence level is half a number.
	for _, pair := range [][2]Field{
		{FieldTimeline, FieldTimelineConfidence},
		{FieldPercentRestored, FieldPercentConfidence},
		{FieldDataLoss, FieldDataLossConfidence},
	} {
		if !b.empty(pair[0]) && b.empty(pair[1]) && !slices.Contains(missing, pair[1]) {
			missing = append(missing, pair[1])
		}
	}
	if len(missing) > 0 {
		e := &MissingFieldsError{Impact: impact, Fields: missing}
		return &fault.Error{Code: fault.Refused, Msg: "update not published", Err: e,
			Hint: "fill in " + string(missing[0]) + " (and any other field named), or start from a stored template"}
	}
	return validBody(b)
}

// validBody checks values, independent of the policy.
func validBody(b Body) error {
	for _, c := range []struct {
		f Field
		c Confidence
	}{{FieldTimelineConfidence, b.TimelineConfidence}, {FieldPercentConfidence, b.PercentConfidence}, {FieldDataLossConfidence, b.DataLossConfidence}} {
		if err := parseConfidence(c.f, c.c); err != nil {
			return err
		}
	}
	if p := b.PercentRestored; p != nil && (*p < 0 || *p > 100) {
		return fault.New(fault.Invalid, "give a percentage between 0 and 100", "percent_restored %v is out of range", *p)
	}
	for _, g := range b.AffectedGroups {
		if g.Name == "" || g.Count < 0 {
			return fault.New(fault.Invalid, "each affected group needs a name and a count of 0 or more", "bad affected group %+v", g)
		}
	}
	return nil
}

// ComponentChange sets one component's status as part of an update.
type ComponentChange struct {
	ComponentID string          `json:"component_id"`
	Status      ComponentStatus `json:"status"`
}

// AffectedComponent is a component an incident touches, with the status the
// incident currently gives it and the one before.
type AffectedComponent struct {
	ComponentID string          `json:"component_id"`
	Name        Text            `json:"name"`
	Old         ComponentStatus `json:"old_status"`
	New         ComponentStatus `json:"new_status"`
}

// Update is one published incident update.
type Update struct {
	ID         string            `json:"id"`
	IncidentID string            `json:"incident_id"`
	Status     IncidentStatus    `json:"status"`
	Body       Body              `json:"body"`
	Changes    []ComponentChange `json:"affected_components,omitempty"`
	Author     string            `json:"author"`
	Created    time.Time         `json:"created_at"`
}

// Incident is an incident or a scheduled maintenance, with its updates
// newest first.
type Incident struct {
	ID       string         `json:"id"`
	Kind     Kind           `json:"kind"`
	Name     Text           `json:"name"`
	Impact   Impact         `json:"impact"`
	Status   IncidentStatus `json:"status"`
	Links    []string       `json:"links,omitempty"` // restore:ID, plan:ID
	Created  time.Time      `json:"created_at"`
	Updated  time.Time      `json:"updated_at"`
	Resolved time.Time      `json:"resolved_at,omitzero"`
	// Maintenance window; zero for incidents.
	ScheduledFor   time.Time `json:"scheduled_for,omitzero"`
	ScheduledUntil time.Time `json:"scheduled_until,omitzero"`

	Updates  []Update            `json:"incident_updates"`
	Affected []AffectedComponent `json:"components"`
	// Progress is the live count from the linked restores and plans, filled
	// when the snapshot is built; nil if there are no links or no source.
	Progress *Counts `json:"progress,omitempty"`
	// Overdue is set when the cadence check flags this incident.
	Overdue bool `json:"overdue,omitempty"`
	// Tenants counts the tenants it affects, whose contacts get targeted
	// notices (IncidentTenants lists them). Never on the public page.
	Tenants int `json:"tenants,omitempty"`
}

// LastUpdate returns the newest update, or the zero Update.
func (i *Incident) LastUpdate() Update {
	if len(i.Updates) == 0 {
		return Update{}
	}
	return i.Updates[0]
}

// Template is a stored, reusable update (Statuspage's incident templates):
// a title, the body parts that rarely change (support routes, for example)
// and default component statuses.
type Template struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Title      Text              `json:"title"`
	Impact     Impact            `json:"impact,omitempty"`
	Status     IncidentStatus    `json:"status,omitempty"`
	Body       Body              `json:"body"`
	Components []ComponentChange `json:"components,omitempty"`
	Created    time.Time         `json:"created_at"`
	Updated    time.Time         `json:"updated_at"`
}

// newID returns a 12-character lowercase id like Statuspage's. IDs are made
// here, not by the database, so SQLite and PostgreSQL store the same thing.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
