// Package waves reads a plan's wave list ("internal,1%,10%,100%"): the
// plan engine runs by it, and the config checks plans.waves with it, so a
// list is accepted or refused the same way in both places.
package waves

import (
	"strconv"
	"strings"

	"lifeline/internal/fault"
)

// Wave is one parsed wave: the internal tenants, or the other targets up
// to a cumulative share or count.
type Wave struct {
	Name     string
	Internal bool
	Share    float64 // 0..1, cumulative; or
	Count    int     // cumulative, when Share is 0
}

// Hint is how wave lists are written.
const Hint = "write waves like internal,1%,10%,100%: \"internal\" first if at all, then growing shares or counts of the other targets, ending at 100%"

// Parse reads a wave list. It refuses "internal" anywhere but first,
// shares or counts that do not grow, and a last wave short of 100%, which
// would leave targets out.
func Parse(list []string) ([]Wave, error) {
	var out []Wave
	prevShare, prevCount := 0.0, 0
	for i, raw := range list {
		w := Wave{Name: strings.TrimSpace(raw)}
		switch {
		case w.Name == "internal":
			if i != 0 {
				return nil, fault.New(fault.Invalid, Hint, "wave %q: the internal wave can only come first", raw)
			}
			w.Internal = true
		case strings.HasSuffix(w.Name, "%"):
			v, err := strconv.ParseFloat(strings.TrimSuffix(w.Name, "%"), 64)
			if err != nil || v <= 0 || v > 100 {
				return nil, fault.New(fault.Invalid, Hint, "wave %q is not a share between 0%% and 100%%", raw)
			}
			w.Share = v / 100
			if w.Share <= prevShare {
				return nil, fault.New(fault.Invalid, Hint, "wave %q does not grow: shares are cumulative", raw)
			}
			prevShare = w.Share
		default:
			n, err := strconv.Atoi(w.Name)
			if err != nil || n <= 0 {
				return nil, fault.New(fault.Invalid, Hint, "wave %q is neither internal, a share (10%%) nor a count (5)", raw)
			}
			if n <= prevCount || prevShare > 0 {
				return nil, fault.New(fault.Invalid, Hint, "wave %q does not grow: counts are cumulative and come before shares", raw)
			}
			w.Count, prevCount = n, n
		}
		out = append(out, w)
	}
	if len(out) == 0 || out[len(out)-1].Share != 1 {
		return nil, fault.New(fault.Invalid, Hint, "the last wave must be 100%%, or some targets would never run (waves: %s)", strings.Join(list, ","))
	}
	return out, nil
}
