package tenant

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/productdb"
)

// Collector exports how many tenants are in each lifecycle state per
// product, read from the products at scrape time.
type Collector struct {
	Service *Service
	desc    *prometheus.Desc
	errs    *prometheus.Desc
}

// NewCollector builds a collector for svc; register it on a private registry.
func NewCollector(svc *Service) *Collector {
	return &Collector{
		Service: svc,
		desc:    prometheus.NewDesc("lifeline_tenants", "Tenants per product and lifecycle state.", []string{"product", "state"}, nil),
		errs:    prometheus.NewDesc("lifeline_product_up", "1 if the product database answered the last scrape.", []string{"product"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.errs }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range c.Service.Products {
		infos, err := p.DB.Tenants(ctx, p.Layout)
		up := 1.0
		if err != nil {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.GaugeValue, up, p.Name)
		counts := map[productdb.State]int{productdb.Active: 0, productdb.Deactivated: 0, productdb.Deleted: 0, productdb.Purged: 0}
		for _, in := range infos {
			counts[orActive(in.State)]++
		}
		for st, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), p.Name, string(st))
		}
	}
}
