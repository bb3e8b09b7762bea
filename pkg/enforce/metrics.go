package enforce

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the enforcer's Stats,
// including the bounds of its caches and usage buffer.
func (e *Enforcer) Collector() prometheus.Collector { return &collector{e: e} }

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *Stats) float64
}

type collector struct{ e *Enforcer }

var metrics = func() []metric {
	labels := []string{"enforcer", "service"}
	m := func(name, help string, kind prometheus.ValueType, v func(s *Stats) float64) metric {
		return metric{prometheus.NewDesc("cordon_enforcer_"+name, help, labels, nil), kind, v}
	}
	return []metric{
		m("decisions_total", "Decisions made.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Decisions) }),
		m("denied_total", "Decisions that denied.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Denied) }),
		m("cache_entries", "Verified tokens cached.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.CacheEntries) }),
		m("cache_capacity", "Bound of the verified-token cache.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.CacheCapacity) }),
		m("cache_misses_total", "Decisions that parsed and verified a token.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.CacheMisses) }),
		m("negative_cache_entries", "Rejected token strings cached.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.NegativeEntries) }),
		m("negative_cache_capacity", "Bound of the rejected-token cache.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.NegativeCapacity) }),
		m("throttled_total", "Decisions refused as throttled, without verification.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Throttled) }),
		m("throttle_sources", "Sources with recent failed verifications on record.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.ThrottleSources) }),
		m("throttle_capacity", "Bound of the sources on record for throttling.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.ThrottleCapacity) }),
		m("throttle_evictions_total", "Throttling records dropped to stay within the bound.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.ThrottleEvictions) }),
		m("aggregated_total", "Token-less denials folded into per-source usage events.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.Aggregated) }),
		m("aggregate_entries", "Per-source usage events waiting for the end of the interval.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.AggregateEntries) }),
		m("aggregate_capacity", "Bound of the per-source usage events of one interval.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.AggregateCapacity) }),
		m("aggregate_overflow_total", "Token-less denials folded into the \"other\" source because the table was full.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.AggregateOverflow) }),
		m("keys", "Verification keys held.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.Keys) }),
		m("deny_entries", "Denylist entries held.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.DenyEntries) }),
		m("denylist_revision", "Last applied revision of the denylist bucket.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.DenylistRevision) }),
		m("denylist_staleness_seconds", "Time since the denylist view was last known current.", prometheus.GaugeValue, func(s *Stats) float64 {
			if s.DenylistCurrentAt.IsZero() {
				return -1
			}
			return time.Since(s.DenylistCurrentAt).Seconds()
		}),
		m("broadcast_changes_total", "Denylist broadcast changes applied.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastChanges) }),
		m("broadcast_duplicates_total", "Denylist broadcast changes received again.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastDuplicates) }),
		m("broadcast_gaps_total", "Gaps opened in a revoker origin's broadcast sequence.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastGaps) }),
		m("broadcast_resyncs_total", "Broadcast resyncs answered in full by the origin.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastResyncs) }),
		m("broadcast_resync_fallbacks_total", "Broadcast resyncs without a complete answer (the bucket fills the gap).", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastResyncFallbacks) }),
		m("broadcast_bucket_fills_total", "Broadcast gaps closed from the denylist bucket.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastBucketFills) }),
		m("broadcast_bad_total", "Denylist broadcast messages rejected.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.BroadcastBad) }),
		m("broadcast_origins", "Revoker origins heard recently (live).", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.BroadcastOrigins) }),
		m("quarantined_tokens", "Tokens quarantined now (graduated response, step narrow).", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.Quarantined) }),
		m("step_up_tokens", "Tokens that must step up now (graduated response, step step_up).", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.SteppedUp) }),
		m("quarantine_denied_total", "Decisions denied by a quarantine (reason quarantined).", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.QuarantineDenials) }),
		m("step_up_denied_total", "Decisions denied by a step-up restriction (reason step_up_required).", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.StepUpDenials) }),
		m("deny_unconfirmed", "Denylist entries put by a broadcast that the bucket has not confirmed.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.DenyUnconfirmed) }),
		m("usage_queued", "Usage events waiting to be published.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.UsageQueued) }),
		m("usage_capacity", "Bound of the usage event buffer.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.UsageCapacity) }),
		m("usage_dropped_total", "Usage events dropped because the buffer was full.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageDropped) }),
		m("usage_published_total", "Usage events acknowledged by JetStream.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsagePublished) }),
		m("usage_batches_total", "Usage messages acknowledged by JetStream: batches, or single events in the event format.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageBatches) }),
		m("usage_failed_total", "Usage events that could not be published.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageFailed) }),
		m("usage_spooled_total", "Usage events written to the on-disk spool because JetStream did not acknowledge them.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageSpooled) }),
		m("usage_spool_dropped_total", "Spooled usage messages (batches, or single events in the event format) dropped, oldest first, because the spool was full.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageSpoolDropped) }),
		m("usage_spool_corrupt_total", "Torn or corrupt spool tails cut off when the spool was opened.", prometheus.CounterValue, func(s *Stats) float64 { return float64(s.UsageSpoolCorrupt) }),
		m("usage_spool_pending", "Usage messages (batches, or single events in the event format) in the spool waiting to be republished.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.UsageSpoolPending) }),
		m("usage_spool_bytes", "Bytes of the usage messages waiting in the spool.", prometheus.GaugeValue, func(s *Stats) float64 { return float64(s.UsageSpoolBytes) }),
	}
}()

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	for _, m := range metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s), c.e.opts.ID, c.e.opts.Service)
	}
}
