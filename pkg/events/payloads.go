package events

import (
	"fmt"
	"net/netip"
	"time"
)

// Window is a time-of-use window: the weekdays and the hours of the day, in
// an IANA time zone, during which a token may be used.
type Window struct {
	// Days are weekday names in English, "mon" … "sun".
	Days []string `json:"days"`
	// Start and End are "HH:MM" in Zone; End is exclusive and may be "24:00".
	Start string `json:"start"`
	End   string `json:"end"`
	// Zone is an IANA time zone name such as "Europe/Paris".
	Zone string `json:"zone"`
}

// TokenClaims is what a token allows, as recorded on the ledger (never the
// token string itself).
type TokenClaims struct {
	Scopes      []string  `json:"scopes"`
	Audience    []string  `json:"audience"`
	Networks    []string  `json:"networks,omitempty"`
	Environment string    `json:"environment,omitempty"`
	Windows     []Window  `json:"windows,omitempty"`
	Device      string    `json:"device,omitempty"`
	NotBefore   time.Time `json:"nbf"`
	Expiry      time.Time `json:"exp"`
}

// TokenIssued records a newly minted token.
type TokenIssued struct {
	TokenID     string      `json:"token_id"`
	Tenant      string      `json:"tenant"`
	Holder      string      `json:"holder"`
	KeyID       string      `json:"kid"`
	Claims      TokenClaims `json:"claims"`
	Actor       string      `json:"actor"`
	RotatedFrom string      `json:"rotated_from,omitempty"`
	BreakGlass  bool        `json:"break_glass,omitempty"`
	// Canary marks a canary token: minted like any other, denied by every
	// enforcer from the start, its first use a critical alert (canary.go).
	// Only the ledger says so; the token string does not.
	Canary bool `json:"canary,omitempty"`
	// Requested is where the token was asked for, as the issuer saw the
	// request; absent when unknown (a NATS command, whose sender's address
	// the issuer cannot see, or a token the issuer minted for itself).
	Requested *IssuanceContext `json:"requested,omitempty"`
}

// IssuanceContext is where a token was requested from: the socket address
// of the API call and the client that made it.
type IssuanceContext struct {
	// SourceIP is the address the request came from.
	SourceIP string `json:"source_ip,omitempty"`
	// Client is the requester's user agent normalised like
	// UsageDecided.Client.
	Client string `json:"client,omitempty"`
}

// TokenRotated records that a token was replaced by a successor; the
// predecessor stays valid until GraceUntil and is then revoked.
type TokenRotated struct {
	TokenID     string    `json:"token_id"`
	SuccessorID string    `json:"successor_id"`
	Tenant      string    `json:"tenant"`
	Holder      string    `json:"holder"`
	GraceUntil  time.Time `json:"grace_until"`
	Actor       string    `json:"actor"`
}

// TokenRevoked records a revocation of one token.
type TokenRevoked struct {
	TokenID string `json:"token_id"`
	Tenant  string `json:"tenant"`
	Holder  string `json:"holder"`
	// KeyID is the signing key of the revoked token, when known.
	KeyID string `json:"kid,omitempty"`
	// Kind says what the revocation targeted: token, holder, key, tenant
	// or before (issued before a time).
	Kind   string `json:"kind"`
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
	// Expiry is when the token would have expired: the denylist entry
	// lives until then.
	Expiry time.Time `json:"exp"`
	// AnomalyID links an automatic revocation to the anomaly that caused it.
	AnomalyID string `json:"anomaly_id,omitempty"`
}

// TokenExpired records that a token reached its expiry.
type TokenExpired struct {
	TokenID string    `json:"token_id"`
	Tenant  string    `json:"tenant"`
	Holder  string    `json:"holder"`
	Expiry  time.Time `json:"exp"`
}

// KeyPublished records a new signing key's public half.
type KeyPublished struct {
	KeyID     string `json:"kid"`
	PublicKey []byte `json:"public_key"`
	Actor     string `json:"actor"`
}

