package backup

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// laggingSource reports a replication slot's byte lag, as PostgreSQL's does.
type laggingSource struct{ *fakeSource }

func (laggingSource) LagBytes(context.Context) (int64, error) { return 12345, nil }

func TestMetricsReportBacklogAlertAndSlotLag(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := NewMetrics(prometheus.NewRegistry())
	b.ship.Metrics = m
	b.ship.Source = laggingSource{b.src}
	b.ship.BacklogLimit = 2
	b.src.write("acme", 1)
	b.mustShip(t)
	if got := testutil.ToFloat64(m.slotLag.WithLabelValues("tracker")); got != 12345 {
		t.Errorf("slot lag metric = %v, want 12345", got)
	}
	if got := testutil.ToFloat64(m.changes.WithLabelValues("tracker")); got != 0 {
		t.Errorf("the snapshot counted %v shipped changes", got)
	}
	b.faulty.SetDown(true)
	b.src.write("acme", 3)
	if _, err := b.ship.Ship(ctx); err == nil {
		t.Fatal("shipping into a store that is down succeeded")
	}
	if testutil.ToFloat64(m.alert.WithLabelValues("tracker")) != 1 || testutil.ToFloat64(m.failures.WithLabelValues("tracker")) != 1 {
		t.Error("a backlog over its limit while the store is down must fire the alert and count the failure")
	}
	b.faulty.SetDown(false)
	b.mustShip(t)
	if testutil.ToFloat64(m.alert.WithLabelValues("tracker")) != 0 || testutil.ToFloat64(m.changes.WithLabelValues("tracker")) != 3 {
		t.Error("after recovery the alert must clear and the 3 changes count as shipped")
	}
}
