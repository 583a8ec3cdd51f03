// Command notify measures notice delivery: how long it takes to put the
// notices of one update to 100,000 subscribers on the job queue, and how
// many mails per second reach a real SMTP server (mailpit) through it.
//
// Each number comes with a baseline measured in the same run on the same
// machine, because the machines are shared and noisy:
//   - enqueueing is set against plain multi-row INSERTs of as many rows, in
//     batches of the same size, into the same state store;
//   - queued delivery is set against the same SMTP sender driven directly
//     by as many goroutines as there are workers, with no queue and no
//     records.
//
// The subscribers are seeded straight into the state store (100,000
// double opt-ins through the domain would take minutes and measure
// nothing of delivery). The update is published through the domain, which
// records the 100,000 owed notices in its transaction.
//
//	go run ./bench/notify [-notices 100000] [-deliver 3000] [-workers 10]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lifeline/internal/notify"
	"lifeline/internal/notify/mailpit"
	"lifeline/internal/state"
	"lifeline/internal/status"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/notify:", err)
		os.Exit(1)
	}
}

func run() error {
	notices := flag.Int("notices", 100_000, "subscribers, hence notices owed by one update")
	deliver := flag.Int("deliver", 3000, "mails to time through mailpit, queued and direct")
	workers := flag.Int("workers", 10, "email workers (and goroutines of the direct baseline)")
	batch := flag.Int("batch", 1000, "notices per queue insert")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-bench-notify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mp, err := mailpit.Start(dir)
	if err != nil {
		return err
	}
	defer mp.Close()
	st, err := state.Open(ctx, "sqlite:"+filepath.Join(dir, "state.db"), "", nil)
	if err != nil {
		return err
	}
	defer st.Close()
	stat, err := status.New(ctx, status.Config{Store: st})
	if err != nil {
		return err
	}
	if _, err := stat.PutComponent(ctx, status.Component{Name: status.Text{En: "tracker"}}); err != nil {
		return err
	}
	mail, err := notify.NewSMTPSender(notify.SMTPConfig{Host: "127.0.0.1", Port: mp.SMTPPort, From: "status@bench.test", TLS: notify.TLSNone, Idle: *workers})
	if err != nil {
		return err
	}
	defer mail.Close()
	svc, err := notify.New(ctx, notify.Config{Store: st, Status: stat, Email: mail, PageName: "Bench", PublicURL: "https://status.bench.test",
		EmailRate: 1e9, EmailWorkers: *workers, DrainBatch: *batch, FetchPoll: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	fmt.Printf("bench/notify: %d subscribers, SQLite state store, %d CPUs, %s\n\n", *notices, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))

	t0 := time.Now()
	if err := seed(ctx, st, *notices, *batch); err != nil {
		return err
	}
	fmt.Printf("seed %d confirmed subscribers: %s\n", *notices, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if _, err := stat.OpenIncident(ctx, status.NewIncident{Name: status.Text{En: "Tracker down"}, Draft: status.Draft{Impact: status.ImpactMinor,
		Body: status.Body{Situation: status.Text{En: "Pages fail to load."}, Support: status.Text{En: "help@example.com"},
			Known: status.Text{En: "Tracker only."}, Unknown: status.Text{En: "The cause."}},
		Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.PartialOutage}}}}); err != nil {
		return err
	}
	publish := time.Since(t0)
	owed, err := stat.Notices(ctx, status.NoticePending, *notices+1)
	if err != nil {
		return err
	}
	fmt.Printf("publish one update, recording %d owed notices in its transaction: %s\n", len(owed), publish.Round(time.Millisecond))

	base, err := plainInserts(ctx, st, *notices, *batch)
	if err != nil {
		return err
	}
	t0 = time.Now()
	moved, err := svc.Drain(ctx)
	if err != nil {
		return err
	}
	enqueue := time.Since(t0)
	fmt.Printf("\nenqueue %d notices (owed notices → unique River jobs, %d per insert): %s = %.0f notices/s\n", moved, *batch, enqueue.Round(time.Millisecond), float64(moved)/enqueue.Seconds())
	fmt.Printf("baseline: plain INSERT of %d rows, %d per statement: %s = %.0f rows/s\n", *notices, *batch, base.Round(time.Millisecond), float64(*notices)/base.Seconds())
	fmt.Printf("enqueue / plain insert time: %.1fx\n", enqueue.Seconds()/base.Seconds())

	direct, err := directSends(ctx, mail, *deliver, *workers)
	if err != nil {
		return err
	}
	before, err := mp.Count()
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := svc.Start(ctx); err != nil {
		return err
	}
	for {
		n, err := mp.Count()
		if err != nil {
			return err
		}
		if n-before >= *deliver {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			return fmt.Errorf("only %d of %d mails arrived in 10 minutes", n-before, *deliver)
		}
		time.Sleep(20 * time.Millisecond)
	}
	queued := time.Since(t0)
	stop, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = svc.Stop(stop)
	qRate, dRate := float64(*deliver)/queued.Seconds(), float64(*deliver)/direct.Seconds()
	fmt.Printf("\ndelivery to mailpit through the queue (%d workers, sent records, no rate limit): %d mails in %s = %.0f mails/s\n", *workers, *deliver, queued.Round(time.Millisecond), qRate)
	fmt.Printf("baseline: the same SMTP sender, %d goroutines, no queue: %d mails in %s = %.0f mails/s\n", *workers, *deliver, direct.Round(time.Millisecond), dRate)
	fmt.Printf("queued / direct rate: %.2f\n", qRate/dRate)
	fmt.Printf("at the default smtp.rate of 10/s, %d notices take %s\n", *notices, (time.Duration(*notices/10) * time.Second).String())
	return nil
}