// KeyRetired records that a signing key no longer verifies tokens.
type KeyRetired struct {
	KeyID  string `json:"kid"`
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
}

// Decision values of a usage event.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// UsageDecided records one enforcement decision. It carries the token id,
// never the token.
type UsageDecided struct {
	// TokenID is empty when the token could not be parsed.
	TokenID   string `json:"token_id,omitempty"`
	Tenant    string `json:"tenant,omitempty"`
	Holder    string `json:"holder,omitempty"`
	KeyID     string `json:"kid,omitempty"`
	Enforcer  string `json:"enforcer"`
	Service   string `json:"service"`
	SourceIP  string `json:"source_ip"`
	UserAgent string `json:"user_agent,omitempty"`
	Method    string `json:"method"`
	Route     string `json:"route"`
	Scope     string `json:"scope,omitempty"`
	Decision  string `json:"decision"`
	// Reason is "ok" for an allow, a deny reason otherwise.
	Reason    string `json:"reason"`
	LatencyNS int64  `json:"latency_ns"`
	// Count is how many decisions this event stands for. An enforcer folds
	// the denials that name no token (no token, an unreadable one, a
	// throttled source) from one source into one event per short interval;
	// the request fields are then those of the first such request. Absent
	// (0) means 1, and only a denial without a token id may count more, so
	// per-token analysis never sees a folded event.
	Count int64 `json:"count,omitempty"`
	// Resource is the concrete resource the request named: the values of
	// the matched route's path parameters in pattern order, joined by "/"
	// ("42" for GET /invoices/{id} on /invoices/42), each cut to
	// MaxResourcePart bytes and the whole to MaxResourceLen. Empty for a
	// route without parameters, or when no route matched.
	Resource string `json:"resource,omitempty"`
	// Client is the caller's user agent normalised to family and major
	// version ("curl/8", "python-requests/2", "Go-http-client/1"; see
	// NormalizeClient); the raw user agent stays in UserAgent.
	Client string `json:"client,omitempty"`
	// Device is the lowercase hex SHA-256 thumbprint of the TLS client
	// certificate the request presented (a public value), when it did.
	Device string `json:"device,omitempty"`
}

// Bounds of the request context a usage event carries.
const (
	// MaxUsageCount bounds UsageDecided.Count (the range of its column).
	MaxUsageCount = 1<<32 - 1
	// MaxResourcePart and MaxResourceLen bound UsageDecided.Resource.
	MaxResourcePart = 64
	MaxResourceLen  = 256
	// MaxClientLen bounds UsageDecided.Client and IssuanceContext.Client.
	MaxClientLen = 64
)

// Requests is how many decisions the event stands for: Count, or 1 when
// Count is absent.
func (p *UsageDecided) Requests() int64 {
	if p.Count <= 0 {
		return 1
	}
	return p.Count
}

// Severity values of an anomaly, from least to most severe.
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// Evidence is what a detector saw and the baseline it broke.
type Evidence struct {
	Seen     string            `json:"seen"`
	Baseline string            `json:"baseline"`
	Details  map[string]string `json:"details,omitempty"`
}

// AnomalyDetected records out-of-context use found by a detector.
type AnomalyDetected struct {
	AnomalyID string `json:"anomaly_id"`
	Detector  string `json:"detector"`
	Severity  string `json:"severity"`
	TokenID   string `json:"token_id"`
	Tenant    string `json:"tenant"`
	Holder    string `json:"holder"`
	// EventID and EventTime identify the usage event that triggered it.
	EventID   string    `json:"event_id"`
	EventTime time.Time `json:"event_time"`
	SourceIP  string    `json:"source_ip,omitempty"`
	Evidence  Evidence  `json:"evidence"`
	// Enforcer and Decision are those of the triggering usage event: the
	// enforcer it is attributed to (the auditor accepts a usage event only
	// from the enforcer whose subject it arrived on) and its decision,
	// allow or deny. Empty when unknown (an anomaly of an older version).
	// The response policy's corroboration reads them.
	Enforcer string `json:"enforcer,omitempty"`
	Decision string `json:"decision,omitempty"`
	// Subject says what the anomaly is about: AnomalyToken (empty means
	// the same) for a token, whose TokenID it carries; AnomalySource for
	// a source network that sent usage naming no token (a burst of
	// malformed or forged tokens), whose TokenID is SourceTokenID and
	// whose SourceIP is the source. A source-level anomaly has no token
	// to revoke: the response side alerts on it and never revokes.
	Subject string `json:"subject,omitempty"`
	// Risk is the token's combined risk score in [0, 1] when the anomaly
	// was raised (its weak and strong signals of the recent past combined,
	// pkg/detect); 0 when not computed (an older auditor, a source-level
	// anomaly). RiskFactors explain it.
	Risk        float64      `json:"risk,omitempty"`
	RiskFactors []RiskFactor `json:"risk_factors,omitempty"`
}

