// Command capture measures what change capture costs the application's
// writers (issue 3): single-row write transactions per second on a product
// database with capture (protected: triggers on SQLite; publication, REPLICA
// IDENTITY FULL and a replication slot on PostgreSQL) against the same
// database without it, measured in the same run. Protect also installs the
// guards (on SQLite, BEFORE DELETE triggers that count the rows of each
// delete), which are not capture: a guarded variant has them without the
// capture objects. Rounds rotate between the variants so that machine noise
// hits all alike; the ratios of the medians are the result. In-process, it
// also reports transactions per CPU second of the process, which other load
// on the machine disturbs less, and bytes written per transaction.
//
//	go run ./bench/capture [-seconds 3] [-rounds 5] [-mix 50,40,10] [-pg auto|off|postgres://…] [-floor] [-cpuprofile f]
//
// -floor adds a variant on SQLite whose triggers log one constant per
// changed row: the least a trigger-written log can cost (floorDDL).
//
// -cpuprofile writes a CPU profile of the in-process writers, labelled by
// variant: `go tool pprof -tagfocus variant=captured f` shows where one
// variant spends its CPU, compared within the same run.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"lifeline/internal/capture"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
)

const tenants = 200

// mix is the percentage of inserts, updates and deletes.
var mix [3]int

// syncMode is the SQLite writers' synchronous setting.
var syncMode *string

// floorVariant adds the floor variant on SQLite: see floorDDL.
var floorVariant *bool

// floorDDL is the least any trigger-written change log can cost: one row of
// a constant, no image and no time, per changed row, in a table with only a
// rowid, on items (the only table the workload writes). Capture cannot be
// cheaper than this without writing less than a row per change.
const floorDDL = `CREATE TABLE floor_log (seq INTEGER PRIMARY KEY, x);
CREATE TRIGGER floor_i AFTER INSERT ON items BEGIN INSERT INTO floor_log (x) VALUES (0); END;
CREATE TRIGGER floor_u AFTER UPDATE ON items BEGIN INSERT INTO floor_log (x) VALUES (0); END;
CREATE TRIGGER floor_d AFTER DELETE ON items BEGIN INSERT INTO floor_log (x) VALUES (0); END`

// variants are the databases measured, in rotation order; the last one of
// run's is the shipped one.
func variants(engine string, shipped bool) []string {
	vs := []string{"plain", "guarded"}
	if engine == "SQLite" && *floorVariant {
		vs = append(vs, "floor")
	}
	vs = append(vs, "captured")
	if shipped {
		vs = append(vs, "shipped")
	}
	return vs
}

func main() {
	seconds := flag.Float64("seconds", 3, "length of one round")
	rounds := flag.Int("rounds", 5, "rounds per variant")
	syncMode = flag.String("sync", "NORMAL", "SQLite synchronous setting of the writers (NORMAL or FULL)")
	floorVariant = flag.Bool("floor", false, "also measure the floor variant on SQLite: a trigger logging one constant per change, no capture")
	mixFlag := flag.String("mix", "50,40,10", "percent of inserts, updates and deletes")
	pg := flag.String("pg", "auto", "PostgreSQL: auto (start a throwaway server from the local binaries), off, or a server URL whose user may create databases")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the in-process writers, labelled by variant, to this file")
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	round := time.Duration(*seconds * float64(time.Second))
	_, err := fmt.Sscanf(*mixFlag, "%d,%d,%d", &mix[0], &mix[1], &mix[2])
	check(err)
	if mix[0]+mix[1]+mix[2] != 100 {
		log.Fatal("-mix: the three percentages must add up to 100")
	}

	dir, err := os.MkdirTemp("", "lifeline-bench-capture-")
	check(err)
	defer os.RemoveAll(dir)
	fmt.Printf("single-row write transactions (%d%% insert, %d%% update, %d%% delete), %d tenants, %d rounds of %v per variant\n\n", mix[0], mix[1], mix[2], tenants, *rounds, round)

	sqliteDB := func(name string) (dsn, base string, raw *sql.DB) {
		path := filepath.Join(dir, name+".db")
		f, err := os.Create(path)
		check(err)
		f.Close()
		raw, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous("+*syncMode+")")
		check(err)
		return "sqlite:" + name + ".db", dir, raw
	}
	run(ctx, "SQLite", sqliteDB, 1, round, *rounds)
	if shell, err := exec.LookPath("sqlite3"); err == nil {
		fmt.Println()
		runShell(ctx, shell, sqliteDB, *rounds)
	}

	if *pg == "off" {
		return
	}
	server := *pg
	if server == "auto" {
		s, err := pgtest.Start()
		if err != nil {
			fmt.Printf("\nPostgreSQL skipped: %v\n", err)
			return
		}
		defer s.Stop()
		server = s.URL("postgres")
	}
	admin, err := sql.Open("pgx", server)
	check(err)
	defer admin.Close()
	pgDB := func(name string) (string, string, *sql.DB) {
		_, err := admin.Exec("DROP DATABASE IF EXISTS bench_" + name + " WITH (FORCE)")
		check(err)
		_, err = admin.Exec("CREATE DATABASE bench_" + name)
		check(err)
		dsn := replaceDB(server, "bench_"+name)
		raw, err := sql.Open("pgx", dsn)
		check(err)
		return dsn, "", raw
	}
	fmt.Println()
	run(ctx, "PostgreSQL", pgDB, 2, round, *rounds)
}

