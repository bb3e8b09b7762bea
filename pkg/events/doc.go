// Package events is Cordon's event contract: the envelope every state change
// travels in, the typed payloads, the NATS subjects they are published on, and
// the JetStream streams and KV buckets that hold them.
//
// JetStream is Cordon's source of truth, so this package is the schema of the
// whole system. Every service depends on it and it depends on nothing of ours.
// It also holds the vocabulary that more than one package must spell alike:
// the closed set of deny reasons (reasons.go), Cordon's admin identity and
// scopes (admin.go) and the durable consumer names the services create and
// the NATS permissions grant (consumers.go). DecodeUsage is the auditor's
// and replay's fast path for usage events, held equal to DecodeAs.
// Decoding is strict: an unknown type, an unknown or missing field, or a
// schema version this build does not speak is an error that names what is
// wrong, so a bad message is rejected with a reason instead of being half
// understood.
//
// Schema versions: a new optional field whose absence keeps the old meaning
// (UsageDecided.Count, absent = 1) keeps SchemaVersion, so every stored
// event stays readable; a field that changes what existing events mean, or
// a new required one, bumps it. A build that does not know an optional field
// refuses events that carry it (unknown field), never misreads them.
package events
