// Package token is Cordon's token format: Ed25519-signed, context-bound
// bearer tokens that enforcers verify offline.
//
// A token string is
//
//	cordon_<header>.<claims>.<signature><checksum>
//
// where header, claims and signature are unpadded base64url, and checksum is
// six base62 characters of CRC-32 over everything before it. The fixed
// "cordon_" prefix lets secret scanners find leaked tokens and the checksum
// rejects a typo or truncation before any cryptography runs.
//
// The header holds only the format version and the signing key id. The
// algorithm is fixed (Ed25519) and never read from the token: a header with
// any other field, such as "alg", is malformed. Several verification keys
// live at once in a Keyring so that signing keys rotate without downtime; a
// retired key's tokens fail with ErrUnknownKey.
package token