// seed inserts confirmed email subscribers to every component.
func seed(ctx context.Context, st *state.Store, n, batch int) error {
	tx, err := st.DB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UnixMicro()
	for i := 0; i < n; i += batch {
		var q strings.Builder
		q.WriteString(`INSERT INTO status_subscribers (id, channel, address, components, lang, confirmed_at, created_at, updated_at) VALUES `)
		var args []any
		for j := i; j < min(i+batch, n); j++ {
			if j > i {
				q.WriteString(", ")
			}
			q.WriteString("(?, 'email', ?, '[]', 'en', ?, ?, ?)")
			args = append(args, fmt.Sprintf("bench%07d", j), fmt.Sprintf("admin%07d@example.com", j), now, now, now)
		}
		if _, err := tx.ExecContext(ctx, st.Rebind(q.String()), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// plainInserts is the enqueue baseline: n rows of four columns into a
// table of their own, batch rows per statement, one transaction per batch
// (as the drainer commits per batch).
func plainInserts(ctx context.Context, st *state.Store, n, batch int) (time.Duration, error) {
	if _, err := st.DB().ExecContext(ctx, "CREATE TABLE bench_rows (a TEXT, b TEXT, c TEXT, d BIGINT)"); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for i := 0; i < n; i += batch {
		var q strings.Builder
		q.WriteString("INSERT INTO bench_rows (a, b, c, d) VALUES ")
		var args []any
		for j := i; j < min(i+batch, n); j++ {
			if j > i {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?)")
			args = append(args, fmt.Sprintf("bench%07d", j), "update", "email", int64(j))
		}
		if _, err := st.DB().ExecContext(ctx, st.Rebind(q.String()), args...); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

// directSends is the delivery baseline: the sender alone.
func directSends(ctx context.Context, mail *notify.SMTPSender, n, workers int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				m := notify.Message{ID: fmt.Sprintf("direct.%d@bench.test", i), To: fmt.Sprintf("direct%07d@example.com", i),
					Subject: "[Bench] Tracker down: Investigating", Text: "Pages fail to load.\n"}
				if err := mail.Send(ctx, m, func(context.Context) error { return nil }); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(t0), first
}
