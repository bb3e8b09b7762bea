// Package enforce decides, locally and in microseconds, whether a request may
// use a Cordon token, and reports every decision as a usage event.
//
// An Enforcer sits in front of one service. It holds the issuer's public
// keys and the denylist, both replicated from JetStream KV buckets by
// watches (Start), so that a decision never makes a network call: the token
// carries its signed context and the enforcer checks that context against
// the request. A valid signature is never enough: audience, scope, source
// network, environment, time-of-use window and device binding are checked
// too, and every deny names one reason from a closed set (Reason).
//
// Revocation has two paths. The denylist bucket is the durable record,
// replicated by the watch; besides, every revoker replica broadcasts each
// denylist change on core NATS (no JetStream in the way) and a heartbeat
// saying how far it has got. The enforcer applies a broadcast change at
// once, whatever the bucket says (a pending revocation that JetStream has
// not accepted yet included), never lets an older bucket delete or expiry
// remove it, fills a gap in a replica's sequence by asking it (a resync)
// or from the bucket, and counts its view current only as of the last
// heartbeat by which it had every announced change (Options.MaxStaleness).
//
// Between alerting and revoking, the graduated response restricts a token
// for a while through the same denylist and broadcast: a quarantine
// (events.DenyKeyNarrow) keeps only reads (events.IsReadScope) of its
// scopes from its holder's known networks (else ReasonQuarantined), a
// step-up (events.DenyKeyStepUp) allows only a device-bound token with its
// client certificate (else ReasonStepUpRequired). Both are checked after
// every other check has passed, until the record's end or the entry's
// delete (a release); a record that cannot be read restricts as tightly as
// its step can until it is deleted. While no token is restricted a
// decision pays one atomic load for them.
//
// Verified tokens are kept in a bounded cache keyed by the token string, so
// a token seen before costs a map hit; cached tokens are still re-checked
// for time, the denylist and key retirement on every request. A small
// negative cache makes a flood of one bad token cheap, and a bounded
// per-source record of failed verifications makes a flood of many forged
// tokens cheap too: past a burst, the source's tokens that are not already
// verified are refused (ReasonThrottled, 429) without running Ed25519 for a
// cool-down, while its verified tokens keep working.
//
// The HTTP middleware (and so the proxy) first requires a canonical request
// path (no encoded slash or backslash, no dot or empty segment, no double
// encoding, no control byte or look-alike separator; else ReasonBadPath,
// 400) and rewrites the request to it, so the path a route matched is the
// path the service receives. It strips method- and URL-override headers,
// incoming X-Cordon-* headers and, from peers that are not trusted proxies,
// client-supplied identity headers before calling the next handler.
//
// Each decision is published asynchronously as an events.UsageDecided on
// the USAGE stream: the request path only makes a non-blocking send into a
// bounded buffer, and a full buffer drops (and counts) events instead of
// slowing requests down. By default decisions travel in usage batches
// (events.UsageBatchBuilder): one JetStream message per batch of a
// (tenant, holder), cut at Options.UsageBatch records, UsageBatchBytes or
// UsageLinger; Options.UsageFormat "event" publishes one JSON event per
// decision instead, for auditors older than batches. Denials that name no token (no token, a malformed
// or forged one, a throttled source, a bad path, no route) are folded per
// source, reason and key id into one event per interval whose Count says
// how many there were, so a flood of them is a handful of events. Besides
// the route pattern, an event carries the request's context: the resource
// (the values of the matched route's path parameters, "42" for
// /invoices/{id} on /invoices/42, bounded), the client (the user agent
// normalised by events.NormalizeClient, off the request path and cached per
// user agent) and the TLS client certificate's thumbprint. Nothing that
// holds a token's prefix is recorded: such a path value or user agent is
// cut where the token would start.
//
// Use Check directly, wrap a handler with Middleware, or put NewProxy in
// front of any HTTP service; services/enforcer runs the whole `cordon
// enforce` reverse proxy (NATS, TLS, metrics) on top of this library.
// This package must not import ClickHouse or chDB: enforcers stay small.
package enforce
