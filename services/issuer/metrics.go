package issuer

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the issuer's monotonic counters.
type counters struct {
	issued, rotated atomic.Uint64
	// Leak intake: reports read, reports that were live tokens, and
	// requests refused (signature, rate, malformed).
	leakReports, leakCompromised, leakRefused atomic.Uint64
	mu                                        sync.Mutex
	refused                                   map[string]uint64 // by error code
}

func (c *counters) refuse(err error) {
	_, code := Classify(err)
	c.mu.Lock()
	if c.refused == nil {
		c.refused = map[string]uint64{}
	}
	c.refused[code]++
	c.mu.Unlock()
}

var (
	descIssued      = prometheus.NewDesc("cordon_issuer_tokens_issued_total", "Tokens minted.", nil, nil)
	descRotated     = prometheus.NewDesc("cordon_issuer_tokens_rotated_total", "Tokens rotated.", nil, nil)
	descRefused     = prometheus.NewDesc("cordon_issuer_requests_refused_total", "Issue and rotate requests refused, by error code.", []string{"code"}, nil)
	descTokens      = prometheus.NewDesc("cordon_issuer_registry_tokens", "Tokens in the registry, by status.", []string{"status"}, nil)
	descKeys        = prometheus.NewDesc("cordon_issuer_signing_keys", "Signing keys that verify tokens.", nil, nil)
	descLeaks       = prometheus.NewDesc("cordon_issuer_leak_reports_total", "Leaked-token reports read.", nil, nil)
	descCompromised = prometheus.NewDesc("cordon_issuer_leak_compromised_total", "Leak reports that were live tokens of this issuer (a critical anomaly each).", nil, nil)
	descLeakRefused = prometheus.NewDesc("cordon_issuer_leak_requests_refused_total", "Leak report requests refused: bad signature, unknown key, rate limit, malformed body.", nil, nil)
	descRewatch     = prometheus.NewDesc("cordon_issuer_registry_rewatches_total", "Ledger consumers the registry re-created because it fell behind (a lost server).", nil, nil)
)

type collector struct{ i *Issuer }

// Collector exposes the issuer's counters and registry size to Prometheus.
// The issuer does not serve it on its API: `cordon issuer
// --metrics-listen ADDR` does, on a listener of its own, like every
// service.
func (i *Issuer) Collector() prometheus.Collector { return collector{i} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIssued, descRotated, descRefused, descTokens, descKeys, descRewatch, descLeaks, descCompromised, descLeakRefused} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	i := c.i
	ch <- prometheus.MustNewConstMetric(descIssued, prometheus.CounterValue, float64(i.stats.issued.Load()))
	ch <- prometheus.MustNewConstMetric(descRotated, prometheus.CounterValue, float64(i.stats.rotated.Load()))
	i.stats.mu.Lock()
	for code, n := range i.stats.refused {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(n), code)
	}
	i.stats.mu.Unlock()
	byStatus := map[string]int{}
	for _, t := range i.reg.list(ListFilter{}, i.now()) {
		byStatus[t.Status]++
	}
	for status, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(descTokens, prometheus.GaugeValue, float64(n), status)
	}
	ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(len(i.keys.ids())))
	ch <- prometheus.MustNewConstMetric(descLeaks, prometheus.CounterValue, float64(i.stats.leakReports.Load()))
	ch <- prometheus.MustNewConstMetric(descCompromised, prometheus.CounterValue, float64(i.stats.leakCompromised.Load()))
	ch <- prometheus.MustNewConstMetric(descLeakRefused, prometheus.CounterValue, float64(i.stats.leakRefused.Load()))
	ch <- prometheus.MustNewConstMetric(descRewatch, prometheus.CounterValue, float64(i.RegistryStats().Rewatches))
}
