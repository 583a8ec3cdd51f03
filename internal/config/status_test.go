package config

import (
	"testing"
	"time"
)

func TestStatusCadenceAndTenantLinkTTL(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.Cadence.D() != time.Hour || c.Status.TenantLinkTTL.D() != 7*24*time.Hour {
		t.Errorf("defaults: cadence %v, tenant link TTL %v; want 1h and 168h", c.Status.Cadence.D(), c.Status.TenantLinkTTL.D())
	}
	c, err = Parse([]byte(good+"status: {cadence: 30m, tenant_link_ttl: 2d}\n"), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.Cadence.D() != 30*time.Minute || c.Status.TenantLinkTTL.D() != 48*time.Hour {
		t.Errorf("set: cadence %v, tenant link TTL %v; want 30m and 48h", c.Status.Cadence.D(), c.Status.TenantLinkTTL.D())
	}
	if _, err := Parse([]byte(good+"status: {cadence: soon}\n"), "/tmp"); err == nil {
		t.Error(`cadence "soon" accepted`)
	}
}
