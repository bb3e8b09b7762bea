// Package detect holds Cordon's streaming detectors: the auditor feeds every
// usage decision and every ledger event through an Engine, which keeps
// small fixed-size baselines and reports out-of-context use as
// events.AnomalyDetected payloads.
//
// # Levels
//
// Tokens are short-lived by design, so a baseline that lives only on one
// token never matures. The engine keeps state at three levels:
//
//   - the token: its own networks, clients, rate, lifecycle (revoked,
//     rotated, expired), where it was requested from (TokenIssued.Requested),
//     its probing and sweep windows, its risk signals and cooldowns;
//   - the holder (tenant/holder: the workload, across every token it is
//     issued, rotated or re-issued): networks and clients with their first
//     and last use, the hour-of-week profile, the actions it does (a
//     two-generation Bloom filter), its busiest minute per token, its
//     breadth (distinct resources per route and window);
//   - the tenant: a Bloom filter of the networks and clients its holders'
//     baselines hold, which tells "new for this workload" from "new for the
//     whole tenant", and of the address spaces (/16, /48: AddressSpace)
//     its learnt holders use, which tells a new subnet of the tenant from
//     somewhere the tenant does not run ("foreign").
//
// A holder is learnt after holder_learning (allowed uses over event time);
// from then on a new token of the holder is judged against the holder's
// baseline from its first request, whatever its own learning says. A
// token's own baseline refines it: a value the holder knows but a learnt
// token never used is a weak, token-level signal (half weight, no alert).
// A tenant is learnt like a holder; a workload deployed hours ago, with
// neither its tokens nor itself learnt, is judged by its tenant's address
// spaces. Each anomaly names the level whose baseline it broke in
// Evidence.Details["level"].
//
// # Signals and alerts
//
// Every detector records a signal (with a weight) in the token's risk;
// whether it also alerts alone depends on what it means. A network
// outside every space of the tenant, a new client family, use unlike the
// issuance context that the holder's history does not explain, probing,
// sweeps, forging, volume, use after revocation, several networks at once
// and odd hours alert alone. A new subnet inside the tenant's spaces, a
// lone new action, a holder's first token used away from its (CI)
// requester are risk factors: they alert through risk_score when several
// agree. An episode alerts once: the same (token, network or client)
// does not alert again, risk_score only when a signal joins, a sweep
// that goes on is one sweep; benign evidence settles it — a token
// requested from the new network, rollout_tokens tokens or instances
// using it, or its use promote_after after it was first seen.
//
// # Detectors
//
// Each named by a stable string constant:
//
//   - NewNetwork, NewClient: a network (or client family) outside the
//     holder's baseline (else the learnt token's own, else the tenant's
//     spaces); a network alerts alone only when foreign;
//   - IssuanceMismatch: use from a network and a client unlike where the
//     token was requested and unknown to the holder, from the first request;
//   - NewAction: an allowed action (method, route, scope) the holder did not
//     do within new_action.history ("new terms"); alone when sensitive or
//     several by one token;
//   - ScopeProbing: many distinct denied (route, scope, resource) in a short
//     window, distinct denied actions over a day beyond the holder's usual
//     (slow probing), or enumeration of sequential ids;
//   - ResourceSweep: many distinct resources of one route in a short window
//     (UsageDecided.Resource), denied, or allowed beyond the holder's
//     breadth;
//   - ForgingBurst: many malformed / bad-signature / unknown-key / throttled
//     decisions from one source network (usage without a token id, folded
//     with a count) within a minute, or within an hour from a network no
//     workload's baseline holds; the anomaly's subject is the source
//     (events.AnomalySource), never a token;
//   - OddHours: use at an hour of the week outside the holder's profile;
//   - VolumeSpike: a per-minute rate far above the token's own baseline, or
//     its holder's for a fresh token, and per sensitive scope;
//   - UseAfterRevoke: use after the token was revoked, retired by rotation
//     or expired;
//   - MultiNetwork: use of one token from several distinct networks at once;
//   - RiskScore: the token's weak and strong signals of the recent past
//     combined (1 - Π(1 - weight)) reached the threshold.
//
// Every anomaly carries its evidence (what was seen, the baseline it broke,
// the level), a severity, and the token's risk score with its factors; the
// same (token, detector) pair does not alert again within a cooldown: a
// leaked token replayed 500 times is one anomaly per detector, not 500,
// and an episode (above) is one anomaly however many cooldowns it spans.
// Every token anomaly also names the known networks of the baseline that
// judges the token (Details[DetailKnownNetworks], its level in
// Details[DetailKnownNetworksLevel]): the revoker, which keeps no
// baselines, quarantines a token to them (events.StepNarrow).
//
// # Time, bounds, checkpoints
//
// The engine works in event time only (the envelope's Time, never the wall
// clock), so replaying history as fast as possible yields the same anomalies
// as the live run. Every table — tokens, holders, tenants, source networks —
// holds fixed-size states up to its bound, the least recently seen evicted
// first (Stats exports the bounds and evictions). The state is checkpointed
// (Snapshot) and restored (Restore) so that a restart neither forgets
// baselines nor re-alerts; a snapshot of an older build is refused with
// ErrSnapshotVersion, and the caller starts fresh.
package detect