// cpuTime is the CPU time this process has used (user and system). The
// writers, the driver and, for SQLite, the database engine all run in this
// process, so CPU time per transaction measures the in-process cost of
// capture without the wall-clock noise of other work on a shared machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bytesWritten is what this process has passed to write calls so far (the
// SQLite WAL frames in-process), or 0 where /proc does not say.
func bytesWritten() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

// protect protects a bench database as `lifeline protect` does. Without
// capture, the capture objects are removed again, leaving the guards: the
// capture triggers on SQLite; the publication and REPLICA IDENTITY FULL on
// PostgreSQL (a slot exists only once a Source opens).
func protect(ctx context.Context, dsn, base, product string, withCapture bool) (*productdb.DB, *productdb.Layout) {
	db, err := productdb.Open(ctx, dsn, base)
	check(err)
	s, err := db.Inspect(ctx)
	check(err)
	l, err := productdb.Resolve(productdb.Spec{Product: product, TenantColumn: "site_id", TenantsTable: "sites"}, s)
	check(err)
	check(db.Protect(ctx, l))
	if withCapture {
		return db, l
	}
	stmts := []string{"DROP PUBLICATION " + productdb.CaptureName(product),
		"ALTER TABLE items REPLICA IDENTITY DEFAULT", "ALTER TABLE sites REPLICA IDENTITY DEFAULT"}
	if strings.HasPrefix(dsn, "sqlite:") {
		rows, err := db.SQL().QueryContext(ctx, `SELECT 'DROP TRIGGER ' || name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_cap\_%' ESCAPE '\'`)
		check(err)
		for stmts = nil; rows.Next(); {
			var q string
			check(rows.Scan(&q))
			stmts = append(stmts, q)
		}
		check(rows.Err())
		rows.Close()
	}
	for _, q := range stmts {
		_, err := db.SQL().ExecContext(ctx, q)
		check(err)
	}
	return db, l
}

