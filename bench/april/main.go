// Command april replays the April 2022 incident against a generated
// multi-tenant SaaS and measures the recovery (issue 7): a script damages
// 883 of 10,000 tenants with raw SQL below the guard limits, then
//
//  1. Lifeline restores them to the moment before the script;
//  2. the baseline a user has today: Litestream restores the whole database
//     to that moment, then the same tenants' rows are put back by hand;
//  3. the engine's limit: putting the same rows back in one transaction with
//     INSERT … SELECT from an attached copy;
//  4. other tenants' p99 latency during Lifeline's restore against idle.
//
// Every figure is a ratio measured in this one run.
//
//	go run ./bench/april [-tenants 10000] [-victims 883]
//	go run ./bench/april -tenants 500   # the small run, under a minute
package main

import (
	"context"
	"database/sql"
	"encoding/json"
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
	"time"

	_ "modernc.org/sqlite"

	"lifeline/internal/demo"
)

var products = []string{"tracker", "wiki"}

func main() {
	tenants := flag.Int("tenants", 10000, "tenants (sites) in each product")
	victims := flag.Int("victims", 0, "tenants the script damages (default 883 per 10,000)")
	flag.Parse()
	if *victims == 0 {
		*victims = max(1, *tenants*883/10000)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-april-")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "lifeline")
	run("go", "build", "-o", bin, "./cmd/lifeline")
	lifeline := func(args ...string) []byte {
		return run(bin, append([]string{"--config", filepath.Join(dir, "lifeline.yaml")}, args...)...)
	}

	start := time.Now()
	check(demo.Generate(ctx, dir, demo.Options{Tenants: *tenants}))
	lifeline("protect")
	lifeline("backup", "run")
	fmt.Printf("generated %d tenants in two products, protected, first snapshot: %v\n", *tenants, time.Since(start).Round(time.Second))

	litestream, lsErr := exec.LookPath("litestream")
	if lsErr != nil {
		// The baseline tool, installed the way the issue names it.
		fmt.Println("installing litestream v0.5.18 for the baseline (once; takes a few minutes)")
		run("go", "install", "github.com/benbjohnson/litestream/cmd/litestream@v0.5.18")
		gopath := strings.TrimSpace(string(run("go", "env", "GOPATH")))
		litestream, lsErr = exec.LookPath(filepath.Join(gopath, "bin", "litestream"))
	}
	var ls *exec.Cmd
	if lsErr == nil {
		ls = startLitestream(litestream, dir)
		defer func() { _ = ls.Process.Kill(); _, _ = ls.Process.Wait() }()
	} else {
		fmt.Println("litestream could not be installed: the baseline is skipped")
	}

	rng := rand.New(rand.NewPCG(4, 5))
	keys := rng.Perm(*tenants)[:*victims]
	victimKeys := make([]string, len(keys))
	isVictim := map[int]bool{}
	for i, k := range keys {
		victimKeys[i] = fmt.Sprint(k + 1)
		isVictim[k+1] = true
	}
	dbs := map[string]*sql.DB{}
	for _, p := range products {
		dbs[p], err = sql.Open("sqlite", "file:"+filepath.Join(dir, p+".db")+"?_pragma=busy_timeout(30000)")
		check(err)
	}
	idle := latency(dbs["tracker"], *tenants, isVictim, 3*time.Second, nil)

	// The reference: copies of the databases just before the script.
	time.Sleep(1500 * time.Millisecond) // let Litestream sync what came before
	for _, p := range products {
		_, err := dbs[p].Exec("VACUUM INTO ?", filepath.Join(dir, p+".before.db"))
		check(err)
	}
	moment := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	script(dbs, victimKeys)
	fmt.Printf("the script damaged %d tenants with raw SQL, one tenant per statement\n", len(victimKeys))
	for _, p := range products {
		_, err := dbs[p].Exec("VACUUM INTO ?", filepath.Join(dir, p+".damaged.db"))
		check(err)
	}
	lifeline("backup", "run")
	check(os.WriteFile(filepath.Join(dir, "victims.txt"), []byte(strings.Join(victimKeys, "\n")), 0o644))

	// 1. Lifeline, with other tenants working during it.
	stop := make(chan struct{})
	var during []time.Duration
	var wg sync.WaitGroup
	wg.Go(func() { during = latency(dbs["tracker"], *tenants, isVictim, time.Hour, stop) })
	t0 := time.Now()
	out := lifeline("restore", "--tenants", "@"+filepath.Join(dir, "victims.txt"), "--to", moment.Format(time.RFC3339Nano), "--json", "--reason", "april")
	ours := time.Since(t0)
	close(stop)
	wg.Wait()
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
	exact := compare(dir, dbs, victimKeys)

	// 3. The engine's limit: the same rows put back in one transaction.
	limit := writeBack(dir, ".damaged.db", ".before.db", victimKeys)

	fmt.Printf("\n1. Lifeline restore of %d tenants: %v, %d rows, %.0f rows/s, status %s; %d of %d steps verified by hash; %d of %d tenants equal the copy taken before the script\n",
		len(victimKeys), ours.Round(time.Millisecond), rows, float64(rows)/ours.Seconds(), rep.Status, verified, steps, exact, len(victimKeys))
	fmt.Printf("3. raw write-back of the same rows (INSERT … SELECT from an attached copy, one transaction): %v, %.0f rows/s\n", limit.Round(time.Millisecond), float64(rows)/limit.Seconds())
	fmt.Printf("   Lifeline / raw write-back = %.2f (goal ≤ 1.5)\n", ours.Seconds()/limit.Seconds())
	if ls != nil {
		// 2. The baseline: a whole-database point-in-time restore, then the
		// same write-back from the restored copy.
		t1 := time.Now()
		for _, p := range products {
			run(litestream, "restore", "-config", filepath.Join(dir, "litestream.yml"), "-timestamp", moment.Format(time.RFC3339Nano),
				"-o", filepath.Join(dir, p+".litestream.db"), filepath.Join(dir, p+".db"))
		}
		whole := time.Since(t1)
		back := writeBack(dir, ".damaged.db", ".litestream.db", victimKeys)
		fmt.Printf("2. baseline: Litestream whole-database restore %v + write-back %v = %v\n", whole.Round(time.Millisecond), back.Round(time.Millisecond), (whole + back).Round(time.Millisecond))
		fmt.Printf("   Lifeline / baseline = %.2f (goal ≤ 0.50 at 10,000 tenants, ≤ 0.30 at 40,000)\n", ours.Seconds()/(whole+back).Seconds())
	}
	fmt.Printf("4. other tenants' p99 during the restore %v, idle %v: ratio %.2f (goal ≤ 2)\n",
		p99(during).Round(time.Microsecond), p99(idle).Round(time.Microsecond), float64(p99(during))/float64(p99(idle)))
}

// script is the buggy migration: per tenant, deletes and corruption below
// the guard limits.
func script(dbs map[string]*sql.DB, keys []string) {
	for _, k := range keys {
		for p, stmts := range map[string][]string{
			"tracker": {"DELETE FROM insight_links WHERE site_id = ?", "DELETE FROM insight_objects WHERE site_id = ?",
				"DELETE FROM comments WHERE site_id = ?", "UPDATE issues SET title = 'migrated', priority = NULL WHERE site_id = ?"},
			"wiki": {"DELETE FROM page_versions WHERE site_id = ? AND version = 2", "UPDATE pages SET title = upper(title) WHERE site_id = ?"},
		} {
			for _, s := range stmts {
				_, err := dbs[p].Exec(s, k)
				check(err)
			}
		}
	}
}

// writeBack puts the keys' rows of every demo table back into a copy of the
// damaged databases from another copy, in one transaction per product, and
// returns the time it took: what a person does by hand after restoring a
// whole database elsewhere. Lifeline's triggers are dropped from the
// damaged copy first, as a database without Lifeline has none.
func writeBack(dir, damaged, from string, keys []string) time.Duration {
	in := strings.Join(keys, ",")
	var total time.Duration
	for _, p := range products {
		target := filepath.Join(dir, p+".writeback"+from)
		run("cp", filepath.Join(dir, p+damaged), target)
		db, err := sql.Open("sqlite", "file:"+target)
		check(err)
		rows, err := db.Query("SELECT name FROM sqlite_master WHERE type = 'trigger'")
		check(err)
		var triggers []string
		for rows.Next() {
			var n string
			check(rows.Scan(&n))
			triggers = append(triggers, n)
		}
		rows.Close()
		for _, tr := range triggers {
			_, err := db.Exec("DROP TRIGGER " + tr)
			check(err)
		}
		t0 := time.Now()
		conn, err := db.Conn(context.Background())
		check(err)
		_, err = conn.ExecContext(context.Background(), "ATTACH ? AS ref", filepath.Join(dir, p+from))
		check(err)
		_, err = conn.ExecContext(context.Background(), "BEGIN")
		check(err)
		tables := demo.Tables[p]
		for i := len(tables) - 1; i >= 0; i-- {
			_, err := conn.ExecContext(context.Background(), fmt.Sprintf("DELETE FROM main.%s WHERE %s IN (%s)", tables[i][0], tables[i][1], in))
			check(err)
		}
		for _, t := range tables {
			_, err := conn.ExecContext(context.Background(), fmt.Sprintf("INSERT INTO main.%s SELECT * FROM ref.%s WHERE %s IN (%s)", t[0], t[0], t[1], in))
			check(err)
		}
		_, err = conn.ExecContext(context.Background(), "COMMIT")
		check(err)
		total += time.Since(t0)
		conn.Close()
		db.Close()
	}
	return total
}

// compare counts the victims whose rows in every product equal the copy
// taken before the script, byte for byte.
func compare(dir string, dbs map[string]*sql.DB, keys []string) int {
	exact := 0
	refs := map[string]*sql.DB{}
	for _, p := range products {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, p+".before.db")+"?mode=ro")
		check(err)
		defer db.Close()
		refs[p] = db
	}
	for _, k := range keys {
		same := true
		for _, p := range products {
			a, _, err := demo.Digest(context.Background(), dbs[p], p, k)
			check(err)
			b, _, err := demo.Digest(context.Background(), refs[p], p, k)
			check(err)
			same = same && a == b
		}
		if same {
			exact++
		}
	}
	return exact
}

