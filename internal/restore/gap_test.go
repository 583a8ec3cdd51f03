package restore

import (
	"fmt"
	"strings"
	"testing"

	"lifeline/internal/fault"
)

// A segment removed from a file repository leaves a gap before the moment.
// Tenant 2 changed only inside the gap, and the snapshot compacted after
// the moment holds it as it was then: --skip-broken restores it from that
// snapshot. Tenant 3 changed between the moment and that snapshot, so its
// state at the moment needs the missing changes: it is skipped and
// reported. Without --skip-broken the restore is refused, naming the
// missing positions, and nothing changes.
func TestSkipBrokenRestoresTenantsTheGapDoesNotTouch(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		if e.Name != "sqlite" {
			t.Skip("the repository side is the same for both engines; SQLite is enough")
		}
		b := setup(t, e, 4)
		b.exec(t, `UPDATE docs SET title = 'in the gap' WHERE site_id = 2`)
		M := b.shipNow(t)
		atM := b.dump(t, 2)
		objs, err := b.repo.Objects(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		lost := objs[len(objs)-1]
		b.exec(t, `UPDATE docs SET title = 'after the moment' WHERE site_id = 3`)
		b.shipNow(t)
		if o, err := b.ship.Compact(ctx, 1); err != nil || o == nil {
			t.Fatalf("compacted %+v, %v", o, err)
		}
		b.april(t, 2)
		b.april(t, 3)
		b.shipNow(t)
		if err := removeFile(b.blobDir, lost.Key); err != nil {
			t.Fatal(err)
		}
		damaged, damaged3 := b.dump(t), b.dump(t, 3)
		missing := fmt.Sprintf("positions %d..%d are missing", lost.First, lost.Last)

		_, err = b.svc.Run(ctx, Request{Tenants: []string{"2", "3"}, To: M, Actor: "tester"})
		if fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), missing) || !strings.Contains(fault.HintOf(err), "--skip-broken") {
			t.Fatalf("without --skip-broken: %v (hint %q); want a refusal naming the missing positions", err, fault.HintOf(err))
		}
		sameDump(t, "after the refusal", damaged, b.dump(t))

		rep, err := b.svc.Run(ctx, Request{Tenants: []string{"2", "3"}, To: M, SkipBroken: true, Actor: "tester"})
		if err == nil || fault.ExitStatus(err) != 1 {
			t.Fatalf("--skip-broken with a tenant the gap holds: %v", err)
		}
		for _, tr := range rep.Tenants {
			p := tr.Products[0]
			switch want := map[string]string{"2": "restored", "3": "skipped"}[tr.Tenant]; {
			case p.Status != want:
				t.Errorf("tenant %s: %s, want %s (%s)", tr.Tenant, p.Status, want, p.Error)
			case want == "skipped" && !strings.Contains(p.Error, missing):
				t.Errorf("tenant %s skipped without naming the gap: %s", tr.Tenant, p.Error)
			}
		}
		sameDump(t, "tenant 2 restored past the gap", atM, b.dump(t, 2))
		sameDump(t, "tenant 3 skipped", damaged3, b.dump(t, 3))
	})
}
