package auditor

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/pkg/detect"
)

// Collector returns a Prometheus collector of the auditor's counters and,
// when the detector is a detect.Engine, of its bounded state (tokens,
// holders, tenants and sources held against their bounds, evictions, bytes
// per entry, anomalies by detector).
func (a *Auditor) Collector() prometheus.Collector { return &collector{a: a} }

type collector struct{ a *Auditor }

var (
	mEvents = prometheus.NewDesc("cordon_auditor_events_written_total",
		"Events written to the store, by kind (usage, ledger, anomaly).", []string{"kind"}, nil)
	mDead        = prometheus.NewDesc("cordon_auditor_dead_letters_total", "Messages moved to the dead letters.", nil, nil)
	mBatches     = prometheus.NewDesc("cordon_auditor_batches_total", "Batches written.", nil, nil)
	mCombined    = prometheus.NewDesc("cordon_auditor_combined_inserts_total", "Usage inserts that carried the groups of several partitions (of cordon_auditor_batches_total).", nil, nil)
	mAnomIns     = prometheus.NewDesc("cordon_auditor_anomaly_inserts_total", "Anomaly inserts, each of one partition's anomalies or, combined, of every partition's within a short linger.", nil, nil)
	mWriteErrors = prometheus.NewDesc("cordon_auditor_write_errors_total", "Failed batch write attempts (each retried).", nil, nil)
	mObserved    = prometheus.NewDesc("cordon_auditor_observed_total", "Usage events analysed by the detectors.", nil, nil)
	mInFlight    = prometheus.NewDesc("cordon_auditor_batches_in_flight", "Batches being written.", nil, nil)
	mSeq         = prometheus.NewDesc("cordon_auditor_stream_sequence",
		"Stream sequences: seen (handled by the detectors) and written (durable and acknowledged).", []string{"stream", "state"}, nil)
	mTokens    = prometheus.NewDesc("cordon_detect_tokens", "Tokens with detector state in memory.", nil, nil)
	mMaxTokens = prometheus.NewDesc("cordon_detect_tokens_max", "Bound on the tokens with detector state (max_tokens).", nil, nil)
	mEvicted   = prometheus.NewDesc("cordon_detect_evictions_total", "Tokens forgotten to stay within the bound.", nil, nil)
	mStateB    = prometheus.NewDesc("cordon_detect_state_bytes_per_token", "Fixed detector state per token.", nil, nil)
	mLevel     = prometheus.NewDesc("cordon_detect_entries", "Entries with detector state in memory, by level (token, holder, tenant, source).", []string{"level"}, nil)
	mLevelMax  = prometheus.NewDesc("cordon_detect_entries_max", "Bound on the entries with detector state, by level (max_tokens, max_holders, max_tenants, max_sources).", []string{"level"}, nil)
	mLevelEv   = prometheus.NewDesc("cordon_detect_entry_evictions_total", "Entries forgotten to stay within the bound, by level.", []string{"level"}, nil)
	mLevelB    = prometheus.NewDesc("cordon_detect_state_bytes", "Fixed detector state per entry, by level.", []string{"level"}, nil)
	mPart      = prometheus.NewDesc("cordon_auditor_partition_events_total",
		"Per owned USAGE partition: events analysed, rows written, anomalies raised, dead letters, duplicate batches skipped.", []string{"partition", "kind"}, nil)
	mPartSeq = prometheus.NewDesc("cordon_auditor_partition_sequence",
		"Per owned USAGE partition: the USAGE sequence seen (handled) and written (rows and anomalies durable).", []string{"partition", "state"}, nil)
	mPartLag   = prometheus.NewDesc("cordon_auditor_partition_lag", "Per owned USAGE partition: its messages not yet delivered.", []string{"partition"}, nil)
	mPartOwned = prometheus.NewDesc("cordon_auditor_partitions_owned", "USAGE partitions this instance runs (of cordon_auditor_partitions).", nil, nil)
	mParts     = prometheus.NewDesc("cordon_auditor_partitions", "USAGE partitions of the stream.", nil, nil)
	mAnomalies = prometheus.NewDesc("cordon_detect_anomalies_total", "Anomalies raised, by detector.", []string{"detector"}, nil)
	mSuppr     = prometheus.NewDesc("cordon_detect_suppressed_total", "Detections silenced by the cooldown, by detector.", []string{"detector"}, nil)

	// What the partitions share (knowledge.go).
	mFacts      = prometheus.NewDesc("cordon_auditor_shared_facts", "Facts the partitions' detectors share that this instance holds (workload networks, tenants' address spaces, learnt tenants).", nil, nil)
	mFactsOut   = prometheus.NewDesc("cordon_auditor_shared_facts_written_total", "Facts this instance wrote to the knowledge bucket.", nil, nil)
	mFactsBad   = prometheus.NewDesc("cordon_auditor_shared_entries_skipped_total", "Knowledge bucket entries skipped: unreadable (invalid), or facts that did not fit the write queue (dropped).", []string{"why"}, nil)
	mGateWaits  = prometheus.NewDesc("cordon_auditor_shared_waits_total", "Times a partition waited for the others to read far enough for a shared answer to be final.", nil, nil)
	mGateGaveUp = prometheus.NewDesc("cordon_auditor_shared_waits_given_up_total", "Waits that ran out (--share-wait): the partition judged without a partition that did not move.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mEvents, mDead, mBatches, mCombined, mWriteErrors, mObserved, mInFlight, mSeq,
		mPart, mPartSeq, mPartLag, mPartOwned, mParts,
		mTokens, mMaxTokens, mEvicted, mStateB, mLevel, mLevelMax, mLevelEv, mLevelB, mAnomalies, mSuppr,
		mFacts, mFactsOut, mFactsBad, mGateWaits, mGateGaveUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if k := c.a.o.Knowledge; k != nil {
		ks := k.Stats()
		gauge(mFacts, float64(ks.Facts))
		counter(mFactsOut, ks.Written)
		counter(mFactsBad, ks.Invalid, "invalid")
		counter(mFactsBad, ks.Dropped, "dropped")
		counter(mGateWaits, ks.Waits)
		counter(mGateGaveUp, ks.GaveUp)
	}
	counter(mEvents, st.Usage, "usage")
	counter(mEvents, st.Ledger, "ledger")
	counter(mEvents, st.Anomalies, "anomaly")
	counter(mDead, st.Dead)
	counter(mBatches, st.Batches)
	counter(mCombined, st.CombinedInserts)
	counter(mAnomIns, st.AnomalyInserts)
	counter(mWriteErrors, st.WriteErrors)
	counter(mObserved, st.Observed)
	gauge(mInFlight, float64(st.InFlight))
	gauge(mSeq, float64(st.SeenUsageSeq), "USAGE", "seen")
	gauge(mSeq, float64(st.LastUsageSeq), "USAGE", "written")
	gauge(mSeq, float64(st.SeenLedgerSeq), "TOKENS", "seen")
	gauge(mSeq, float64(st.LastLedgerSeq), "TOKENS", "written")
	gauge(mParts, float64(st.PartitionCount))
	gauge(mPartOwned, float64(len(st.Partitions)))
	for _, p := range st.Partitions {
		l := strconv.Itoa(p.Partition)
		counter(mPart, p.Events, l, "events")
		counter(mPart, p.Rows, l, "rows")
		counter(mPart, p.Anomalies, l, "anomalies")
		counter(mPart, p.Dead, l, "dead")
		counter(mPart, p.Duplicates, l, "duplicates")
		gauge(mPartSeq, float64(p.Seen), l, "seen")
		gauge(mPartSeq, float64(p.Written), l, "written")
		gauge(mPartLag, float64(p.Lag), l)
	}
	// The detector figures are the sum over the owned partitions' engines
	// (each holds its share of the bounds: PartitionBounds).
	var ds detect.Stats
	var any bool
	for _, d := range c.a.Detectors() {
		e, ok := d.(interface{ Stats() detect.Stats })
		if !ok {
			continue
		}
		ds = addStats(ds, e.Stats(), any)
		any = true
	}
	if !any {
		return
	}
	gauge(mTokens, float64(ds.Tokens))
	gauge(mMaxTokens, float64(ds.MaxTokens))
	counter(mEvicted, ds.Evictions)
	gauge(mStateB, float64(ds.StateBytes))
	for _, l := range []struct {
		name       string
		n, max, sz int
		ev         uint64
	}{
		{"token", ds.Tokens, ds.MaxTokens, ds.StateBytes, ds.Evictions},
		{"holder", ds.Holders, ds.MaxHolders, ds.HolderStateBytes, ds.HolderEvictions},
		{"tenant", ds.Tenants, ds.MaxTenants, ds.TenantStateBytes, ds.TenantEvictions},
		{"source", ds.Sources, ds.MaxSources, ds.SourceStateBytes, ds.SourceEvictions},
	} {
		gauge(mLevel, float64(l.n), l.name)
		gauge(mLevelMax, float64(l.max), l.name)
		counter(mLevelEv, l.ev, l.name)
		gauge(mLevelB, float64(l.sz), l.name)
	}
	for name, n := range ds.Anomalies {
		counter(mAnomalies, n, name)
	}
	for name, n := range ds.Suppressed {
		counter(mSuppr, n, name)
	}
}

// addStats sums detector figures over partitions (the per-entry sizes are
// the same in every engine).
func addStats(t, s detect.Stats, started bool) detect.Stats {
	if !started {
		t.Anomalies, t.Suppressed = map[string]uint64{}, map[string]uint64{}
		t.StateBytes, t.HolderStateBytes, t.TenantStateBytes, t.SourceStateBytes = s.StateBytes, s.HolderStateBytes, s.TenantStateBytes, s.SourceStateBytes
	}
	t.Tokens += s.Tokens
	t.MaxTokens += s.MaxTokens
	t.Evictions += s.Evictions
	t.Holders += s.Holders
	t.MaxHolders += s.MaxHolders
	t.HolderEvictions += s.HolderEvictions
	t.Tenants += s.Tenants
	t.MaxTenants += s.MaxTenants
	t.TenantEvictions += s.TenantEvictions
	t.Sources += s.Sources
	t.MaxSources += s.MaxSources
	t.SourceEvictions += s.SourceEvictions
	for k, v := range s.Anomalies {
		t.Anomalies[k] += v
	}
	for k, v := range s.Suppressed {
		t.Suppressed[k] += v
	}
	return t
}

var mPartCkpt = prometheus.NewDesc("cordon_auditor_partition_checkpoint_timestamp_seconds",
	"Per owned USAGE partition: when it last saved its checkpoint (Unix time; an idle partition saves none until it reads something).", []string{"partition"}, nil)

// checkpointCollector reports when each partition last saved its
// checkpoint (last is the service's record of it).
type checkpointCollector struct {
	prometheus.Collector
	last func() map[int]time.Time
}

// Describe implements prometheus.Collector.
func (c checkpointCollector) Describe(ch chan<- *prometheus.Desc) {
	c.Collector.Describe(ch)
	ch <- mPartCkpt
}

// Collect implements prometheus.Collector.
func (c checkpointCollector) Collect(ch chan<- prometheus.Metric) {
	c.Collector.Collect(ch)
	for p, at := range c.last() {
		ch <- prometheus.MustNewConstMetric(mPartCkpt, prometheus.GaugeValue, float64(at.UnixNano())/1e9, strconv.Itoa(p))
	}
}