// Subjects of an anomaly (AnomalyDetected.Subject).
const (
	AnomalyToken  = "token"
	AnomalySource = "source"
	// SourceTokenID is the TokenID of a source-level anomaly: it names no
	// token (subjects and table columns need a value).
	SourceTokenID = "-"
	// MaxRiskFactors bounds AnomalyDetected.RiskFactors.
	MaxRiskFactors = 32
)

// RiskFactor is one signal that contributed to a risk score.
type RiskFactor struct {
	// Signal is the detector that saw it.
	Signal string `json:"signal"`
	// Level is the baseline it broke: token, holder or tenant.
	Level string `json:"level"`
	// Weight is its contribution in [0, 1]; the score combines the factors
	// as 1 - Π(1 - weight).
	Weight float64 `json:"weight"`
}

// IsSource reports whether the anomaly is about a source, not a token.
func (p *AnomalyDetected) IsSource() bool { return p.Subject == AnomalySource }

// PolicyChanged records that a new policy was loaded.
type PolicyChanged struct {
	// Digest is the SHA-256 of the policy file.
	Digest  string `json:"digest"`
	Path    string `json:"path"`
	Holders int    `json:"holders"`
	Actor   string `json:"actor"`
}

// EventType implements Payload.
func (*TokenIssued) EventType() Type { return TypeTokenIssued }

// EventType implements Payload.
func (*TokenRotated) EventType() Type { return TypeTokenRotated }

// EventType implements Payload.
func (*TokenRevoked) EventType() Type { return TypeTokenRevoked }

// EventType implements Payload.
func (*TokenExpired) EventType() Type { return TypeTokenExpired }

// EventType implements Payload.
func (*KeyPublished) EventType() Type { return TypeKeyPublished }

// EventType implements Payload.
func (*KeyRetired) EventType() Type { return TypeKeyRetired }

// EventType implements Payload.
func (*UsageDecided) EventType() Type { return TypeUsageDecided }

// EventType implements Payload.
func (*AnomalyDetected) EventType() Type { return TypeAnomalyDetected }

// EventType implements Payload.
func (*PolicyChanged) EventType() Type { return TypePolicyChanged }

// req returns a missing-field error for the first empty named value.
func req(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			return fmt.Errorf("%w: %s", ErrMissingField, kv[i])
		}
	}
	return nil
}

func validName(field, v string) error {
	if err := ValidateName(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidField, field, err)
	}
	return nil
}

