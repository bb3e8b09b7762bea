package issuer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
)

// Token statuses reported by List and Inspect.
const (
	// StatusActive: valid (or not yet valid) and not superseded.
	StatusActive = "active"
	// StatusRotated: superseded by a successor; still valid until its grace
	// period ends, then revoked.
	StatusRotated = "rotated"
	// StatusRevoked: a TokenRevoked event names it (or its holder, tenant
	// or key, for a token issued before that event).
	StatusRevoked = "revoked"
	// StatusExpired: past its expiry.
	StatusExpired = "expired"
)

// The admin API's identity and scopes: the event contract's (pkg/events
// AdminTenant, AdminHolder, AdminAudience and the admin scopes), under the
// names this API has always used. The bootstrap admin token carries every
// admin scope (events.AdminScopes); a caller needs the one scope its
// operation names.
const (
	AdminTenant   = events.AdminTenant
	AdminHolder   = events.AdminHolder
	AdminAudience = events.AdminAudience

	ScopeIssue  = events.ScopeIssue  // mint tokens
	ScopeRotate = events.ScopeRotate // rotate tokens
	ScopeRevoke = events.ScopeRevoke // revoke tokens (served by the revoker)
	ScopeRead   = events.ScopeRead   // list and inspect tokens and keys
	ScopeKeys   = events.ScopeKeys   // rotate and retire signing keys
)

// IssueRequest asks for a token. Omitted dimensions are narrowed to the
// holder's ceiling (see policy.Narrow); scopes are required.
type IssueRequest struct {
	Tenant   string   `json:"tenant"`
	Holder   string   `json:"holder"`
	Scopes   []string `json:"scopes"`
	Audience []string `json:"audience,omitempty"`
	// Networks are CIDRs or bare IP addresses.
	Networks    []string `json:"networks,omitempty"`
	Environment string   `json:"environment,omitempty"`
	Windows     []Window `json:"windows,omitempty"`
	// Device is the client certificate's hex SHA-256 thumbprint.
	Device string `json:"device,omitempty"`
	// TTL is a duration such as "1h" or "7d"; omitted, the ceiling's max_ttl.
	TTL string `json:"ttl,omitempty"`
	// NotBefore defaults to now.
	NotBefore  *time.Time `json:"not_before,omitempty"`
	BreakGlass bool       `json:"break_glass,omitempty"`
	// Canary mints a canary token: a real token no enforcer ever accepts,
	// whose first use anywhere is a critical alert. Plant it where a thief
	// would look; give it a believable holder and scopes and the longest
	// TTL the holder allows (a canary past its expiry no longer reports).
	Canary bool `json:"canary,omitempty"`
}

// Window is a time-of-use window on the wire: either the object
// {"days": [...], "start": "08:00", "end": "18:00", "zone": "Europe/Paris"}
// or the compact string "mon-fri 08:00-18:00 Europe/Paris".
type Window token.Window

// UnmarshalJSON accepts the object or the compact string form.
func (w *Window) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		pw, err := policy.ParseWindow(s)
		if err != nil {
			return fmt.Errorf("windows: %w", err)
		}
		*w = Window(pw)
		return nil
	}
	var tw token.Window
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tw); err != nil {
		return fmt.Errorf("windows: %s", jsonError(err))
	}
	if err := tw.Validate(); err != nil {
		return fmt.Errorf("windows: %w", err)
	}
	*w = Window(tw)
	return nil
}

// RotateRequest tunes a rotation; every field is optional.
type RotateRequest struct {
	// TokenID names the token to rotate (NATS only; HTTP takes it from the path).
	TokenID string `json:"token_id,omitempty"`
	// Grace is how long the predecessor stays valid, such as "10m"; "0s"
	// revokes it at once; omitted, the issuer's default grace period.
	Grace string `json:"grace,omitempty"`
	// TTL of the successor; omitted, the predecessor's lifetime.
	TTL string `json:"ttl,omitempty"`
}

// ListFilter selects tokens; empty fields match everything.
type ListFilter struct {
	Tenant string `json:"tenant,omitempty"`
	Holder string `json:"holder,omitempty"`
	// Status is one of active, rotated, revoked, expired.
	Status string `json:"status,omitempty"`
}

