package revoker

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/pkg/alert"
)

// counters are the revoker's monotonic counters.
type counters struct {
	revoked, already, rules       atomic.Uint64
	denyWrites, denySkipped       atomic.Uint64
	deadLetters, anomalies, stale atomic.Uint64
	broadcasts, broadcastErrors   atomic.Uint64
	heartbeats, ledgerRetries     atomic.Uint64
	resyncs, resyncsIncomplete    atomic.Uint64
	restricted, released          atomic.Uint64
	mu                            sync.Mutex
	responses, requests           map[string]uint64
}

func (c *counters) init() {
	c.responses = map[string]uint64{}
	c.requests = map[string]uint64{}
}

func (c *counters) response(outcome string) {
	c.mu.Lock()
	c.responses[outcome]++
	c.mu.Unlock()
}

func (c *counters) resync(complete bool) {
	c.resyncs.Add(1)
	if !complete {
		c.resyncsIncomplete.Add(1)
	}
}

func (c *counters) request(code string) {
	c.mu.Lock()
	c.requests[code]++
	c.mu.Unlock()
}

// Stats is a snapshot of the revoker's counters and bounded state.
type Stats struct {
	// Revoked counts TokenRevoked events published; Already tokens found
	// already revoked; Rules denylist rules created or extended.
	Revoked, Already, Rules uint64
	// DenyWrites counts token entries the ledger consumer created;
	// DenySkipped the revocations it found already denied or expired.
	DenyWrites, DenySkipped uint64
	// DeadLetters counts poison messages moved aside.
	DeadLetters uint64
	// Anomalies counts anomalies handled; Stale those skipped as too old.
	Anomalies, Stale uint64
	// Responses counts anomaly responses by outcome (alert.Outcome).
	Responses map[string]uint64
	// Requests counts cordon.cmd.revoke replies by code ("ok" or an error code).
	Requests map[string]uint64
	// IndexTokens is the number of live tokens indexed (bound:
	// Options.MaxTokens); IndexEvicted those dropped over the bound.
	IndexTokens  int
	IndexEvicted uint64
	// IndexRewatches and AdminLedgerRewatches count the ledger consumers
	// the token index and the admin-ledger view re-created because they
	// fell behind (a lost server).
	IndexRewatches, AdminLedgerRewatches uint64
	// WindowTokens is the number of tokens remembered for combination
	// rules; IdempotencyKeys the remembered request replies.
	WindowTokens    int
	IdempotencyKeys int
	// Keys is the number of signing keys known.
	Keys int
	// Alerts are the alert dispatcher's counters.
	Alerts alert.Stats
	// Broadcasts counts denylist changes broadcast on core NATS,
	// Heartbeats the heartbeat messages sent, BroadcastErrors the changes
	// and heartbeats NATS did not take.
	Broadcasts, Heartbeats, BroadcastErrors uint64
	// Resyncs counts resync requests answered, ResyncsIncomplete those
	// answered Complete=false (the ring no longer reached them).
	Resyncs, ResyncsIncomplete uint64
	// LedgerPending is the number of revocations JetStream has not
	// accepted yet; PendingChanges the broadcast changes not yet written
	// to the bucket (carried by every heartbeat); LedgerRetries the
	// retrier's attempts.
	LedgerPending, PendingChanges int
	LedgerRetries                 uint64
	// Restricted counts restrictions (narrow, step_up) put in force or
	// extended, automatic or by command; Released those lifted by command.
	Restricted, Released uint64
}

// Stats returns a snapshot of the counters.
func (r *Revoker) Stats() Stats {
	s := Stats{
		Revoked: r.stats.revoked.Load(), Already: r.stats.already.Load(), Rules: r.stats.rules.Load(),
		DenyWrites: r.stats.denyWrites.Load(), DenySkipped: r.stats.denySkipped.Load(),
		DeadLetters: r.stats.deadLetters.Load(), Anomalies: r.stats.anomalies.Load(), Stale: r.stats.stale.Load(),
		IndexTokens: r.index.len(), IndexEvicted: r.index.evicted.Load(),
		WindowTokens: r.engine.Tracked(), IdempotencyKeys: r.idem.len(), Keys: r.keyring.Len(),
		Alerts: r.alerts.Stats(), Responses: map[string]uint64{}, Requests: map[string]uint64{},
		Broadcasts: r.stats.broadcasts.Load(), Heartbeats: r.stats.heartbeats.Load(), BroadcastErrors: r.stats.broadcastErrors.Load(),
		Resyncs: r.stats.resyncs.Load(), ResyncsIncomplete: r.stats.resyncsIncomplete.Load(),
		LedgerPending: r.pend.len(), PendingChanges: r.bc.pendingLen(), LedgerRetries: r.stats.ledgerRetries.Load(),
		Restricted: r.stats.restricted.Load(), Released: r.stats.released.Load(),
	}
	if r.idx != nil {
		s.IndexRewatches = r.idx.Stats().Rewatches
	}
	if r.adminLedger != nil {
		s.AdminLedgerRewatches = r.adminLedger.Stats().Rewatches
	}
	r.stats.mu.Lock()
	for k, v := range r.stats.responses {
		s.Responses[k] = v
	}
	for k, v := range r.stats.requests {
		s.Requests[k] = v
	}
	r.stats.mu.Unlock()
	return s
}