// Validate implements Payload.
func (p *TokenIssued) Validate() error {
	if err := req("token_id", p.TokenID, "tenant", p.Tenant, "holder", p.Holder, "kid", p.KeyID, "actor", p.Actor); err != nil {
		return err
	}
	if err := validName("tenant", p.Tenant); err != nil {
		return err
	}
	if len(p.Claims.Scopes) == 0 {
		return fmt.Errorf("%w: claims.scopes", ErrMissingField)
	}
	if p.Claims.Expiry.IsZero() {
		return fmt.Errorf("%w: claims.exp", ErrMissingField)
	}
	if !p.Claims.NotBefore.IsZero() && !p.Claims.Expiry.After(p.Claims.NotBefore) {
		return fmt.Errorf("%w: claims.exp is not after claims.nbf", ErrInvalidField)
	}
	for _, n := range p.Claims.Networks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return fmt.Errorf("%w: claims.networks: %q is not a CIDR", ErrInvalidField, n)
		}
	}
	if r := p.Requested; r != nil {
		if r.SourceIP != "" {
			if _, err := netip.ParseAddr(r.SourceIP); err != nil {
				return fmt.Errorf("%w: requested.source_ip: %q is not an IP address", ErrInvalidField, r.SourceIP)
			}
		}
		if len(r.Client) > MaxClientLen {
			return fmt.Errorf("%w: requested.client is %d bytes, at most %d", ErrInvalidField, len(r.Client), MaxClientLen)
		}
	}
	return nil
}

// isThumbprint reports whether s is 64 lowercase hex digits.
func isThumbprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Validate implements Payload.
func (p *TokenRotated) Validate() error {
	if err := req("token_id", p.TokenID, "successor_id", p.SuccessorID, "tenant", p.Tenant, "holder", p.Holder, "actor", p.Actor); err != nil {
		return err
	}
	if p.GraceUntil.IsZero() {
		return fmt.Errorf("%w: grace_until", ErrMissingField)
	}
	return validName("tenant", p.Tenant)
}

// Revocation kinds of TokenRevoked.Kind.
const (
	RevokeToken  = "token"
	RevokeHolder = "holder"
	RevokeKey    = "key"
	RevokeTenant = "tenant"
	RevokeBefore = "before"
)

// Validate implements Payload.
func (p *TokenRevoked) Validate() error {
	if err := req("token_id", p.TokenID, "tenant", p.Tenant, "holder", p.Holder, "kind", p.Kind, "actor", p.Actor, "reason", p.Reason); err != nil {
		return err
	}
	switch p.Kind {
	case RevokeToken, RevokeHolder, RevokeKey, RevokeTenant, RevokeBefore:
	default:
		return fmt.Errorf("%w: kind: %q is not one of token, holder, key, tenant, before", ErrInvalidField, p.Kind)
	}
	if p.Expiry.IsZero() {
		return fmt.Errorf("%w: exp", ErrMissingField)
	}
	return validName("tenant", p.Tenant)
}

// Validate implements Payload.
func (p *TokenExpired) Validate() error {
	if err := req("token_id", p.TokenID, "tenant", p.Tenant, "holder", p.Holder); err != nil {
		return err
	}
	if p.Expiry.IsZero() {
		return fmt.Errorf("%w: exp", ErrMissingField)
	}
	return validName("tenant", p.Tenant)
}

// Validate implements Payload.
func (p *KeyPublished) Validate() error {
	if err := req("kid", p.KeyID, "actor", p.Actor); err != nil {
		return err
	}
	if len(p.PublicKey) != 32 {
		return fmt.Errorf("%w: public_key: want 32 bytes of Ed25519 key, got %d", ErrInvalidField, len(p.PublicKey))
	}
	return validName("kid", p.KeyID)
}

// Validate implements Payload.
func (p *KeyRetired) Validate() error {
	if err := req("kid", p.KeyID, "actor", p.Actor, "reason", p.Reason); err != nil {
		return err
	}
	return validName("kid", p.KeyID)
}

