// Package leak reads reports of leaked tokens from secret scanners.
//
// GitHub's secret scanning partner program POSTs a JSON array of
// {token, type, url, source} to a partner's endpoint, signed with ECDSA
// P-256 over SHA-256 of the raw body: the base64 ASN.1 signature is in the
// GITHUB-PUBLIC-KEY-SIGNATURE header and the signing key's identifier in
// GITHUB-PUBLIC-KEY-IDENTIFIER. The public keys are published as a JSON
// document ({"public_keys": [{"key_identifier", "key", "is_current"}]}).
// Keys loads that document from a URL or a file, caches it, and fetches it
// again when a report names a key it does not know (GitHub rotates keys by
// identifier), at most once per MinRefetch.
//
// Verification is over the bytes received: a body re-serialised by a proxy
// (other white space, other key order) fails, as it must.
package leak
