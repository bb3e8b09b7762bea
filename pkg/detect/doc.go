// Package detect holds Cordon's streaming detectors: the auditor feeds every
// usage decision and every ledger event through an Engine, which keeps a small
// fixed-size baseline per token and reports out-of-context use as
// events.AnomalyDetected payloads.
//
// The engine works in event time only (the envelope's Time, never the wall
// clock), so replaying history as fast as possible yields the same anomalies
// as the live run. Its state is bounded — a fixed number of bytes per token
// and a maximum number of tokens, the least recently seen evicted first — and
// it can be checkpointed (Snapshot) and restored (Restore) so that a restart
// neither forgets baselines nor re-alerts.
//
// The detectors, each named by a stable string constant:
//
//   - NewNetwork: first use from a network the token has not been used from;
//   - OddHours: use at an hour of the week outside the token's learned
//     profile, in the time zone of its time-of-use window claim;
//   - ScopeProbing: many distinct denied scopes or routes in a short window,
//     or enumeration of sequential ids;
//   - UseAfterRevoke: use after the token was revoked, retired by rotation
//     or expired;
//   - VolumeSpike: a per-minute request rate far above the token's own
//     baseline;
//   - MultiNetwork: use from several distinct networks at once.
//
// Every anomaly carries its evidence (what was seen, the baseline it broke)
// and a severity, and the same (token, detector) pair does not alert again
// within a cooldown: a leaked token replayed 500 times is one anomaly per
// detector, not 500.
package detect
