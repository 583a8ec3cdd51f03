// Command april replays the April 2022 incident against a generated
// multi-tenant SaaS and measures the recovery (issue 7): a script damages
// 883 of 10,000 tenants with raw SQL below the guard limits, then
//
//  1. Lifeline restores them to the moment before the script;
//  2. the baseline a user has today: Litestream restores the whole database
//     to that moment (pg_restore on PostgreSQL), then the same tenants' rows
//     are put back by hand;
//  3. the engine's limit: putting the same rows back in one transaction with
//     INSERT … SELECT from an attached copy (COPY on PostgreSQL);
//  4. other tenants' p99 latency during Lifeline's restore against idle.
//
// Every figure is a ratio measured in this one run.
//
// With -engine postgres the products live in a throwaway PostgreSQL server
// (started the way the tests start theirs, internal/pgtest), captured by
// logical decoding; the baseline is pg_restore -j2 of a pg_dump -Fc taken
// before the script, and the engine's limit is COPY.
//
//	go run ./bench/april [-tenants 10000] [-victims 883] [-engine sqlite|postgres]
//	go run ./bench/april -tenants 500   # the small run, under a minute
//	go run ./bench/april -cpuprofile restore.pprof   # where the restore spends its CPU
//	go run ./bench/april -restore '{sqlite_pause: 1ms}'  # other pacing (docs/restore.md)
//	go run ./bench/april -engine postgres -pgstat    # and where the server spends its time
//	go run ./bench/april -engine postgres -pgsettings 'shared_buffers=1GB'  # other server settings
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

var products = []string{"tracker", "wiki"}

// engine is what differs between SQLite and PostgreSQL: where the products
// live, how the reference and damaged copies are kept, the baseline a user
// has today, and the raw write-back that is the engine's limit.
type engine interface {
	// setup generates the demo products and writes lifeline.yaml into dir.
	setup(ctx context.Context, dir string, tenants int)
	// replicate starts what the baseline needs running from the first
	// snapshot on (Litestream on SQLite).
	replicate()
	db(product string) *sql.DB
	// keepBefore and keepDamaged copy the products right before and right
	// after the script, untimed.
	keepBefore()
	keepDamaged()
	baselineName() string
	// baseline restores the whole databases to the moment, then puts the
	// keys' rows back into a copy of the damaged ones; ok is false when it
	// could not run.
	baseline(moment time.Time, keys []string) (whole, back time.Duration, ok bool)
	limitName() string
	// limit puts the keys' rows as they were before the script back into a
	// copy of the damaged databases in one transaction per product.
	limit(keys []string) time.Duration
	// exact counts the keys whose rows now equal the reference.
	exact(keys []string) int
	close()
}

// cleanup stops what the engine started, also when check gives up.
var cleanup = func() {}