var (
	newDesc = func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cordon_revoker_"+name, help, labels, nil)
	}
	mRevoked      = newDesc("tokens_revoked_total", "TokenRevoked ledger events published.")
	mAlready      = newDesc("tokens_already_revoked_total", "Tokens found already revoked by a revocation.")
	mRules        = newDesc("denylist_rules_written_total", "Denylist rules (holder, kid, tenant, before) created or extended.")
	mDenyWrites   = newDesc("denylist_entries_written_total", "Token entries written to the denylist from the ledger.")
	mDenySkipped  = newDesc("denylist_entries_skipped_total", "Ledger revocations already denied or expired.")
	mDead         = newDesc("dead_letters_total", "Poison messages moved to the dead-letter subject.")
	mAnomalies    = newDesc("anomalies_total", "Anomalies handled.")
	mStale        = newDesc("anomalies_stale_total", "Anomalies skipped because the token must have expired.")
	mResponses    = newDesc("anomaly_responses_total", "Anomaly responses by outcome.", "outcome")
	mRequests     = newDesc("requests_total", "cordon.cmd.revoke replies by code.", "code")
	mIndex        = newDesc("index_tokens", "Live tokens in the index (bounded by max tokens).")
	mIndexMax     = newDesc("index_tokens_max", "Bound of the token index.")
	mIndexEvicted = newDesc("index_evicted_total", "Tokens dropped from the full index.")
	mIndexRewatch = newDesc("index_rewatches_total", "Ledger consumers the token index re-created because it fell behind.")
	mAdminRewatch = newDesc("admin_ledger_rewatches_total", "Ledger consumers the admin-ledger view re-created because it fell behind.")
	mWindow       = newDesc("window_tokens", "Tokens remembered for combination rules.")
	mIdem         = newDesc("idempotency_keys", "Remembered request replies (bounded).")
	mKeys         = newDesc("signing_keys", "Signing keys known for verifying callers.")
	mAlertsOpen   = newDesc("alerts_open", "Open alerts, one per token (bounded).")
	mAlertSent    = newDesc("alerts_sent_total", "Alert notifications delivered, by sink.", "sink")
	mAlertRetry   = newDesc("alerts_retries_total", "Alert delivery retries, by sink.", "sink")
	mAlertFailed  = newDesc("alerts_failed_total", "Alert notifications given up, by sink.", "sink")
	mAlertDropped = newDesc("alerts_dropped_total", "Alert notifications dropped on a full queue, by sink.", "sink")
	mBroadcasts   = newDesc("denylist_broadcasts_total", "Denylist changes broadcast on core NATS.")
	mHeartbeats   = newDesc("denylist_heartbeats_total", "Denylist broadcast heartbeats sent.")
	mBcastErrors  = newDesc("denylist_broadcast_errors_total", "Denylist changes and heartbeats NATS did not take.")
	mResyncs      = newDesc("denylist_resyncs_total", "Resync requests answered, by whether the ring still reached them.", "complete")
	mPending      = newDesc("ledger_pending", "Revocations broadcast whose ledger events or denylist entries JetStream has not accepted yet.")
	mPendChanges  = newDesc("denylist_pending_changes", "Broadcast denylist changes not yet written to the bucket.")
	mRetries      = newDesc("ledger_retries_total", "Attempts to write pending revocations to JetStream.")
	mRestricted   = newDesc("tokens_restricted_total", "Restrictions (narrow, step_up) put in force or extended.")
	mReleased     = newDesc("token_restrictions_released_total", "Restrictions lifted by command.")
)

// Describe implements prometheus.Collector.
func (r *Revoker) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mRevoked, mAlready, mRules, mDenyWrites, mDenySkipped, mDead, mAnomalies, mStale,
		mResponses, mRequests, mIndex, mIndexMax, mIndexEvicted, mWindow, mIdem, mKeys, mAlertsOpen, mAlertSent, mAlertRetry,
		mAlertFailed, mAlertDropped, mBroadcasts, mHeartbeats, mBcastErrors, mResyncs, mPending, mPendChanges, mRetries,
		mRestricted, mReleased} {
		ch <- d
	}
	ch <- mIndexRewatch
	ch <- mAdminRewatch
}

// Collect implements prometheus.Collector: register the Revoker itself.
func (r *Revoker) Collect(ch chan<- prometheus.Metric) {
	s := r.Stats()
	c := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	g := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	c(mRevoked, s.Revoked)
	c(mAlready, s.Already)
	c(mRules, s.Rules)
	c(mDenyWrites, s.DenyWrites)
	c(mDenySkipped, s.DenySkipped)
	c(mDead, s.DeadLetters)
	c(mAnomalies, s.Anomalies)
	c(mStale, s.Stale)
	c(mRestricted, s.Restricted)
	c(mReleased, s.Released)
	for k, v := range s.Responses {
		c(mResponses, v, k)
	}
	for k, v := range s.Requests {
		c(mRequests, v, k)
	}
	g(mIndex, s.IndexTokens)
	g(mIndexMax, r.o.MaxTokens)
	c(mIndexEvicted, s.IndexEvicted)
	c(mIndexRewatch, s.IndexRewatches)
	c(mAdminRewatch, s.AdminLedgerRewatches)
	g(mWindow, s.WindowTokens)
	g(mIdem, s.IdempotencyKeys)
	g(mKeys, s.Keys)
	g(mAlertsOpen, s.Alerts.Open)
	c(mBroadcasts, s.Broadcasts)
	c(mHeartbeats, s.Heartbeats)
	c(mBcastErrors, s.BroadcastErrors)
	c(mResyncs, s.Resyncs-s.ResyncsIncomplete, "true")
	c(mResyncs, s.ResyncsIncomplete, "false")
	g(mPending, s.LedgerPending)
	g(mPendChanges, s.PendingChanges)
	c(mRetries, s.LedgerRetries)
	for name, ss := range s.Alerts.Sinks {
		c(mAlertSent, ss.Sent, name)
		c(mAlertRetry, ss.Retries, name)
		c(mAlertFailed, ss.Failed, name)
		c(mAlertDropped, ss.Dropped, name)
	}
}
