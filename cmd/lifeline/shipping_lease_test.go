package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

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
