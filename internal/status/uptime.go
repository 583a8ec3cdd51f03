package status

import (
	"slices"
	"time"
)

// UptimeDays is how far back the uptime bars reach.
const UptimeDays = 90

// Outage weights: a major outage counts in full against uptime, a partial
// outage by 30% (Statuspage's convention), degraded performance and
// maintenance not at all, though a degraded day is still coloured.
var outageWeight = map[ComponentStatus]float64{MajorOutage: 1, PartialOutage: 0.3}

// Day is one bar of a component's uptime history.
type Day struct {
	Date      time.Time       `json:"date"`      // midnight UTC
	Worst     ComponentStatus `json:"worst"`     // the worst status seen that day
	Down      time.Duration   `json:"down_ns"`   // weighted outage time
	Incidents []string        `json:"incidents"` // ids of incidents that touched the component that day
	// NoData marks a day wholly before the component existed; it counts
	// neither for nor against uptime.
	NoData bool `json:"no_data,omitempty"`
}

// Uptime is a component's availability over the last UptimeDays days.
type Uptime struct {
	Percent float64 `json:"percent"` // 0–100, two decimals
	Days    []Day   `json:"days"`    // oldest first, UptimeDays of them
}

// span is a stretch of time during which one incident gave a component a
// status other than operational.
type span struct {
	from, to time.Time
	status   ComponentStatus
	incident string
}

// spans returns the non-operational stretches incidents gave component id,
// from each update's changes. An open incident's last status lasts until now.
func spans(id string, incidents []Incident, now time.Time) []span {
	var out []span
	for _, inc := range incidents {
		if inc.Kind != KindIncident {
			continue
		}
		end := now
		if !inc.Resolved.IsZero() {
			end = inc.Resolved
		}
		var cur *span
		for i := len(inc.Updates) - 1; i >= 0; i-- { // oldest first
			u := inc.Updates[i]
			for _, c := range u.Changes {
				if c.ComponentID != id {
					continue
				}
				if cur != nil {
					cur.to = u.Created
					out = append(out, *cur)
					cur = nil
				}
				if c.Status != Operational {
					cur = &span{from: u.Created, status: c.Status, incident: inc.ID}
				}
			}
		}
		if cur != nil {
			cur.to = end
			out = append(out, *cur)
		}
	}
	return out
}

// ComputeUptime derives component id's 90-day history from incidents (an
// incident's updates record the status changes). Time before since, the
// component's creation, does not count. Overlapping incidents count once, at
// the worse status.
func ComputeUptime(id string, since time.Time, incidents []Incident, now time.Time) Uptime {
	now = now.UTC()
	today := now.Truncate(24 * time.Hour)
	start := today.AddDate(0, 0, -(UptimeDays - 1))
	days := make([]Day, UptimeDays)
	for i := range days {
		d := start.AddDate(0, 0, i)
		days[i] = Day{Date: d, Worst: Operational, Incidents: []string{}, NoData: !d.Add(24 * time.Hour).After(since)}
	}
	sp := spans(id, incidents, now)

	// Cut time at every span edge, so each piece has one worst status.
	var cuts []time.Time
	for _, s := range sp {
		cuts = append(cuts, s.from, s.to)
	}
	slices.SortFunc(cuts, time.Time.Compare)
	cuts = slices.CompactFunc(cuts, time.Time.Equal)

	var down float64 // weighted seconds inside the window
	for k := 0; k+1 < len(cuts); k++ {
		a, b := cuts[k], cuts[k+1]
		worst := Operational
		for _, s := range sp {
			if !s.from.After(a) && !s.to.Before(b) && s.status.Rank() > worst.Rank() {
				worst = s.status
			}
		}
		if worst == Operational {
			continue
		}
		// Split the piece at midnights and charge each day.
		for t := a; t.Before(b); {
			dayStart := t.UTC().Truncate(24 * time.Hour)
			next := dayStart.Add(24 * time.Hour)
			if b.Before(next) {
				next = b
			}
			i := int(dayStart.Sub(start) / (24 * time.Hour))
			if i >= 0 && i < UptimeDays && !next.Before(since) {
				from := t
				if from.Before(since) {
					from = since
				}
				w := outageWeight[worst] * next.Sub(from).Seconds()
				days[i].Down += time.Duration(w * float64(time.Second))
				down += w
				if worst.Rank() > days[i].Worst.Rank() {
					days[i].Worst = worst
				}
			}
			t = next
		}
	}
	for _, s := range sp {
		for i := range days {
			d0, d1 := days[i].Date, days[i].Date.Add(24*time.Hour)
			if s.from.Before(d1) && s.to.After(d0) && !slices.Contains(days[i].Incidents, s.incident) {
				days[i].Incidents = append(days[i].Incidents, s.incident)
			}
		}
	}

	from := start
	if since.After(from) {
		from = since
	}
	total := now.Sub(from).Seconds()
	pct := 100.0
	if total > 0 {
		pct = 100 * (1 - down/total)
	}
	pct = float64(int64(max(pct, 0)*100+0.5)) / 100
	return Uptime{Percent: pct, Days: days}
}

// Overdue is an open major or critical incident whose last update is older
// than the cadence interval.
type Overdue struct {
	IncidentID string        `json:"incident_id"`
	Name       string        `json:"name"`
	Impact     Impact        `json:"impact"`
	LastUpdate time.Time     `json:"last_update"`
	Late       time.Duration `json:"late_ns"` // how far past the interval
}

// DefaultCadence is how often a major or critical incident must be updated.
const DefaultCadence = 60 * time.Minute

// CheckCadence returns the incidents that owe customers an update: open,
// major or critical, last update older than every. Silence was the
// complaint of 2022; this makes it visible.
func CheckCadence(incidents []Incident, now time.Time, every time.Duration) []Overdue {
	if every <= 0 {
		every = DefaultCadence
	}
	var out []Overdue
	for _, inc := range incidents {
		if inc.Kind != KindIncident || inc.Status.Closed() || inc.Impact.Rank() < ImpactMajor.Rank() {
			continue
		}
		last := inc.Created
		if u := inc.LastUpdate(); !u.Created.IsZero() {
			last = u.Created
		}
		if late := now.Sub(last) - every; late > 0 {
			out = append(out, Overdue{IncidentID: inc.ID, Name: inc.Name.In(English), Impact: inc.Impact, LastUpdate: last, Late: late})
		}
	}
	return out
}
