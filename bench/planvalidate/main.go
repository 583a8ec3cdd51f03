// Command planvalidate measures how long a plan's validation takes for
// many targets (issue 4: the April plan has 883), against a baseline in
// the same run: reading the same targets' tenant rows directly, once per
// product, which is the least any validation has to do.
//
//	go run ./bench/planvalidate [-tenants 10000] [-targets 883] [-rounds 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"lifeline/internal/capture"
	"lifeline/internal/demo"
	"lifeline/internal/plan"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func main() {
	tenants := flag.Int("tenants", 10000, "tenants (sites) in each of the two products")
	targets := flag.Int("targets", 883, "app targets in the plan")
	rounds := flag.Int("rounds", 3, "rounds; the median is reported")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the validations to this file")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lifeline-planvalidate-")
	check(err)
	defer os.RemoveAll(dir)
	check(demo.Generate(ctx, dir, demo.Options{Tenants: *tenants}))
	store, err := state.Open(ctx, "sqlite:state.db", dir, nil)
	check(err)
	defer store.Close()
	svc := &tenant.Service{Store: store, Retention: 30 * 24 * time.Hour, Owner: "bench:1"}
	for _, name := range []string{"tracker", "wiki"} {
		db, err := productdb.Open(ctx, "sqlite:"+name+".db", dir)
		check(err)
		defer db.Close()
		spec := productdb.Spec{Product: name, TenantColumn: "site_id", TenantsTable: "sites"}
		if name == "tracker" {
			spec.Apps = map[string][]string{"insight": {"insight_objects", "insight_links"}}
		}
		l, err := tenant.Protect(ctx, store, db, spec, "bench")
		check(err)
		// Change capture, as on any installation that takes backups: its
		// triggers and tables are part of the schema validation inspects.
		src, err := capture.Open(ctx, db, l, capture.Options{})
		check(err)
		defer src.Close()
		svc.Products = append(svc.Products, &tenant.Product{Name: name, DB: db, Layout: l})
	}
	plans, err := plan.OpenService(ctx, &plan.Service{Tenants: svc})
	check(err)

	var keys []string
	for i := 1; i <= *targets; i++ {
		keys = append(keys, fmt.Sprintf("%d/tracker/insight", i))
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	// Wall time moves with the other work on a shared machine; the
	// process's CPU time much less: both are reported.
	var base, validate, baseCPU, validateCPU []time.Duration
	for r := 0; r < *rounds; r++ {
		t0, c0 := time.Now(), cpu()
		for i := 1; i <= *targets; i++ {
			for _, p := range svc.Products {
				_, err := p.DB.Tenant(ctx, p.Layout, fmt.Sprint(i))
				check(err)
			}
		}
		base, baseCPU = append(base, time.Since(t0)), append(baseCPU, cpu()-c0)
		t0, c0 = time.Now(), cpu()
		p, err := plans.Create(ctx, plan.CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: keys, Reason: "bench", Requester: "bench"})
		check(err)
		validate, validateCPU = append(validate, time.Since(t0)), append(validateCPU, cpu()-c0)
		if p.Status != plan.Validated {
			log.Fatalf("the plan is %s: %s", p.Status, p.Note)
		}
	}
	b, v, bc, vc := median(base), median(validate), median(baseCPU), median(validateCPU)
	fmt.Printf("%d tenants, %d app targets, median of %d rounds (wall / CPU)\n", *tenants, *targets, *rounds)
	fmt.Printf("baseline: read each target's tenant row in both products: %v / %v\n", b.Round(time.Millisecond), bc.Round(time.Millisecond))
	fmt.Printf("plan create (validate, report, store): %v / %v (%.0f targets/s)\n", v.Round(time.Millisecond), vc.Round(time.Millisecond), float64(*targets)/v.Seconds())
	fmt.Printf("ratio to baseline: %.1f wall, %.1f CPU\n", v.Seconds()/b.Seconds(), vc.Seconds()/bc.Seconds())
}

// cpu is the CPU time this process has used, user and system.
func cpu() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
