package restore

import (
	"testing"
	"time"
)

// fakePace drives a pacer on a clock that moves only when it sleeps;
// commits lists the moments (since the start) at which another connection
// commits.
type fakePace struct {
	t       time.Duration
	commits []time.Duration
	seen    int
	slept   time.Duration
}

func (f *fakePace) pacer(longest time.Duration) *pacer {
	p := newPacer(longest, func() (bool, bool) {
		n := 0
		for _, c := range f.commits {
			if c <= f.t {
				n++
			}
		}
		changed := n > f.seen
		f.seen = n
		return changed, true
	})
	start := time.Unix(0, 0)
	p.now = func() time.Time { return start.Add(f.t) }
	p.sleep = func(d time.Duration) { f.t += d; f.slept += d }
	return p
}

func TestPauseEndsOnceTheApplicationHasWritten(t *testing.T) {
	f := &fakePace{commits: []time.Duration{3 * time.Millisecond}}
	p := f.pacer(25 * time.Millisecond)
	p.pause()
	// The commit at 3 ms is seen at the next look, then a grace of 2 ms.
	if f.t < 5*time.Millisecond || f.t > 5*time.Millisecond+p.poll {
		t.Fatalf("pause lasted %v, want about 5 ms: until the commit at 3 ms and 2 ms of grace", f.t)
	}
	if p.cur != 25*time.Millisecond {
		t.Fatalf("next pause %v, want the longest (25ms) after the application wrote", p.cur)
	}
}

func TestPauseWaitsForWritersThatKeepComing(t *testing.T) {
	f := &fakePace{commits: []time.Duration{time.Millisecond, 2500 * time.Microsecond, 4 * time.Millisecond}}
	p := f.pacer(25 * time.Millisecond)
	p.pause()
	if f.t < 6*time.Millisecond {
		t.Fatalf("pause ended at %v, before the last commit (4 ms) and its grace", f.t)
	}
}

func TestPauseShortensWhileNobodyWrites(t *testing.T) {
	f := &fakePace{}
	p := f.pacer(24 * time.Millisecond)
	var lengths []time.Duration
	for range 5 {
		before := f.t
		p.pause()
		lengths = append(lengths, f.t-before)
	}
	ms := time.Millisecond
	want := []time.Duration{24 * ms, 12 * ms, 6 * ms, 5 * ms, 5 * ms}
	for i, w := range want {
		if got := lengths[i]; got < w || got > w+p.poll {
			t.Fatalf("pause %d lasted %v, want %v (pauses: %v)", i, got, w, lengths)
		}
	}
	// A write during a short pause sets the next one back to the longest.
	f.commits = []time.Duration{f.t + 500*time.Microsecond}
	p.pause()
	if p.cur != 24*time.Millisecond {
		t.Fatalf("next pause %v after a write, want 24ms", p.cur)
	}
}

func TestPauseFallsBackToTheLongestWhenItCannotTell(t *testing.T) {
	f := &fakePace{}
	p := f.pacer(10 * time.Millisecond)
	p.changed = func() (bool, bool) { return false, false }
	for range 3 {
		before := f.t
		p.pause()
		if d := f.t - before; d != 10*time.Millisecond {
			t.Fatalf("pause lasted %v, want the longest, 10ms, when commits cannot be seen", d)
		}
	}
}
