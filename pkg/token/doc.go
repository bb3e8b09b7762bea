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
//
// Decoding is canonical: exactly one string verifies per token. Segments
// must be the base64url Mint writes (no padding, zero trailing bits, no line
// breaks), and the header and claims must be byte for byte the JSON Mint
// writes (exact-case names, each once, in field order, no white space, no
// explicit empty optional field). So a token cannot be re-spelled to dodge a
// cache, a denylist of token strings or a secret scanner, and claims the
// issuer never wrote (such as "JTI" beside "jti") are malformed even under a
// valid signature.
package token
