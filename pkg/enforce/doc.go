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
// Verified tokens are kept in a bounded cache keyed by the token string, so
// a token seen before costs a map hit; cached tokens are still re-checked
// for time, the denylist and key retirement on every request. A small
// negative cache makes a flood of one bad token cheap.
//
// Each decision is published asynchronously as an events.UsageDecided on
// the USAGE stream: the request path only makes a non-blocking send into a
// bounded buffer, and a full buffer drops (and counts) events instead of
// slowing requests down.
//
// Use Check directly, wrap a handler with Middleware, or put NewProxy in
// front of any HTTP service; Run is the whole `cordon enforce` reverse proxy.
// This package must not import ClickHouse or chDB: enforcers stay small.
package enforce
