package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/demo"
	"lifeline/internal/pgtest"
)

// serveProc is a real `lifeline serve` process.
type serveProc struct {
	cmd *exec.Cmd
	log *syncBuffer
}

func startServeProc(t *testing.T, bin, config string) *serveProc {
	t.Helper()
	p := &serveProc{cmd: exec.Command(bin, "--config", config, "serve", "--listen", "127.0.0.1:0"), log: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
	return p
}

// holds reports whether the process logged taking product's lease.
func (p *serveProc) holds(product string) bool {
	return regexp.MustCompile(`lease holder" product=` + product + ` `).MatchString(p.log.String())
}

// Two serve processes share one PostgreSQL state store while writers commit:
// exactly one ships each product; after a kill -9 of that one the other
// takes over; the repository then holds every committed change once, with
// no gap and no overlap, and rebuilds every tenant exactly.
func TestTwoServesShipEachProductOnceAndTakeOverAfterKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := demo.Generate(context.Background(), dir, demo.Options{Tenants: 20}); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "lifeline.yaml")
	cfg := strings.Replace(demo.Config, "state: sqlite:lifeline-state.db", "state: "+pgtest.NewDB(t)+"\nshipping: {interval: 200ms}", 1)
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, config: config, env: map[string]string{}}
	c.must("protect")
	bin := buildLifeline(t)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "tracker.db")+"?_pragma=busy_timeout(20000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	stopWriters := startWriters(t, db, 3, 20, 100000)
	// The second starts once the first serves: two serves that set up a new
	// state store at the same moment race in the status page's seeding.
	first := startServeProc(t, bin, config)
	waitFor(t, "the first serve to listen", func() bool { return strings.Contains(first.log.String(), "serving on") })
	serves := []*serveProc{first, startServeProc(t, bin, config)}
	var holder, other *serveProc
	waitFor(t, "a serve to take the tracker lease", func() bool {
		for i, p := range serves {
			if p.holds("tracker") {
				holder, other = p, serves[1-i]
				return true
			}
		}
		return false
	})
	// Let both run side by side for a while: the standby must not ship.
	shippedAt := func() uint64 {
		var st struct {
			Products []struct {
				Product string `json:"product"`
				LastPos uint64 `json:"last_pos"`
				Shipper string `json:"shipper"`
			} `json:"products"`
		}
		if err := json.Unmarshal([]byte(c.must("backup", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Products[0].LastPos
	}
	start := shippedAt()
	waitFor(t, "the holder to ship several rounds", func() bool { return shippedAt() > start+50 })
	if other.holds("tracker") {
		t.Fatalf("both serves took the tracker lease:\n%s\n---\n%s", holder.log, other.log)
	}

	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = holder.cmd.Wait()
	waitFor(t, "the other serve to take over after the kill -9", func() bool { return other.holds("tracker") })
	before := shippedAt()
	waitFor(t, "the new holder to ship", func() bool { return shippedAt() > before+50 })
	stopWriters()

	// Everything committed reaches the repository through the survivor: a
	// round that began after the writers stopped found nothing left.
	stopped := time.Now()
	waitFor(t, "the survivor to ship everything", func() bool {
		var st struct {
			Products []struct {
				Backlog int64     `json:"backlog"`
				Checked time.Time `json:"checked"`
			} `json:"products"`
		}
		if err := json.Unmarshal([]byte(c.must("backup", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Products[0].Backlog == 0 && st.Products[0].Checked.After(stopped.Add(time.Second))
	})
	if err := other.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := other.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, other.log)
	}
	c.must("backup", "verify")
	repositoryEqualsLive(t, c, db, 20)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// `backup run` maintains only while it holds the product's lease. A trigger
// in the state store hands tracker's lease to another process the moment
// the run records its segment (a serve taking over while the run stalled):
// the run's maintenance, due to merge the 16 small segments now catalogued,
// records nothing and says why on stderr, and the lease stays with the
// other process. Once the lease is free again the next run merges them.
func TestBackupRunMaintainsOnlyWhileHoldingTheLease(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 3)
	dir := filepath.Dir(c.config)
	open := func(name string) *sql.DB {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, name)+"?_pragma=busy_timeout(20000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	app, st := open("tracker.db"), open("lifeline-state.db")
	do := func(db *sql.DB, query string, args ...any) {
		t.Helper()
		if _, err := db.Exec(query, args...); err != nil {
			t.Fatal(err)
		}
	}
	// merges counts tracker's catalogued segments that hold another.
	merges := func() int {
		t.Helper()
		var n int
		err := st.QueryRow(`SELECT count(*) FROM backup_objects a JOIN backup_objects b
			ON a.product = b.product AND a.key <> b.key AND a.kind = 'segment' AND b.kind = 'segment'
			AND a.first_pos <= b.first_pos AND b.last_pos <= a.last_pos WHERE a.product = 'tracker'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	c.must("backup", "run") // the snapshot
	for i := range backup.MergeRun {
		if i > 0 {
			c.must("backup", "run") // one small segment each
		}
		do(app, "UPDATE projects SET name = name || '!' WHERE site_id = 1")
	}
	if n := merges(); n != 0 {
		t.Fatalf("%d merges before %d segments were shipped", n, backup.MergeRun)
	}
	do(st, fmt.Sprintf(`CREATE TRIGGER take_over AFTER INSERT ON backup_objects WHEN NEW.product = 'tracker' AND NEW.kind = 'segment'
		BEGIN UPDATE backup_leases SET owner = 'elsewhere:1', lease_until = %d WHERE product = 'tracker'; END`, time.Now().Add(time.Hour).UnixMicro()))
	r := c.run("backup", "run")
	if r.code != 0 || !strings.Contains(r.err, "tracker: ") || !strings.Contains(r.err, "lost the shipping lease") {
		t.Fatalf("backup run whose lease was taken over: exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.err)
	}
	if n := merges(); n != 0 {
		t.Fatalf("backup run recorded %d merges after another process took its lease", n)
	}
	var owner string
	if err := st.QueryRow(`SELECT owner FROM backup_leases WHERE product = 'tracker'`).Scan(&owner); err != nil || owner != "elsewhere:1" {
		t.Fatalf("the lease is %q (%v); want it left with the process that took it over", owner, err)
	}

	do(st, `DROP TRIGGER take_over`)
	do(st, `UPDATE backup_leases SET lease_until = 0 WHERE product = 'tracker'`)
	c.must("backup", "run")
	if merges() == 0 {
		t.Fatal("the run holding the lease did not merge the small segments either")
	}
	c.must("backup", "verify")
}
