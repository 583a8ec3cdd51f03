package status

import (
	"context"
	"slices"
	"time"
)

// ComponentState is a component as the page shows it now.
type ComponentState struct {
	Component
	Status ComponentStatus `json:"status"`
	Uptime Uptime          `json:"uptime"`
}

// Snapshot is everything the public page shows, read in one go. The web
// package renders it once per change and serves the bytes from memory, so
// the page needs no database per request and keeps its last snapshot when
// the state store is down.
type Snapshot struct {
	Revision     int64
	At           time.Time
	Cadence      time.Duration
	Groups       []Group
	Components   []ComponentState
	Incidents    []Incident // kind incident, newest first
	Maintenances []Incident // newest window first
	Overdue      []Overdue
	// Indicator is the worst impact among open incidents.
	Indicator Impact
}

// Snapshot reads the page's state as of now: current component statuses,
// 90-day uptime, open and recent incidents with live restore progress,
// maintenances with their status as of now, and overdue incidents.
func (s *Service) Snapshot(ctx context.Context) (*Snapshot, error) {
	// The revision is read first: a write that lands during the reads bumps
	// it again, and the next poll rebuilds.
	rev, err := s.db.revision(ctx)
	if err != nil {
		return nil, err
	}
	groups, comps, err := s.Components(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	all, err := s.db.incidents(ctx, recent(now))
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Revision: rev, At: now, Cadence: s.cadence, Groups: orNone(groups), Indicator: ImpactNone,
		Incidents: []Incident{}, Maintenances: []Incident{}, Components: []ComponentState{}}
	for i := range all {
		inc := &all[i]
		inc.Affected = affected(inc, comps)
		if inc.Kind == KindMaintenance {
			maintenanceAsOf(inc, now)
			snap.Maintenances = append(snap.Maintenances, *inc)
			continue
		}
		if !inc.Status.Closed() {
			if inc.Impact.Rank() > snap.Indicator.Rank() {
				snap.Indicator = inc.Impact
			}
			s.liveProgress(ctx, inc)
		}
		snap.Incidents = append(snap.Incidents, *inc)
	}
	slices.SortStableFunc(snap.Maintenances, func(a, b Incident) int { return b.ScheduledFor.Compare(a.ScheduledFor) })
	snap.Overdue = CheckCadence(snap.Incidents, now, s.cadence)
	for _, o := range snap.Overdue {
		for i := range snap.Incidents {
			if snap.Incidents[i].ID == o.IncidentID {
				snap.Incidents[i].Overdue = true
			}
		}
	}
	for _, c := range comps {
		snap.Components = append(snap.Components, ComponentState{
			Component: c,
			Status:    currentStatus(c.ID, all),
			Uptime:    ComputeUptime(c.ID, c.Created, snap.Incidents, now),
		})
	}
	return snap, nil
}

// liveProgress asks the progress source for an open linked incident's
// counts. A failure leaves Progress nil: the page then shows the last
// published numbers rather than none.
func (s *Service) liveProgress(ctx context.Context, inc *Incident) {
	if s.progress == nil || len(inc.Links) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.progress.Progress(ctx, inc.Links)
	if err != nil {
		s.log.Warn("status: restore progress unavailable", "incident", inc.ID, "err", err)
		return
	}
	if c.AsOf.IsZero() {
		c.AsOf = s.now().UTC()
	}
	inc.Progress = &c
}

// maintenanceAsOf moves a maintenance along its window as time passes:
// scheduled becomes in_progress at the start, and anything not yet verified
// becomes completed at the end. Operators may still set the status by hand.
func maintenanceAsOf(m *Incident, now time.Time) {
	switch {
	case m.Status.Closed():
	case !now.Before(m.ScheduledUntil) && m.Status != Verifying:
		m.Status, m.Resolved = Completed, m.ScheduledUntil
	case !now.Before(m.ScheduledFor) && m.Status == Scheduled:
		m.Status = InProgress
	}
}

// currentStatus is the worst status any open incident, or any maintenance
// in progress, gives component id. It is derived, never stored, so it
// cannot disagree with the incidents.
func currentStatus(id string, incidents []Incident) ComponentStatus {
	worst := Operational
	for _, inc := range incidents {
		open := !inc.Status.Closed()
		if inc.Kind == KindMaintenance {
			open = inc.Status == InProgress || inc.Status == Verifying
		}
		if !open {
			continue
		}
		for _, a := range inc.Affected {
			if a.ComponentID == id && a.New.Rank() > worst.Rank() {
				worst = a.New
			}
		}
	}
	return worst
}

// Unresolved returns the open incidents, newest first.
func (s *Snapshot) Unresolved() []Incident {
	out := []Incident{}
	for _, i := range s.Incidents {
		if !i.Status.Closed() {
			out = append(out, i)
		}
	}
	return out
}

// UpcomingMaintenances returns maintenances still scheduled, soonest first.
func (s *Snapshot) UpcomingMaintenances() []Incident {
	out := []Incident{}
	for _, m := range s.Maintenances {
		if m.Status == Scheduled {
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b Incident) int { return a.ScheduledFor.Compare(b.ScheduledFor) })
	return out
}

// ActiveMaintenances returns maintenances in progress or being verified.
func (s *Snapshot) ActiveMaintenances() []Incident {
	out := []Incident{}
	for _, m := range s.Maintenances {
		if m.Status == InProgress || m.Status == Verifying {
			out = append(out, m)
		}
	}
	return out
}

func orNone[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
