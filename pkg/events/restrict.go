package events

import (
	"fmt"
	"net/netip"
	"time"
)

// Graduated response: between alerting and revoking, a token may be
// restricted for a bounded time. A restriction is a ledger event
// (TokenRestricted, TokenReleased) and, while it lasts, a denylist entry
// (DenyKeyNarrow, DenyKeyStepUp) that reaches every enforcer through the
// same broadcast as revocations.

// The steps of a graduated response, weakest first.
const (
	// StepShadow records what a rule would have done and changes nothing.
	StepShadow = "shadow"
	// StepNarrow quarantines a token: only its read scopes, only from its
	// holder's known networks (DenyRecord.Networks), until
	// DenyRecord.Until.
	StepNarrow = "narrow"
	// StepStepUp denies the token until its holder proves possession: a
	// request is allowed only with the client certificate the token is
	// bound to (its device binding).
	StepStepUp = "step_up"
	// StepRevoke revokes the token.
	StepRevoke = "revoke"
)

// Steps are the steps of a graduated response, weakest first.
var Steps = []string{StepShadow, StepNarrow, StepStepUp, StepRevoke}

// StepRank orders the steps (-1 for an unknown one).
func StepRank(step string) int {
	for i, s := range Steps {
		if s == step {
			return i
		}
	}
	return -1
}

// Restriction limits.
const (
	// MaxRestriction is the longest a narrow or step-up restriction lasts
	// (it never outlives the token either).
	MaxRestriction = 7 * 24 * time.Hour
	// MaxRestrictNetworks bounds the networks of a quarantine.
	MaxRestrictNetworks = 64
)

// Commands of the graduated response (request/reply, answered by the
// revoker).
const (
	// SubjectCmdRestrict narrows or steps up a token by hand.
	SubjectCmdRestrict = "cordon.cmd.restrict"
	// SubjectCmdRelease lifts a token's restrictions.
	SubjectCmdRelease = "cordon.cmd.release"
)

// DetailKnownNetworks is the key of AnomalyDetected.Evidence.Details under
// which the auditor's detectors list the known networks of the baseline
// that judges the token (its holder's, else its own), as comma-separated
// CIDR prefixes: what a quarantine (StepNarrow) keeps.
const DetailKnownNetworks = "known_networks"

// DenyKeyNarrow is the denylist key of a token's quarantine (step narrow).
func DenyKeyNarrow(tokenID string) string { return "narrow." + tokenID }

// DenyKeyStepUp is the denylist key of a token's step-up restriction.
func DenyKeyStepUp(tokenID string) string { return "stepup." + tokenID }

// ReadVerbs are the last segments of a read scope.
var ReadVerbs = []string{"read", "list", "view"}

// IsReadScope reports whether a scope only reads: its last segment (after
// the last ':' or '.') is one of ReadVerbs, such as "billing:read",
// "invoices:list" or "orders.invoices.view". A quarantined token keeps only
// these.
func IsReadScope(scope string) bool {
	i := len(scope) - 1
	for i >= 0 && scope[i] != ':' && scope[i] != '.' {
		i--
	}
	if i < 0 {
		return false
	}
	verb := scope[i+1:]
	for _, v := range ReadVerbs {
		if verb == v {
			return true
		}
	}
	return false
}

// TokenRestricted records one step of a graduated response on a token:
// narrow or step_up (in force until Until), or shadow (what a rule would
// have done, Would; nothing changes).
type TokenRestricted struct {
	TokenID string `json:"token_id"`
	Tenant  string `json:"tenant"`
	Holder  string `json:"holder"`
	KeyID   string `json:"kid,omitempty"`
	// Step is StepNarrow, StepStepUp or StepShadow.
	Step string `json:"step"`
	// Would, for a shadow step, is the step the rule would have taken.
	Would string `json:"would,omitempty"`
	// Until is when a narrow or step-up restriction ends (at the latest
	// the token's expiry).
	Until time.Time `json:"until,omitempty"`
	// Scopes are the scopes a quarantined token keeps (its read scopes).
	Scopes []string `json:"scopes,omitempty"`
	// Networks are the networks a quarantined token may still come from
	// (its holder's known networks), as CIDR prefixes.
	Networks []string `json:"networks,omitempty"`
	// Actor is who or what took the step (an admin, or
	// "revoker/<source>" with Rule); Reason says why.
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
	// Rule is the response rule that chose the step (automatic steps).
	Rule string `json:"rule,omitempty"`
	// AnomalyID links an automatic step to its anomaly.
	AnomalyID string `json:"anomaly_id,omitempty"`
	// Risk is the anomaly's risk score (automatic steps).
	Risk float64 `json:"risk,omitempty"`
	// Expiry is the token's expiry.
	Expiry time.Time `json:"exp"`
}

// TokenReleased records that a token's restriction was lifted before its
// end, by command.
type TokenReleased struct {
	TokenID string `json:"token_id"`
	Tenant  string `json:"tenant"`
	Holder  string `json:"holder"`
	// Step is the restriction lifted (StepNarrow or StepStepUp).
	Step   string `json:"step"`
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
}

// EventType implements Payload.
func (*TokenRestricted) EventType() Type { return TypeTokenRestricted }

// EventType implements Payload.
func (*TokenReleased) EventType() Type { return TypeTokenReleased }

// Validate implements Payload.
func (p *TokenRestricted) Validate() error {
	if err := req("token_id", p.TokenID, "tenant", p.Tenant, "holder", p.Holder, "step", p.Step, "actor", p.Actor, "reason", p.Reason); err != nil {
		return err
	}
	switch p.Step {
	case StepNarrow, StepStepUp:
		if p.Until.IsZero() {
			return fmt.Errorf("%w: until", ErrMissingField)
		}
		if p.Would != "" {
			return fmt.Errorf("%w: would: only a shadow step has one", ErrInvalidField)
		}
	case StepShadow:
		if StepRank(p.Would) < 0 || p.Would == StepShadow {
			return fmt.Errorf("%w: would: %q is not one of narrow, step_up, revoke", ErrInvalidField, p.Would)
		}
	default:
		return fmt.Errorf("%w: step: %q is not one of shadow, narrow, step_up", ErrInvalidField, p.Step)
	}
	if p.Step == StepNarrow && len(p.Networks) == 0 {
		return fmt.Errorf("%w: networks: a quarantine needs the networks it keeps", ErrMissingField)
	}
	if len(p.Networks) > MaxRestrictNetworks {
		return fmt.Errorf("%w: networks: %d, at most %d", ErrInvalidField, len(p.Networks), MaxRestrictNetworks)
	}
	for _, n := range p.Networks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return fmt.Errorf("%w: networks: %q: %v", ErrInvalidField, n, err)
		}
	}
	if p.Expiry.IsZero() {
		return fmt.Errorf("%w: exp", ErrMissingField)
	}
	return validName("tenant", p.Tenant)
}

// Validate implements Payload.
func (p *TokenReleased) Validate() error {
	if err := req("token_id", p.TokenID, "tenant", p.Tenant, "holder", p.Holder, "step", p.Step, "actor", p.Actor, "reason", p.Reason); err != nil {
		return err
	}
	if p.Step != StepNarrow && p.Step != StepStepUp {
		return fmt.Errorf("%w: step: %q is not one of narrow, step_up", ErrInvalidField, p.Step)
	}
	return validName("tenant", p.Tenant)
}
