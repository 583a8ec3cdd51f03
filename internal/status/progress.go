package status

import (
	"context"
	"math"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// Progress is where live restore progress comes from: the restore engine
// and the plan runner implement it. An incident linked to restores or plans
// ("restore:ID", "plan:ID") gets its percentage restored from here, computed
// from verified restores, never typed by hand.
type Progress interface {
	// Progress returns the counts summed over links. It returns an error
	// with code fault.NotFound if a link names nothing the source knows, and
	// any other error if the source cannot answer now (the page then keeps
	// the last published numbers).
	Progress(ctx context.Context, links []string) (Counts, error)
}

// Counts is the state of the restores behind an incident.
type Counts struct {
	Sites    int `json:"sites"`    // affected sites across the links
	Verified int `json:"verified"` // restored and verified row by row
	// Groups breaks the sites down (per product, per cohort), if the source
	// knows; it fills the update's affected groups when those are empty.
	Groups []AffectedGroup `json:"groups,omitempty"`
	AsOf   time.Time       `json:"as_of"`
}

// Percent is Verified over Sites, rounded down to one decimal so it never
// claims more than is done. No sites means nothing to restore: 100.
func (c Counts) Percent() float64 {
	if c.Sites <= 0 {
		return 100
	}
	return math.Floor(1000*float64(c.Verified)/float64(c.Sites)) / 10
}

// linkKinds are the things an incident may be linked to.
var linkKinds = []string{"restore:", "plan:"}

func checkLinks(links []string) error {
	for _, l := range links {
		ok := false
		for _, k := range linkKinds {
			if rest, found := strings.CutPrefix(l, k); found && rest != "" {
				ok = true
			}
		}
		if !ok {
			return fault.New(fault.Invalid, "link restores as restore:ID and plans as plan:ID", "bad link %q", l)
		}
	}
	return nil
}

// fill puts c into b as the verified percentage, with high confidence
// because it is a count, not an estimate.
func (c Counts) fill(b *Body) {
	p := c.Percent()
	b.PercentRestored, b.PercentSource, b.PercentConfidence = &p, "verified_restores", High
	if len(b.AffectedGroups) == 0 {
		b.AffectedGroups = c.Groups
	}
}