// Validate implements Payload.
func (p *UsageDecided) Validate() error {
	if err := req("enforcer", p.Enforcer, "service", p.Service, "source_ip", p.SourceIP, "method", p.Method, "route", p.Route, "decision", p.Decision, "reason", p.Reason); err != nil {
		return err
	}
	if p.Decision != DecisionAllow && p.Decision != DecisionDeny {
		return fmt.Errorf("%w: decision: %q is not allow or deny", ErrInvalidField, p.Decision)
	}
	if _, err := netip.ParseAddr(p.SourceIP); err != nil {
		return fmt.Errorf("%w: source_ip: %q is not an IP address", ErrInvalidField, p.SourceIP)
	}
	if p.Tenant != "" {
		if err := validName("tenant", p.Tenant); err != nil {
			return err
		}
	}
	if p.LatencyNS < 0 {
		return fmt.Errorf("%w: latency_ns is negative", ErrInvalidField)
	}
	if p.Count < 0 || p.Count > MaxUsageCount {
		return fmt.Errorf("%w: count %d is not in [0, %d]", ErrInvalidField, p.Count, int64(MaxUsageCount))
	}
	if p.Count > 1 && (p.Decision != DecisionDeny || p.TokenID != "") {
		return fmt.Errorf("%w: count %d: only denials without a token id are counted together", ErrInvalidField, p.Count)
	}
	if len(p.Resource) > MaxResourceLen {
		return fmt.Errorf("%w: resource is %d bytes, at most %d", ErrInvalidField, len(p.Resource), MaxResourceLen)
	}
	if len(p.Client) > MaxClientLen {
		return fmt.Errorf("%w: client is %d bytes, at most %d", ErrInvalidField, len(p.Client), MaxClientLen)
	}
	if p.Device != "" && !isThumbprint(p.Device) {
		return fmt.Errorf("%w: device: want a lowercase hex SHA-256 thumbprint", ErrInvalidField)
	}
	return validName("enforcer", p.Enforcer)
}

// Validate implements Payload.
func (p *AnomalyDetected) Validate() error {
	if err := req("anomaly_id", p.AnomalyID, "detector", p.Detector, "severity", p.Severity, "token_id", p.TokenID, "tenant", p.Tenant, "event_id", p.EventID, "evidence.seen", p.Evidence.Seen); err != nil {
		return err
	}
	if SeverityRank(p.Severity) < 0 {
		return fmt.Errorf("%w: severity: %q is not one of low, medium, high, critical", ErrInvalidField, p.Severity)
	}
	if p.EventTime.IsZero() {
		return fmt.Errorf("%w: event_time", ErrMissingField)
	}
	switch p.Subject {
	case "", AnomalyToken:
		if p.TokenID == SourceTokenID {
			return fmt.Errorf("%w: token_id: %q names no token; a source-level anomaly needs subject %q", ErrInvalidField, p.TokenID, AnomalySource)
		}
	case AnomalySource:
		if p.TokenID != SourceTokenID {
			return fmt.Errorf("%w: token_id: a source-level anomaly carries %q, not a token id", ErrInvalidField, SourceTokenID)
		}
		if _, err := netip.ParseAddr(p.SourceIP); err != nil {
			return fmt.Errorf("%w: source_ip: a source-level anomaly needs the source address, got %q", ErrInvalidField, p.SourceIP)
		}
	default:
		return fmt.Errorf("%w: subject: %q is not one of token, source", ErrInvalidField, p.Subject)
	}
	if !(p.Risk >= 0 && p.Risk <= 1) {
		return fmt.Errorf("%w: risk %v is not in [0, 1]", ErrInvalidField, p.Risk)
	}
	if len(p.RiskFactors) > MaxRiskFactors {
		return fmt.Errorf("%w: risk_factors: %d factors, at most %d", ErrInvalidField, len(p.RiskFactors), MaxRiskFactors)
	}
	for i, f := range p.RiskFactors {
		if f.Signal == "" || !(f.Weight >= 0 && f.Weight <= 1) {
			return fmt.Errorf("%w: risk_factors[%d]: want a signal and a weight in [0, 1], got %q and %v", ErrInvalidField, i, f.Signal, f.Weight)
		}
	}
	return validName("tenant", p.Tenant)
}

// Validate implements Payload.
func (p *PolicyChanged) Validate() error {
	return req("digest", p.Digest, "path", p.Path, "actor", p.Actor)
}

// SeverityRank orders severities (low=0 … critical=3); -1 for an unknown one.
func SeverityRank(s string) int {
	switch s {
	case SeverityLow:
		return 0
	case SeverityMedium:
		return 1
	case SeverityHigh:
		return 2
	case SeverityCritical:
		return 3
	}
	return -1
}