// TokenInfo is the registry's view of a token: its claims and status, never
// the token string.
type TokenInfo struct {
	ID         string             `json:"id"`
	Tenant     string             `json:"tenant"`
	Holder     string             `json:"holder"`
	KeyID      string             `json:"kid"`
	Status     string             `json:"status"`
	Claims     events.TokenClaims `json:"claims"`
	BreakGlass bool               `json:"break_glass,omitempty"`
	// Canary marks a canary token (IssueRequest.Canary).
	Canary   bool      `json:"canary,omitempty"`
	IssuedAt time.Time `json:"issued_at"`
	IssuedBy string    `json:"issued_by"`
	// RotatedFrom is the predecessor of a successor token.
	RotatedFrom string `json:"rotated_from,omitempty"`
	// SuccessorID and GraceUntil are set once the token is rotated.
	SuccessorID string     `json:"successor_id,omitempty"`
	GraceUntil  *time.Time `json:"grace_until,omitempty"`
	// RevokedAt, RevokedBy and RevokeReason are set once it is revoked.
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokedBy    string     `json:"revoked_by,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	ExpiredAt    *time.Time `json:"expired_at,omitempty"`
}

// HistoryEntry is one ledger event about a token.
type HistoryEntry struct {
	Seq    uint64          `json:"seq"`
	ID     string          `json:"id"`
	Type   events.Type     `json:"type"`
	Time   time.Time       `json:"time"`
	Source string          `json:"source"`
	Data   json.RawMessage `json:"data"`
}

// TokenDetail is a token's registry entry with its ledger history.
type TokenDetail struct {
	TokenInfo
	History []HistoryEntry `json:"history"`
}

// TokenList is the reply to a list.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// IssueResponse carries a freshly minted token. Token is the only place a
// token string ever appears.
type IssueResponse struct {
	Token string `json:"token"`
	TokenInfo
	// Warning says what is not done yet: for a canary, that no revoker
	// has put it on the denylist within canaryWait (is one running?).
	Warning string `json:"warning,omitempty"`
}

// RotateResponse carries the successor token and both registry entries.
type RotateResponse struct {
	Token       string    `json:"token"`
	Successor   TokenInfo `json:"successor"`
	Predecessor TokenInfo `json:"predecessor"`
}

// KeyInfo describes one of the issuer's signing keys (public half only).
type KeyInfo struct {
	KeyID     string    `json:"kid"`
	PublicKey []byte    `json:"public_key"`
	Created   time.Time `json:"created"`
	Active    bool      `json:"active"`
	// LiveTokens counts the tokens it signed that are neither revoked nor
	// expired: retiring the key makes them fail at enforcers.
	LiveTokens int `json:"live_tokens"`
	// Held: the issuer holds the private key. Published: the keys bucket
	// has an entry for it. Accepted: that entry is endorsed by the
	// issuer's trust anchor, so verifiers accept tokens it signed.
	Held      bool `json:"held"`
	Published bool `json:"published"`
	Accepted  bool `json:"accepted"`
	// Problem says what is wrong, when something is.
	Problem string `json:"problem,omitempty"`
}

// KeyList is the reply to a key listing.
type KeyList struct {
	Keys []KeyInfo `json:"keys"`
}

// RetireRequest retires a signing key.
type RetireRequest struct {
	Reason string `json:"reason,omitempty"`
}

// RetireResponse reports a retired key.
type RetireResponse struct {
	KeyID   string `json:"kid"`
	Retired bool   `json:"retired"`
	// AdminTokenRenewed is true when the bootstrap admin token was signed
	// by the retired key and a new one was written to the data directory.
	AdminTokenRenewed bool `json:"admin_token_renewed,omitempty"`
}

// ErrorBody is the JSON body of every HTTP error and of a failed command.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// CmdRequest is the JSON request on the cordon.cmd.issue, .rotate, .list
// and .inspect subjects. Auth is the caller's admin token; one bound to
// networks or a device is refused over NATS (use the HTTPS API). Issue and
// rotate require an idempotency key: a request replayed with the same key
// and the same admin token returns the original result instead of acting
// twice; another token never gets it. A token issued or rotated by command
// has no issuance context on the ledger (TokenIssued.Requested): the issuer
// cannot see the sender's address, and nothing in the request is taken for
// it.
type CmdRequest struct {
	Auth           string         `json:"auth"`
	IdempotencyKey string         `json:"idempotency_key,omitempty"`
	Issue          *IssueRequest  `json:"issue,omitempty"`
	Rotate         *RotateRequest `json:"rotate,omitempty"`
	List           *ListFilter    `json:"list,omitempty"`
	// TokenID names the token to inspect.
	TokenID string `json:"token_id,omitempty"`
}

// Command outcomes of CmdReply.Outcome.
const (
	OutcomeIssued    = "issued"
	OutcomeRotated   = "rotated"
	OutcomeListed    = "listed"
	OutcomeInspected = "inspected"
	OutcomeRejected  = "rejected"
)

// CmdReply is the JSON reply on the cordon.cmd.* subjects: what was done or
// why not.
type CmdReply struct {
	OK bool `json:"ok"`
	// Outcome is one of the Outcome… values.
	Outcome string `json:"outcome"`
	// Replayed is true when an idempotency key matched an earlier request
	// and its original result is returned.
	Replayed bool            `json:"replayed,omitempty"`
	Error    string          `json:"error,omitempty"`
	Code     string          `json:"code,omitempty"`
	Issued   *IssueResponse  `json:"issued,omitempty"`
	Rotated  *RotateResponse `json:"rotated,omitempty"`
	Tokens   []TokenInfo     `json:"tokens,omitempty"`
	Token    *TokenDetail    `json:"token,omitempty"`
}

// validStatus reports whether s is a status a filter may name.
func validStatus(s string) error {
	switch s {
	case "", StatusActive, StatusRotated, StatusRevoked, StatusExpired:
		return nil
	}
	return fmt.Errorf("%w: status: %q is not one of active, rotated, revoked, expired", ErrBadRequest, s)
}
