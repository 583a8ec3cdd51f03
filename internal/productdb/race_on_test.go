//go:build race

package productdb

// raceEnabled: the race detector slows the transpiled SQLite down about
// twentyfold, so the big-tenant test moves fewer rows under it.
const raceEnabled = true
