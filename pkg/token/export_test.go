package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Reencode rebuilds the token string of u the way Mint writes it: the
// canonical encoding of its header, claims and signature.
func Reencode(u *Unverified) (string, error) {
	h, err := json.Marshal(header{V: formatVersion, Kid: u.KeyID})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(u.Claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return Seal(enc(h) + "." + enc(c) + "." + enc(u.signature)), nil
}

// SignRaw signs arbitrary header and claims JSON with s, the way Mint
// signs, so tests can build tokens the issuer would never mint.
func SignRaw(s Signer, headerJSON, claimsJSON []byte) string {
	enc := base64.RawURLEncoding.EncodeToString
	var sb strings.Builder
	sb.WriteString(enc(headerJSON))
	sb.WriteByte('.')
	sb.WriteString(enc(claimsJSON))
	sig := ed25519.Sign(s.Key, signingInput(sb.String()))
	return Seal(sb.String() + "." + enc(sig))
}