// latency runs single-row reads and writes on tenants that are not victims
// until stop is closed or d passes, and returns each round trip's time.
func latency(db *sql.DB, tenants int, victim map[int]bool, d time.Duration, stop chan struct{}) []time.Duration {
	var out []time.Duration
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
		check(db.QueryRow("SELECT count(*) FROM issues WHERE site_id = ?", site).Scan(&n))
		_, err := db.Exec("UPDATE issues SET estimate = ? WHERE site_id = ? AND id % 24 = 0", float64(i), site)
		check(err)
		out = append(out, time.Since(t0))
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

func startLitestream(bin, dir string) *exec.Cmd {
	var cfg strings.Builder
	cfg.WriteString("dbs:\n")
	for _, p := range products {
		fmt.Fprintf(&cfg, "  - path: %s\n    replicas:\n      - type: file\n        path: %s\n", filepath.Join(dir, p+".db"), filepath.Join(dir, "litestream", p))
	}
	check(os.WriteFile(filepath.Join(dir, "litestream.yml"), []byte(cfg.String()), 0o644))
	cmd := exec.Command(bin, "replicate", "-config", filepath.Join(dir, "litestream.yml"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	time.Sleep(2 * time.Second)
	return cmd
}

func run(name string, args ...string) []byte {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		log.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
