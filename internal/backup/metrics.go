package backup

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the shipper's Prometheus metrics, registered on the private
// registry that serve exposes at /metrics.
type Metrics struct {
	lag      *prometheus.GaugeVec
	changes  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	failures *prometheus.CounterVec
	backlog  *prometheus.GaugeVec
	alert    *prometheus.GaugeVec
	slotLag  *prometheus.GaugeVec
}

// NewMetrics registers the shipper metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeline_ship_lag_seconds",
			Help: "Age of the oldest change not yet in the repository (0 when nothing waits): the RPO right now."}, []string{"product"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeline_shipped_changes_total",
			Help: "Row changes shipped into the repository."}, []string{"product"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeline_shipped_bytes_total",
			Help: "Bytes of segment objects written."}, []string{"product"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeline_ship_failures_total",
			Help: "Shipping attempts that failed (blob store down, capture error, drift)."}, []string{"product"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeline_ship_backlog_changes",
			Help: "Changes waiting in the product database to be shipped."}, []string{"product"}),
		alert: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeline_ship_backlog_alert",
			Help: "1 when the backlog is over its limit: shipping is failing and the product database is holding the changes."}, []string{"product"}),
		slotLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lifeline_capture_slot_lag_bytes",
			Help: "WAL the PostgreSQL replication slot holds beyond what was acknowledged (the server cannot recycle it)."}, []string{"product"}),
	}
	reg.MustRegister(m.lag, m.changes, m.bytes, m.failures, m.backlog, m.alert, m.slotLag)
	return m
}

func (m *Metrics) shipped(product string, changes int, bytes int64) {
	m.changes.WithLabelValues(product).Add(float64(changes))
	m.bytes.WithLabelValues(product).Add(float64(bytes))
}

func (m *Metrics) health(product string, backlog int64, oldest, now time.Time, failed, over bool) {
	if failed {
		m.failures.WithLabelValues(product).Inc()
	}
	lag := 0.0
	if backlog > 0 && !oldest.IsZero() {
		lag = now.Sub(oldest).Seconds()
	}
	m.lag.WithLabelValues(product).Set(lag)
	m.backlog.WithLabelValues(product).Set(float64(backlog))
	alert := 0.0
	if over {
		alert = 1
	}
	m.alert.WithLabelValues(product).Set(alert)
}

func (m *Metrics) slot(product string, bytes int64) {
	m.slotLag.WithLabelValues(product).Set(float64(bytes))
}
