// Package ssf speaks OpenID Shared Signals: Security Event Tokens (RFC
// 8417) carrying CAEP and RISC events, signed with ES256 and typed
// "secevent+jwt", delivered by push (RFC 8935).
//
// Cordon transmits a CAEP credential-change event (change_type revoke)
// for every revoked token, so that other systems holding sessions or
// caches for it drop them, and receives events from identity providers: an
// account that was disabled or purged (RISC) or whose credentials were all
// revoked revokes every token of the matching holder.
//
// The subject of a transmitted event is the token, as an opaque
// identifier (its id, never the token string), with the tenant and holder
// beside it in a complex subject.
package ssf