// run measures one engine on a database per variant, all with the same
// schema and rows: plain; guarded (protected, capture removed: the guards'
// cost); floor (SQLite with -floor, see floorDDL); captured
// but not read (the cost inside the writers' transactions); captured and
// read and acknowledged every second, as `lifeline serve` ships it (adding
// the reader's load on the same machine). Rounds rotate through them.
func run(ctx context.Context, engine string, newDB func(name string) (string, string, *sql.DB), writers int, round time.Duration, rounds int) {
	type variant struct {
		name string
		raw  *sql.DB
		src  capture.Source
		next atomic.Int64
		tps  []float64
		tpc  []float64 // transactions per CPU second of this process
		bpt  []float64 // bytes written per transaction
	}
	var vs []*variant
	for _, name := range variants(engine, true) {
		dsn, base, raw := newDB(name)
		raw.SetMaxOpenConns(writers + 1)
		seed(raw)
		v := &variant{name: name, raw: raw}
		v.next.Store(tenants * 10)
		vs = append(vs, v)
		if name == "floor" {
			_, err := raw.Exec(floorDDL)
			check(err)
		}
		if name == "plain" || name == "floor" {
			continue
		}
		db, l := protect(ctx, dsn, base, "bench_"+name, name != "guarded")
		defer db.Close()
		if name == "guarded" {
			continue
		}
		var err error
		v.src, err = capture.Open(ctx, db, l, capture.Options{})
		check(err)
		defer v.src.Close()
	}

	shipper := vs[len(vs)-1].src
	snap, err := shipper.Snapshot(ctx)
	check(err)
	cur := snap.Cursor()
	check(snap.Close())
	stop := make(chan struct{})
	var shipped atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			for {
				b, err := shipper.Read(ctx, cur, 20000)
				check(err)
				if len(b.Changes) == 0 {
					break
				}
				cur = b.End
				shipped.Add(int64(len(b.Changes)))
				check(shipper.Ack(ctx, cur))
			}
		}
	}()
	for r := range rounds {
		for i := range vs {
			v := vs[(i+r)%len(vs)]
			c0, b0 := cpuTime(), bytesWritten()
			var n float64
			pprof.Do(ctx, pprof.Labels("variant", v.name), func(context.Context) { n = write(v.raw, &v.next, writers, round) })
			v.tps = append(v.tps, n)
			v.tpc = append(v.tpc, n*round.Seconds()/(cpuTime()-c0).Seconds())
			v.bpt = append(v.bpt, float64(bytesWritten()-b0)/(n*round.Seconds()))
		}
	}
	close(stop)
	wg.Wait()

	med := median
	plain, plainCPU := med(vs[0].tps), med(vs[0].tpc)
	fmt.Printf("%s (%d writer connection(s)):\n", engine, writers)
	for _, v := range vs {
		fmt.Printf("  %-9s median %7.0f tx/s  ratio %.2f   rounds %v\n", v.name, med(v.tps), med(v.tps)/plain, rounded(v.tps))
	}
	// Per CPU second of this process: the shipper's reads count in every
	// round (mostly idle outside the shipped variant's); on PostgreSQL the
	// server's work is in other processes and not counted.
	for _, v := range vs {
		fmt.Printf("  %-9s median %7.0f tx per CPU second  ratio %.2f\n", v.name, med(v.tpc), med(v.tpc)/plainCPU)
	}
	// Bytes this process wrote: the WAL on SQLite (and, in every round, the
	// shipper's deletes of acknowledged log rows); on PostgreSQL the server
	// writes, so there it would only be the client's traffic.
	if engine == "SQLite" {
		for _, v := range vs {
			fmt.Printf("  %-9s median %7.0f bytes written per tx\n", v.name, med(v.bpt))
		}
	}
	fmt.Printf("  capture alone (captured/guarded): ratio %.2f, per CPU second %.2f\n",
		med(vs[len(vs)-2].tps)/med(vs[1].tps), med(vs[len(vs)-2].tpc)/med(vs[1].tpc))
	fmt.Printf("  (%d changes shipped from the shipped database meanwhile)\n", shipped.Load())
	for _, v := range vs {
		v.raw.Close()
	}
}

