// Package adminauth authenticates the callers of Cordon's control plane —
// the issuer's HTTP API and NATS commands, the revoker's cordon.cmd.revoke
// and the auditor's analyst API — with one set of rules, so that the three
// can never disagree about who is an administrator.
//
// A signature is necessary, not sufficient. A token is accepted only if
//
//   - it verifies against the service's key source (the issuer's own keys,
//     or the keys bucket the revoker and the auditor follow);
//   - it is within its validity period, for tenant "cordon" and audience
//     "cordon" (events.AdminTenant, events.AdminAudience);
//   - the ledger knows it: the token's claims are exactly what the ledger
//     recorded when it was issued (holder, key id, scopes, audience,
//     networks, environment, windows, device, not-before, expiry,
//     break-glass, and no later issue time), so a token minted outside the
//     issuer with a stolen signing key is refused;
//   - the ledger has not revoked it, recorded its expiry or rotated it past
//     its grace period (and the service's denylist, when it has one, does
//     not revoke it);
//   - the LEDGER's scopes cover the operation;
//   - its context holds: the environment, the time windows, the source
//     networks against the caller's address and the device binding against
//     the caller's TLS client certificate. A transport that cannot see the
//     caller (NATS) refuses a token bound to networks or a device: a claim
//     is never ignored.
//
// The ledger view is an interface; Follower is the one built on JetStream:
// an ordered consumer of the TOKENS events of tenant "cordon", bounded,
// re-created when it falls behind, and brought up to date before every
// lookup so that a token issued or revoked a moment ago is judged by what
// the ledger holds now.
//
// Errors wrap ErrUnauthenticated (who are you?), ErrForbidden (not allowed)
// or ErrUnavailable (the ledger cannot be read: fail closed). Messages name
// token ids, never a presented token.
package adminauth
