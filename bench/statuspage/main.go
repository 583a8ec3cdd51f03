// Command statuspage measures how many requests per second the public status
// page serves on loopback while an incident is open: `/` and
// /api/v2/summary.json, plain and gzipped, next to /healthz on the same
// server as the baseline (the cheapest handler there is, so the ratio says
// what the page costs on this machine, whatever else is running on it).
//
// It seeds a SQLite state store in a temporary folder with a realistic page
// (a critical incident with hourly updates, 30 past incidents, maintenance),
// starts the real HTTP handler, and drives it with wrk.
//
//	go run ./bench/statuspage [-duration 10s] [-connections 64] [-threads 2]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/state"
	"lifeline/internal/status"
	"lifeline/internal/web"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/statuspage:", err)
		os.Exit(1)
	}
}

func run() error {
	duration := flag.Duration("duration", 10*time.Second, "how long wrk drives each URL")
	conns := flag.Int("connections", 64, "wrk connections")
	threads := flag.Int("threads", 2, "wrk threads")
	rounds := flag.Int("rounds", 3, "rounds over all URLs; the median of each URL is reported")
	flag.Parse()
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk not found: apt-get install wrk (.ci/run does)")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-bench-status-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := state.Open(ctx, "sqlite:"+filepath.Join(dir, "state.db"), "", nil)
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := status.New(ctx, status.Config{Store: st})
	if err != nil {
		return err
	}
	if err := seed(ctx, svc); err != nil {
		return err
	}
	page := &web.StatusPage{Service: svc, Name: "Bench Status", URL: "http://127.0.0.1"}
	if err := page.Refresh(ctx); err != nil {
		return err
	}
	srv := &web.Server{Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Status: page}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go page.Run(runCtx) // polls the store as in production
	base := "http://" + ln.Addr().String()

	cases := []struct{ name, path, gzip string }{
		{"/healthz (baseline)", "/healthz", ""},
		{"/ (page, gzip)", "/", "gzip"},
		{"/ (page, plain)", "/", ""},
		{"summary.json (gzip)", "/api/v2/summary.json", "gzip"},
		{"summary.json (plain)", "/api/v2/summary.json", ""},
	}
	fmt.Printf("status page on loopback, %d CPUs, wrk -t%d -c%d -d%s, median of %d interleaved rounds\n\n", runtime.NumCPU(), *threads, *conns, *duration, *rounds)
	// Rounds interleave the URLs, so a burst of load from something else on
	// the machine hits all of them alike instead of one.
	rps := make([][]float64, len(cases))
	size := make([]float64, len(cases))
	for range *rounds {
		for i, c := range cases {
			args := []string{"-t", strconv.Itoa(*threads), "-c", strconv.Itoa(*conns), "-d", duration.String(), "-H", "Accept-Language: en"}
			if c.gzip != "" {
				args = append(args, "-H", "Accept-Encoding: gzip")
			}
			out, err := exec.Command(wrk, append(args, base+c.path)...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("wrk %s: %v\n%s", c.path, err, out)
			}
			r, sz, err := parseWrk(out)
			if err != nil {
				return err
			}
			rps[i], size[i] = append(rps[i], r), sz
		}
	}
	fmt.Println("| URL | req/s (median) | min–max | ratio to /healthz | bytes/response |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: |")
	baseline := median(rps[0])
	for i, c := range cases {
		fmt.Printf("| %s | %.0f | %.0f–%.0f | %.2f | %.0f |\n", c.name, median(rps[i]), slices.Min(rps[i]), slices.Max(rps[i]), median(rps[i])/baseline, size[i])
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

var (
	rpsLine   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	totalLine = regexp.MustCompile(`(\d+) requests in [0-9.]+\w+, ([0-9.]+)(B|KB|MB|GB) read`)
	non2xx    = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk returns requests per second and bytes per response.
func parseWrk(out []byte) (float64, float64, error) {
	if m := non2xx.FindSubmatch(out); m != nil {
		return 0, 0, fmt.Errorf("wrk saw %s error responses:\n%s", m[1], out)
	}
	m := rpsLine.FindSubmatch(out)
	t := totalLine.FindSubmatch(out)
	if m == nil || t == nil {
		return 0, 0, fmt.Errorf("cannot read wrk output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	n, _ := strconv.ParseFloat(string(t[1]), 64)
	read, _ := strconv.ParseFloat(string(t[2]), 64)
	read *= map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[string(t[3])]
	return rps, read / n, nil
}

// seed builds the page of a bad day: four products, a critical incident
// with eight hourly updates, 30 resolved incidents over 90 days, and two
// maintenances.
func seed(ctx context.Context, svc *status.Service) error {
	g, err := svc.PutGroup(ctx, status.Group{Name: status.Text{En: "Products", Zh: "产品"}})
	if err != nil {
		return err
	}
	names := []string{"tracker", "wiki", "chat", "storage"}
	for i, n := range names {
		if _, err := svc.PutComponent(ctx, status.Component{Name: status.Text{En: n}, GroupID: g.ID, Position: i}); err != nil {
			return err
		}
	}
	pct := func(v float64) *float64 { return &v }
	body := status.Body{
		Situation:      status.Text{En: "A maintenance script deleted 883 customer sites. We are restoring them from backups.", Zh: "一个维护脚本删除了 883 个客户站点。我们正在从备份中恢复。"},
		AffectedGroups: []status.AffectedGroup{{Kind: "product", Name: "tracker", Count: 883}, {Kind: "product", Name: "wiki", Count: 640}},
		Timeline:       status.Text{En: "Most sites within 6 hours; all within 24 hours.", Zh: "大部分站点 6 小时内恢复，全部在 24 小时内恢复。"}, TimelineConfidence: status.Medium,
		FullerPictureAt: time.Now().Add(2 * time.Hour), PercentRestored: pct(41.5), PercentConfidence: status.High,
		DataLoss: status.Text{En: "At most the last 5 minutes before deletion."}, DataLossConfidence: status.Low,
		Support:        status.Text{En: "Open a ticket at support.example.com."},
		SupportNoLogin: status.Text{En: "Call +1 555 0100 or mail help@example.com from your admin address."},
		Known:          status.Text{En: "Which sites were deleted and when."}, Unknown: status.Text{En: "Whether attachments uploaded in the last minute are affected."},
	}
	inc, err := svc.OpenIncident(ctx, status.NewIncident{Name: status.Text{En: "Sites deleted by a maintenance script", Zh: "维护脚本删除了站点"},
		Draft: status.Draft{Impact: status.ImpactCritical, Body: body, Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.MajorOutage}, {ComponentID: "wiki", Status: status.PartialOutage}}}})
	if err != nil {
		return err
	}
	for range 7 {
		if _, err := svc.PostUpdate(ctx, inc.ID, status.Draft{Status: status.Identified, Body: body}); err != nil {
			return err
		}
	}
	minor := status.Body{Situation: status.Text{En: "Search was slow."}, Support: status.Text{En: "Ticket."}, Known: status.Text{En: "Index rebuild."}, Unknown: status.Text{En: "None."}}
	for i := range 30 {
		old, err := svc.OpenIncident(ctx, status.NewIncident{Name: status.Text{En: fmt.Sprintf("Slow search #%d", i)},
			Draft: status.Draft{Impact: status.ImpactMinor, Body: minor, Components: []status.ComponentChange{{ComponentID: names[i%4], Status: status.DegradedPerformance}}}})
		if err != nil {
			return err
		}
		if _, err := svc.Resolve(ctx, old.ID, status.Draft{Body: minor}); err != nil {
			return err
		}
	}
	for _, start := range []time.Time{time.Now().Add(-time.Minute), time.Now().Add(48 * time.Hour)} {
		if _, err := svc.ScheduleMaintenance(ctx, status.NewMaintenance{Name: status.Text{En: "Storage upgrade"}, ScheduledFor: start, ScheduledUntil: start.Add(2 * time.Hour),
			Components: []string{"storage"}, Draft: status.Draft{Body: status.Body{Situation: status.Text{En: "Uploads paused."}}}}); err != nil {
			return err
		}
	}
	return nil
}