func main() {
	tenants := flag.Int("tenants", 10000, "tenants (sites) in each product")
	victims := flag.Int("victims", 0, "tenants the script damages (default 883, as in April 2022; 883 per 10,000 below 10,000 tenants)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of Lifeline's restore to this file (go tool pprof)")
	engineName := flag.String("engine", "sqlite", "where the products live: sqlite, or postgres (a throwaway server from the local PostgreSQL binaries)")
	pacing := flag.String("restore", "", "the restore section of lifeline.yaml, to measure other pacing: '{sqlite_transaction: 20ms, sqlite_pause: 1ms}'")
	pgsettings := flag.String("pgsettings", "", "with -engine postgres: more settings of its server, name=value separated by spaces: 'shared_buffers=1GB'")
	pgstat := flag.Bool("pgstat", false, "with -engine postgres: list the statements the server spent most time on during the restore (pg_stat_statements)")
	flag.Parse()
	var eng engine
	switch *engineName {
	case "sqlite":
		eng = &sqliteEngine{}
	case "postgres":
		eng = &pgEngine{stats: *pgstat, settings: strings.Fields(*pgsettings)}
	default:
		fmt.Fprintf(os.Stderr, "april: unknown -engine %q: use sqlite or postgres\n", *engineName)
		os.Exit(2)
	}
	if *victims == 0 {
		*victims = max(1, min(883, *tenants*883/10000))
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-april-")
	check(err)
	cleanup = func() { eng.close(); _ = os.RemoveAll(dir) }
	defer func() { cleanup() }()
	bin := filepath.Join(dir, "lifeline")
	run("go", "build", "-o", bin, "./cmd/lifeline")
	lifeline := func(args ...string) []byte {
		return run(bin, append([]string{"--config", filepath.Join(dir, "lifeline.yaml")}, args...)...)
	}

	start := time.Now()
	eng.setup(ctx, dir, *tenants)
	if *pacing != "" {
		cfg, err := os.OpenFile(filepath.Join(dir, "lifeline.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		check(err)
		_, err = fmt.Fprintf(cfg, "restore: %s\n", *pacing)
		check(errors.Join(err, cfg.Close()))
	}
	lifeline("protect")
	lifeline("backup", "run")
	fmt.Printf("generated %d tenants in two products on %s, protected, first snapshot: %v (peak RSS of that `backup run`: %d MiB)\n",
		*tenants, *engineName, time.Since(start).Round(time.Second), lastMaxRSS>>10)
	eng.replicate()

	rng := rand.New(rand.NewPCG(4, 5))
	keys := rng.Perm(*tenants)[:*victims]
	victimKeys := make([]string, len(keys))
	isVictim := map[int]bool{}
	for i, k := range keys {
		victimKeys[i] = fmt.Sprint(k + 1)
		isVictim[k+1] = true
	}
	idle := latency(eng.db("tracker"), *tenants, isVictim, 3*time.Second, nil)

	eng.keepBefore()
	moment := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	script(eng, victimKeys)
	fmt.Printf("the script damaged %d tenants with raw SQL, one tenant per statement\n", len(victimKeys))
	eng.keepDamaged()
	lifeline("backup", "run")
	check(os.WriteFile(filepath.Join(dir, "victims.txt"), []byte(strings.Join(victimKeys, "\n")), 0o644))

	// 1. Lifeline, with other tenants working during it.
	stop := make(chan struct{})
	var during probes
	var wg sync.WaitGroup
	wg.Go(func() { during = latency(eng.db("tracker"), *tenants, isVictim, time.Hour, stop) })
	if *profile != "" {
		abs, err := filepath.Abs(*profile)
		check(err)
		check(os.Setenv("LIFELINE_CPUPROFILE", abs))
	}
	stats, _ := eng.(*pgEngine)
	if *pgstat && stats != nil {
		stats.resetStats()
	}
	t0 := time.Now()
	out := lifeline("restore", "--tenants", "@"+filepath.Join(dir, "victims.txt"), "--to", moment.Format(time.RFC3339Nano), "--json", "--reason", "april")
	ours := time.Since(t0)
	check(os.Unsetenv("LIFELINE_CPUPROFILE"))
	close(stop)
	wg.Wait()
	if *pgstat && stats != nil {
		stats.printStats()
	}
	var rep struct {
		Status  string `json:"status"`
		Tenants []struct {
			Products []struct {
				Rows int64  `json:"rows"`
				Hash string `json:"hash"`
			} `json:"products"`
		} `json:"tenants"`
	}
	check(json.Unmarshal(out, &rep))
	var rows int64
	verified, steps := 0, 0
	for _, t := range rep.Tenants {
		for _, s := range t.Products {
			rows += s.Rows
			steps++
			if s.Hash == "verified" {
				verified++
			}
		}
	}

	// 2. The baseline, then 3. the engine's limit: the same rows put back in
	// one transaction. The baseline comes first because on PostgreSQL its
	// restored database is the reference the rest reads.
	whole, back, baselined := eng.baseline(moment, victimKeys)
	limit := eng.limit(victimKeys)
	exact := eng.exact(victimKeys)

	fmt.Printf("\n1. Lifeline restore of %d tenants: %v, %d rows, %.0f rows/s, status %s; %d of %d steps verified by hash; %d of %d tenants equal the copy taken before the script\n",
		len(victimKeys), ours.Round(time.Millisecond), rows, float64(rows)/ours.Seconds(), rep.Status, verified, steps, exact, len(victimKeys))
	fmt.Printf("3. raw write-back of the same rows (%s, one transaction): %v, %.0f rows/s\n", eng.limitName(), limit.Round(time.Millisecond), float64(rows)/limit.Seconds())
	fmt.Printf("   Lifeline / raw write-back = %.2f (goal ≤ 1.5)\n", ours.Seconds()/limit.Seconds())
	if baselined {
		fmt.Printf("2. baseline: %s %v + write-back %v = %v\n", eng.baselineName(), whole.Round(time.Millisecond), back.Round(time.Millisecond), (whole + back).Round(time.Millisecond))
		fmt.Printf("   Lifeline / baseline = %.2f (goal ≤ 0.50 at 10,000 tenants, ≤ 0.30 at 40,000)\n", ours.Seconds()/(whole+back).Seconds())
	}
	fmt.Printf("4. other tenants' p99 during the restore %v, idle %v: ratio %.2f (goal ≤ 2)\n",
		p99(during.pair).Round(time.Microsecond), p99(idle.pair).Round(time.Microsecond), float64(p99(during.pair))/float64(p99(idle.pair)))
	fmt.Printf("   reads alone %v against %v idle, writes alone %v against %v idle (%d pairs during, %d idle)\n",
		p99(during.read).Round(time.Microsecond), p99(idle.read).Round(time.Microsecond),
		p99(during.write).Round(time.Microsecond), p99(idle.write).Round(time.Microsecond), len(during.pair), len(idle.pair))
}

// script is the buggy migration: per tenant, deletes and corruption below
// the guard limits.
func script(eng engine, keys []string) {
	for _, k := range keys {
		for p, stmts := range map[string][]string{
			"tracker": {"DELETE FROM insight_links WHERE site_id = $1", "DELETE FROM insight_objects WHERE site_id = $1",
				"DELETE FROM comments WHERE site_id = $1", "UPDATE issues SET title = 'migrated', priority = NULL WHERE site_id = $1"},
			"wiki": {"DELETE FROM page_versions WHERE site_id = $1 AND version = 2", "UPDATE pages SET title = upper(title) WHERE site_id = $1"},
		} {
			for _, s := range stmts {
				_, err := eng.db(p).Exec(s, k)
				check(err)
			}
		}
	}
}

// countEqual counts the keys whose digest pair is equal in every product;
// digests returns a key's digest in the live database and in the reference.
func countEqual(keys []string, digests func(product, key string) (live, ref string)) int {
	exact := 0
	for _, k := range keys {
		same := true
		for _, p := range products {
			a, b := digests(p, k)
			same = same && a == b
		}
		if same {
			exact++
		}
	}
	return exact
}

// dropAll runs every statement that query returns: a copy of a damaged
// database loses Lifeline's triggers this way, as a database without
// Lifeline has none.
func dropAll(db *sql.DB, query string) {
	rows, err := db.Query(query)
	check(err)
	var drops []string
	for rows.Next() {
		var d string
		check(rows.Scan(&d))
		drops = append(drops, d)
	}
	check(rows.Close())
	for _, d := range drops {
		_, err := db.Exec(d)
		check(err)
	}
}

// probes are the client's round trips: each pair of a read and a write
// (the figure the goal is about), and the reads and writes alone (which
// of the two the restore slows).
type probes struct{ pair, read, write []time.Duration }

// latency runs single-row reads and writes on tenants that are not victims
// until stop is closed or d passes, and returns each round trip's time.
func latency(db *sql.DB, tenants int, victim map[int]bool, d time.Duration, stop chan struct{}) probes {
	var out probes
	rng := rand.New(rand.NewPCG(9, 9))
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		select {
		case <-stop:
			return out
		default:
		}
		site := 1 + rng.IntN(tenants)
		if victim[site] {
			continue
		}
		t0 := time.Now()
		var n int
		check(db.QueryRow("SELECT count(*) FROM issues WHERE site_id = $1", site).Scan(&n))
		t1 := time.Now()
		_, err := db.Exec("UPDATE issues SET estimate = $1 WHERE site_id = $2 AND id % 24 = 0", float64(i), site)
		check(err)
		t2 := time.Now()
		out.pair, out.read, out.write = append(out.pair, t2.Sub(t0)), append(out.read, t1.Sub(t0)), append(out.write, t2.Sub(t1))
		time.Sleep(5 * time.Millisecond)
	}
	return out
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// lastMaxRSS is the peak resident memory of the last command run, in KiB
// (Linux; 0 where the system does not say).
var lastMaxRSS int64

func run(name string, args ...string) []byte {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		lastMaxRSS = int64(ru.Maxrss)
	}
	if err != nil {
		cleanup()
		log.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func check(err error) {
	if err != nil {
		cleanup()
		log.Fatal(err)
	}
}
