// Package events is Cordon's event contract: the envelope every state change
// travels in, the typed payloads, the NATS subjects they are published on, and
// the JetStream streams and KV buckets that hold them.
//
// JetStream is Cordon's source of truth, so this package is the schema of the
// whole system. Every service depends on it and it depends on nothing of ours.
// Decoding is strict: an unknown type, an unknown or missing field, or a
// schema version this build does not speak is an error that names what is
// wrong, so a bad message is rejected with a reason instead of being half
// understood.
package events
