package events

import "time"

// KeyRecord is the value of a `keys` bucket entry: an issuer public key.
// The entry's key is the key id; deleting it retires the key everywhere.
// Verifiers accept a record only when Endorsement is a valid signature of
// the trust anchor named by Anchor over the key id and public key (see
// pkg/token Anchors), so that a write to the bucket alone cannot add a key.
type KeyRecord struct {
	KeyID     string    `json:"kid"`
	PublicKey []byte    `json:"public_key"`
	Created   time.Time `json:"created"`
	// Anchor is the id of the trust anchor that endorsed the key.
	Anchor string `json:"anchor,omitempty"`
	// Endorsement is the anchor's Ed25519 signature.
	Endorsement []byte `json:"endorsement,omitempty"`
}

// DenyRecord is the value of a `denylist` bucket entry. Entries for single
// tokens live under DenyKeyToken; broader revocations are rules under the
// other DenyKey… names. Every entry expires when the last token it can
// match would have expired.
type DenyRecord struct {
	Kind    string `json:"kind"` // one of the Revoke… kinds
	TokenID string `json:"token_id,omitempty"`
	Tenant  string `json:"tenant,omitempty"`
	Holder  string `json:"holder,omitempty"`
	KeyID   string `json:"kid,omitempty"`
	// Before, for kind "before": tokens issued before it are revoked.
	Before    time.Time `json:"before,omitempty"`
	Reason    string    `json:"reason"`
	Actor     string    `json:"actor"`
	RevokedAt time.Time `json:"revoked_at"`
	Expiry    time.Time `json:"exp"`
	// Canary, on a token entry, marks a canary token: enforcers deny it
	// like a revoked token and report its use on CanarySubject.
	Canary bool `json:"canary,omitempty"`
	// Step, on a DenyKeyNarrow or DenyKeyStepUp entry, is the restriction
	// (StepNarrow, StepStepUp); Until is when it ends.
	Step  string    `json:"step,omitempty"`
	Until time.Time `json:"until,omitempty"`
	// Scopes and Networks, for StepNarrow, are what the quarantined
	// token keeps: its read scopes, from these networks (CIDR prefixes).
	Scopes   []string `json:"scopes,omitempty"`
	Networks []string `json:"networks,omitempty"`
}

// DenyKeyToken is the denylist key revoking one token.
func DenyKeyToken(tokenID string) string { return "tok." + tokenID }

// DenyKeyHolder is the denylist key revoking every token of a holder.
func DenyKeyHolder(tenant, holder string) string { return "holder." + tenant + "." + holder }

// DenyKeyKey is the denylist key revoking every token a signing key signed.
func DenyKeyKey(kid string) string { return "kid." + kid }

// DenyKeyTenant is the denylist key revoking every token of a tenant.
func DenyKeyTenant(tenant string) string { return "tenant." + tenant }

// DenyKeyBefore is the denylist key revoking a tenant's tokens issued
// before DenyRecord.Before.
func DenyKeyBefore(tenant string) string { return "before." + tenant }
