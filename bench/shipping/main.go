// Command shipping measures change capture and shipping on a generated
// multi-tenant product (issue 3): shipping lag under a steady write rate,
// shipping throughput, compression, and the share of the repository a
// rebuild of 1% of the tenants reads. Every figure comes from one run on one
// machine.
//
// With -engine postgres the product lives in a throwaway PostgreSQL server
// started from the local binaries (as the tests do; fsync off), captured by
// logical decoding; -state postgres puts the state store (the catalog,
// the lease) on that server too. -maintain sets how often the shipper's
// maintenance runs during the lag test (serve: every minute, so never
// inside a 10 s test).
//
//	go run ./bench/shipping [-tenants 1000] [-rate 2000] [-seconds 10] [-intervals 1s,200ms]
//		[-engine sqlite|postgres] [-state sqlite|postgres] [-maintain 1m]
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/change"
	"lifeline/internal/demo"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func main() {
	tenants := flag.Int("tenants", 1000, "tenants in the generated product")
	rate := flag.Int("rate", 2000, "single-row write transactions per second during the lag test")
	seconds := flag.Int("seconds", 10, "length of the lag test")
	intervals := flag.String("intervals", "1s,200ms", "shipping intervals (RPO targets) to measure the lag at, comma-separated")
	engine := flag.String("engine", "sqlite", "where the product lives: sqlite, or postgres (a throwaway server, logical decoding)")
	stateOn := flag.String("state", "sqlite", "where the state store lives: sqlite, or postgres (the throwaway server)")
	maintain := flag.Duration("maintain", time.Minute, "how often the shipper maintains the repository during the lag test")
	flag.Parse()
	var targets []time.Duration
	for _, v := range strings.Split(*intervals, ",") {
		d, err := time.ParseDuration(v)
		check(err)
		targets = append(targets, d)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-bench-shipping-")
	check(err)
	defer os.RemoveAll(dir)

	check(demo.Generate(ctx, dir, demo.Options{Tenants: *tenants}))
	productDSN, stateDSN := "sqlite:tracker.db", "sqlite:state.db"
	appDSN, update := "file:"+filepath.Join(dir, "tracker.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)", "UPDATE issues SET estimate = ? WHERE id = ?"
	driver := "sqlite"
	if *engine == "postgres" || *stateOn == "postgres" {
		srv, err := pgtest.Start()
		check(err)
		defer srv.Stop()
		if *engine == "postgres" {
			check(srv.Exec("CREATE DATABASE tracker"))
			check(demo.LoadPostgres(ctx, filepath.Join(dir, "tracker.db"), srv.URL("tracker"), demo.Tables["tracker"]))
			productDSN, appDSN, update, driver = srv.URL("tracker"), srv.URL("tracker"), "UPDATE issues SET estimate = $1 WHERE id = $2", "pgx"
		}
		if *stateOn == "postgres" {
			check(srv.Exec("CREATE DATABASE lifeline_state"))
			stateDSN = srv.URL("lifeline_state")
		}
	}
	store, err := state.Open(ctx, stateDSN, dir, nil)
	check(err)
	db, err := productdb.Open(ctx, productDSN, dir)
	check(err)
	layout, err := tenant.Protect(ctx, store, db, productdb.Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}}, "bench")
	check(err)
	files, err := blob.OpenFile(filepath.Join(dir, "backups"))
	check(err)
	up := &uploads{Store: files}
	counting := blob.Count(up)
	repo, err := backup.OpenRepo(ctx, &backup.Repo{Blobs: counting, State: store})
	check(err)
	src, err := capture.Open(ctx, db, layout, capture.Options{})
	check(err)
	defer src.Close()
	ship := &backup.Shipper{Repo: repo, Product: "tracker", Source: src, MaintainEvery: *maintain, Window: 30 * 24 * time.Hour}
	_, err = ship.Ship(ctx) // the first snapshot
	check(err)

	app, err := sql.Open(driver, appDSN)
	check(err)
	defer app.Close()

	fmt.Printf("generated %d tenants on %s (state store on %s); steady %d writes/s for %d s; maintenance every %v\n", *tenants, *engine, *stateOn, *rate, *seconds, *maintain)
	commits, took := write(app, update, *rate, *seconds)
	fmt.Printf("baseline: the writer alone reached %.0f writes/s\n", float64(len(commits))/took.Seconds())
	for _, interval := range targets {
		p50, p99 := lag(ctx, app, update, ship, repo, up, *rate, *seconds, interval)
		fmt.Printf("shipping lag to recorded, interval %v: p50 %v, p99 %v\n", interval, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	}

	// Throughput: a backlog of big transactions shipped in one go.
	_, err = app.Exec("UPDATE issues SET priority = priority + 1")
	check(err)
	_, err = app.Exec("UPDATE comments SET body = body || '!'")
	check(err)
	start := time.Now()
	res, err := ship.Ship(ctx)
	check(err)
	el := time.Since(start)
	fmt.Printf("shipping throughput: %d changes in %v = %.0f changes/s (%d segments)\n", res.Changes, el.Round(time.Millisecond), float64(res.Changes)/el.Seconds(), res.Segments)

	st, err := repo.Status(ctx, "tracker", 0)
	check(err)
	fmt.Printf("compression: %.1f MiB of rows stored in %.1f MiB = %.2fx\n", float64(st.PlainBytes)/(1<<20), float64(st.Bytes)/(1<<20), st.Ratio)

	// Selective read: rebuild 1% of the tenants, as shipped and after the
	// maintenance serve runs every minute (merging small segments).
	selective(ctx, repo, counting, *tenants, "as shipped")
	_, _, err = ship.Maintain(ctx) // still the lease holder after the Ship above
	check(err)
	selective(ctx, repo, counting, *tenants, "after maintenance")
}

// selective rebuilds 1% of the tenants at the newest position and reports
// the share of the repository read.
func selective(ctx context.Context, repo *backup.Repo, counting *blob.Counting, tenants int, when string) {
	st, err := repo.Status(ctx, "tracker", 0)
	check(err)
	counting.Reset()
	cur, _, err := repo.Cursor(ctx, "tracker")
	check(err)
	rd, err := repo.OpenAt(ctx, "tracker", backup.Upto{Pos: cur.Pos})
	check(err)
	opened := counting.BytesRead()
	rows, blocks := 0, int64(0)
	for i := 0; i < tenants/100; i++ {
		blocks += rd.Cost(fmt.Sprint(1 + i*100))
		check(rd.Tenant(ctx, fmt.Sprint(1+i*100), func(*change.Table, *change.Change) error { rows++; return nil }))
	}
	fmt.Printf("selective read %s: rebuilding %d tenants (1%%, %d rows) from %d objects read %.2f%% of the repository (%d of %d bytes, %d reads): %d bytes of footers, headers and indexes, %d of the tenants' blocks\n",
		when, tenants/100, rows, len(rd.Objects()), 100*float64(counting.BytesRead())/float64(st.Bytes), counting.BytesRead(), st.Bytes, counting.Gets(), opened, blocks)
}

// lag writes single-row transactions at rate for seconds while the shipper
// runs as serve runs it (Shipper.Run with the interval), and reports two
// lags of each change: to the end of the upload of the segment that holds
// it, and to when the catalog's cursor passed it (recorded: durable, what
// the RPO counts; sampled every 5 ms). It also reports how many segments
// that made per minute. It returns the p50 and p99 of the recorded lag.
func lag(ctx context.Context, app *sql.DB, update string, ship *backup.Shipper, repo *backup.Repo, up *uploads, rate, seconds int, interval time.Duration) (time.Duration, time.Duration) {
	res, err := ship.Ship(ctx)
	check(err)
	base := res.Cursor.Pos
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { ship.Run(runCtx, interval) })
	type sample struct {
		at  time.Time
		pos uint64
	}
	var samples []sample
	want := base + uint64(rate*seconds)
	wg.Go(func() {
		for {
			at := time.Now()
			cur, _, err := repo.Cursor(ctx, "tracker")
			check(err)
			samples = append(samples, sample{at, cur.Pos})
			if cur.Pos >= want {
				stop()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	commits, took := write(app, update, rate, seconds)
	wg.Wait()
	n := len(commits)
	uploaded, recorded := make([]time.Duration, n), make([]time.Duration, n)
	// A position's segment as the shipper made it is the shortest upload
	// holding it: merges hold the shipped ones (and may have pruned them).
	up.mu.Lock()
	segs := slices.Clone(up.segs)
	up.mu.Unlock()
	shipped, s := map[upload]bool{}, 0
	for i, c := range commits {
		pos := base + uint64(i) + 1
		var seg *upload
		for j, o := range segs {
			if o.first <= pos && pos <= o.last && (seg == nil || o.last-o.first < seg.last-seg.first) {
				seg = &segs[j]
			}
		}
		if seg != nil {
			uploaded[i] = seg.at.Sub(c)
			shipped[*seg] = true
		}
		for samples[s].pos < pos {
			s++
		}
		recorded[i] = samples[s].at.Sub(c)
	}
	slices.Sort(uploaded)
	slices.Sort(recorded)
	fmt.Printf("  the writer reached %.0f writes/s while shipping; %d segments = %.0f a minute\n", float64(n)/took.Seconds(), len(shipped), float64(len(shipped))/took.Minutes())
	fmt.Printf("  lag to the segment's upload: p50 %v, p99 %v\n", uploaded[n/2].Round(time.Millisecond), uploaded[n*99/100].Round(time.Millisecond))
	return recorded[n/2], recorded[n*99/100]
}

// uploads records the segments uploaded and when each upload ended, so
// the lag test knows the segments as the shipper made them even after
// maintenance merged and pruned them.
type uploads struct {
	blob.Store
	mu   sync.Mutex
	segs []upload
}

type upload struct {
	first, last uint64
	at          time.Time
}

func (u *uploads) Put(ctx context.Context, key string, r io.Reader, size int64, retainUntil time.Time) error {
	err := u.Store.Put(ctx, key, r, size, retainUntil)
	var o upload
	if _, scanErr := fmt.Sscanf(key, "tracker/segments/%d-%d.seg", &o.first, &o.last); err == nil && scanErr == nil {
		o.at = time.Now()
		u.mu.Lock()
		u.segs = append(u.segs, o)
		u.mu.Unlock()
	}
	return err
}

// write runs rate single-row update transactions (update) per second for seconds,
// as fast as the database allows when it cannot keep up, and returns each
// commit's time and how long it all took.
func write(app *sql.DB, update string, rate, seconds int) ([]time.Time, time.Duration) {
	n := rate * seconds
	commits := make([]time.Time, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		_, err := app.Exec(update, float64(i), 1+i%1000)
		check(err)
		commits = append(commits, time.Now())
	}
	return commits, time.Since(start)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
