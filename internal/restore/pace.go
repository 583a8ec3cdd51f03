package restore

import (
	"context"
	"time"

	"lifeline/internal/productdb"
)

// pacer times the pauses between a restore's write transactions on SQLite,
// where the application's writers wait for the one write lock in SQLite's
// busy handler: asleep, waking every 1 to 25 ms (later 50 and 100) to try
// again. A writer that wakes while the restore holds the lock sleeps
// longer, so with fixed pauses it can miss several in a row.
//
// So a pause lasts until the application has written: it ends once
// another connection has committed and nobody else has for grace (2 ms,
// for other writers waking about then), or after longest. A pause in
// which nobody wrote suggests nobody is waiting, so the next one is
// shorter (halved, down to shortest: 5 ms, which a sporadic writer still
// hits within a few transactions); a pause in which somebody wrote sets
// the next one back to longest. The longest pause (restore.sqlite_pause,
// 25 ms) covers the sleep a writer that came during a transaction is in
// when the transaction ends, so it gets in at the next pause instead of
// sleeping through it into the next transaction.
type pacer struct {
	longest, shortest, grace, poll time.Duration
	cur                            time.Duration
	// changed reports whether another connection committed since its last
	// call; ok false when that cannot be told (the pause then lasts
	// longest).
	changed func() (changed, ok bool)
	now     func() time.Time
	sleep   func(time.Duration)
}

// pacer paces the restore's writes into db (SQLite): pauses of up to
// Pause, watching for the application's commits on a connection that done
// gives back. Without that connection the pauses last Pause.
func (s *Service) pacer(ctx context.Context, db *productdb.DB) (p *pacer, done func()) {
	changed := func() (bool, bool) { return false, false }
	done = func() {}
	if w, err := db.Watch(ctx); err == nil && w != nil {
		done = func() { _ = w.Close() }
		changed = func() (bool, bool) {
			c, err := w.Changed(ctx)
			return c, err == nil
		}
	}
	return newPacer(s.pause(), changed), done
}

func newPacer(longest time.Duration, changed func() (bool, bool)) *pacer {
	return &pacer{
		longest: longest, shortest: min(longest, 5*time.Millisecond), grace: 2 * time.Millisecond, poll: 250 * time.Microsecond,
		cur: longest, changed: changed, now: time.Now, sleep: time.Sleep,
	}
}

// pause waits between two transactions; it is called right after the
// restore's own commit, which the first look at changed absorbs.
func (p *pacer) pause() {
	if _, ok := p.changed(); !ok {
		p.sleep(p.longest)
		return
	}
	start := p.now()
	var wrote bool
	var last time.Time // when a commit was last seen
	for {
		p.sleep(p.poll)
		t := p.now()
		c, ok := p.changed()
		if !ok {
			p.sleep(max(0, p.longest-t.Sub(start)))
			return
		}
		if c {
			wrote, last = true, t
		}
		if t.Sub(start) >= p.cur || wrote && t.Sub(last) >= p.grace {
			break
		}
	}
	if wrote {
		p.cur = p.longest
	} else {
		p.cur = max(p.shortest, p.cur/2)
	}
}