// runShell measures the same workload through the system's sqlite3 shell:
// the C library an application links, preparing every statement as it
// comes. Each round pipes a script of single-statement transactions to a
// fresh shell on each variant's database.
func runShell(ctx context.Context, shell string, newDB func(name string) (string, string, *sql.DB), rounds int) {
	const statements = 20000
	names := variants("SQLite", false)
	var paths []string
	next := make([]int64, len(names))
	for i, name := range names {
		next[i] = tenants * 10
		dsn, base, raw := newDB("shell_" + name)
		seed(raw)
		if name == "floor" {
			_, err := raw.Exec(floorDDL)
			check(err)
		}
		raw.Close()
		paths = append(paths, filepath.Join(base, strings.TrimPrefix(dsn, "sqlite:")))
		if name == "guarded" || name == "captured" {
			db, _ := protect(ctx, dsn, base, "bench_shell_"+name, name == "captured")
			check(db.Close())
		}
	}
	tps, tpc := make([][]float64, len(names)), make([][]float64, len(names))
	rng := rand.New(rand.NewPCG(1, 2))
	for r := range rounds {
		for i := range paths {
			k := (i + r) % len(paths)
			var b strings.Builder
			b.WriteString("PRAGMA synchronous = " + *syncMode + ";\n")
			for range statements {
				switch x := rng.IntN(100); {
				case x < mix[0]:
					next[k]++
					fmt.Fprintf(&b, "INSERT INTO items (id, site_id, title, n, body) VALUES (%d, %d, 'new item', %d, 'a short body of text');\n", next[k], next[k]%tenants, next[k])
				case x < mix[0]+mix[1]:
					fmt.Fprintf(&b, "UPDATE items SET n = n + 1, title = 'updated' WHERE id = %d;\n", rng.Int64N(next[k]))
				default:
					fmt.Fprintf(&b, "DELETE FROM items WHERE id = %d;\n", rng.Int64N(next[k]))
				}
			}
			cmd := exec.Command(shell, "-bail", paths[k])
			cmd.Stdin = strings.NewReader(b.String())
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				log.Fatalf("sqlite3: %v\n%s", err, out)
			}
			tps[k] = append(tps[k], statements/time.Since(start).Seconds())
			tpc[k] = append(tpc[k], statements/(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()).Seconds())
		}
	}
	plain := median(tps[0])
	fmt.Printf("SQLite through %s (C library, every statement prepared anew):\n", shell)
	for i, name := range names {
		fmt.Printf("  %-9s median %7.0f tx/s  ratio %.2f   rounds %v\n", name, median(tps[i]), median(tps[i])/plain, rounded(tps[i]))
	}
	for i, name := range names {
		fmt.Printf("  %-9s median %7.0f tx per CPU second of the shell  ratio %.2f\n", name, median(tpc[i]), median(tpc[i])/median(tpc[0]))
	}
	last := len(names) - 1
	fmt.Printf("  capture alone (captured/guarded): ratio %.2f, per CPU second %.2f\n",
		median(tps[last])/median(tps[1]), median(tpc[last])/median(tpc[1]))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// seed creates the schema and ten items per tenant.
func seed(raw *sql.DB) {
	for _, q := range []string{
		"CREATE TABLE sites (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
		"CREATE TABLE items (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL REFERENCES sites(id), title TEXT NOT NULL, n BIGINT, body TEXT)",
		"CREATE INDEX items_site ON items (site_id)",
	} {
		_, err := raw.Exec(q)
		check(err)
	}
	tx, err := raw.Begin()
	check(err)
	for s := range tenants {
		_, err := tx.Exec("INSERT INTO sites (id, name) VALUES ($1, $2)", s, fmt.Sprintf("site %d", s))
		check(err)
		for i := range 10 {
			_, err := tx.Exec("INSERT INTO items (id, site_id, title, n, body) VALUES ($1, $2, $3, $4, $5)", s*10+i, s, "item", i, "a short body of text")
			check(err)
		}
	}
	check(tx.Commit())
}

// write runs single-row autocommit transactions from writers connections
// for d and returns transactions per second.
func write(raw *sql.DB, next *atomic.Int64, writers int, d time.Duration) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(deadline) {
				var err error
				switch r := rng.IntN(100); {
				case r < mix[0]:
					id := next.Add(1)
					_, err = raw.Exec("INSERT INTO items (id, site_id, title, n, body) VALUES ($1, $2, $3, $4, $5)", id, id%tenants, "new item", id, "a short body of text")
				case r < mix[0]+mix[1]:
					_, err = raw.Exec("UPDATE items SET n = n + 1, title = $1 WHERE id = $2", "updated", rng.Int64N(next.Load()))
				default:
					_, err = raw.Exec("DELETE FROM items WHERE id = $1", rng.Int64N(next.Load()))
				}
				check(err)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}

// replaceDB points a postgres:// URL at another database.
func replaceDB(raw, db string) string {
	u, err := url.Parse(raw)
	check(err)
	u.Path = "/" + db
	return u.String()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
