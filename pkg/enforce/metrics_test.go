package enforce

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCollectorExportsBounds: the throttle's and the aggregator's bounds
// and counters are metrics.
func TestCollectorExportsBounds(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, func(o *Options) { o.DisableUsage = false; o.ThrottleBurst = 1; o.AggregateSources = 2 })
	for i := range 5 {
		r := readReq(fmt.Sprintf("cordon_junk%d", i))
		r.RemoteAddr = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		e.Check(r)
		e.Check(r) // throttled now
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(e.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue()
			if c := m.GetCounter(); c != nil {
				v = c.GetValue()
			}
			got[mf.GetName()] = v
		}
	}
	want := map[string]float64{
		"cordon_enforcer_throttle_capacity":        DefaultThrottleSources,
		"cordon_enforcer_throttle_sources":         5,
		"cordon_enforcer_throttled_total":          5,
		"cordon_enforcer_throttle_evictions_total": 0,
		"cordon_enforcer_aggregate_capacity":       2,
		"cordon_enforcer_aggregated_total":         10,
		"cordon_enforcer_aggregate_overflow_total": 8, // all but the first source's two entries
		"cordon_enforcer_aggregate_entries":        4, // those two, and "other" for malformed and throttled
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (exported %v), want %v", name, g, ok, v)
		}
	}
}
