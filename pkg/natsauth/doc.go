// Package natsauth gives each Cordon service its own NATS identity with the
// least permissions it needs, so that a compromised component cannot do more
// than its job: an enforcer can publish usage events under its own enforcer
// id and read the denylist and keys buckets, and nothing else — it cannot
// write the token ledger, the denylist or the signing keys, cannot send
// automation commands, and cannot report usage in another enforcer's name.
//
// Identities are NKey users (an Ed25519 key pair each): one per role for
// the issuer, auditor, revoker and admin, and one per enforcer, whose
// permission to publish usage is limited to cordon.usage.*.<its id>, so
// every usage event is attributable to the enforcer that published it (the
// auditor rejects an event whose enforcer field names another). Generate
// writes one seed file per identity (DIR/<role>.nk, DIR/enforcer-<id>.nk,
// mode 0600, for the process that uses it) and a nats-server configuration
// include (DIR/auth.conf) that lists each public key with its permissions;
// the server never sees a seed. ServerAuth reads that include back for an
// embedded server, and ConnectOption makes a client connection with a seed
// file.
//
// Every role also gets a private inbox prefix derived from its public key
// (see InboxPrefix): replies to its requests — which can carry freshly
// issued token strings — are only visible to that role, never to whoever
// else subscribes to "_INBOX.>".
//
// The subject lists are the exact JetStream API, KV, acknowledgement and
// flow-control subjects that each service's operations need; the tests
// check every role against a real server, allowed and forbidden.
package natsauth
