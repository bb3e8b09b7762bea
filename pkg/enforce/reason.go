package enforce

import "net/http"

// Reason says why a request was allowed or denied. The deny reasons are a
// closed set; Check tests them in the order they are declared below and
// reports the first that fails. ReasonBadPath and ReasonNoRoute come from
// the HTTP middleware, which decides them before the token's context.
type Reason string

// ReasonOK is the reason of every allow.
const ReasonOK Reason = "ok"

// Deny reasons, in the order Check tests them.
const (
	// ReasonMissing: the request carries no token.
	ReasonMissing Reason = "missing"
	// ReasonThrottled: the token has not been verified before and its
	// source (an IPv4 address, an IPv6 /64) caused too many failed
	// verifications (malformed, unknown key, bad signature) lately, so it is
	// refused without running the signature check until a cool-down passes
	// (Options.ThrottleBurst). Tokens already verified still pass.
	ReasonThrottled Reason = "throttled"
	// ReasonMalformed: the token is not a Cordon token (prefix, structure,
	// encoding, claims) or its checksum does not match.
	ReasonMalformed Reason = "malformed"
	// ReasonUnknownKey: the token's signing key is not (or no longer) in the
	// keyring; a retired key denies tokens it signed, cached ones included.
	ReasonUnknownKey Reason = "unknown_key"
	// ReasonBadSignature: the signature does not verify under the named key.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonNotYetValid: the token's not-before is in the future.
	ReasonNotYetValid Reason = "not_yet_valid"
	// ReasonExpired: the token's expiry has passed.
	ReasonExpired Reason = "expired"
	// ReasonDenylistStale: the denylist view is older than
	// Options.MaxStaleness and Options.FailClosed is set, so a revocation
	// might have been missed. Off by default.
	ReasonDenylistStale Reason = "denylist_stale"
	// ReasonRevoked: the denylist revokes the token, its holder, its signing
	// key, its tenant, or tokens of its tenant issued before a time.
	ReasonRevoked Reason = "revoked"
	// ReasonWrongAudience: the enforcer's service is not in the token's
	// audience.
	ReasonWrongAudience Reason = "wrong_audience"
	// ReasonScopeMissing: no scope of the token covers the route's scope.
	ReasonScopeMissing Reason = "scope_missing"
	// ReasonSourceNetwork: the client address is outside the token's
	// networks.
	ReasonSourceNetwork Reason = "source_network"
	// ReasonEnvironment: the token is bound to another environment than the
	// enforcer's.
	ReasonEnvironment Reason = "environment"
	// ReasonTimeWindow: the request falls outside the token's time-of-use
	// windows.
	ReasonTimeWindow Reason = "time_window"
	// ReasonDeviceBinding: the token is bound to a client certificate and
	// the request did not present that certificate.
	ReasonDeviceBinding Reason = "device_binding"
	// ReasonBadPath: the request path is not in canonical form (proxy and
	// middleware only): an encoded slash, backslash or percent sign (%2F,
	// %5C, %25), a dot segment ("." or "..", encoded or not, also "..;x"),
	// an empty segment ("//", ";x"), a segment ending in '.' or ' ', a
	// backslash, a control byte, invalid UTF-8, or a look-alike of '/',
	// '\' or '.' (such as the full-width solidus). An upstream could
	// resolve such a path to another route than the one it matched.
	ReasonBadPath Reason = "bad_path"
	// ReasonNoRoute: the request matches no route of the service (proxy and
	// middleware only); it is denied before the token's context is checked.
	ReasonNoRoute Reason = "no_route"
)

// Reasons lists every deny reason, in check order (the middleware's
// ReasonBadPath and ReasonNoRoute last).
func Reasons() []Reason {
	return []Reason{
		ReasonMissing, ReasonThrottled, ReasonMalformed, ReasonUnknownKey, ReasonBadSignature,
		ReasonNotYetValid, ReasonExpired, ReasonDenylistStale, ReasonRevoked,
		ReasonWrongAudience, ReasonScopeMissing, ReasonSourceNetwork,
		ReasonEnvironment, ReasonTimeWindow, ReasonDeviceBinding, ReasonBadPath, ReasonNoRoute,
	}
}

// HTTPStatus is the status a denied HTTP request gets: 401 when the token
// itself is missing or unusable (the client must present another one), 429
// when its source is throttled, 400 for a path that is not canonical, 503
// when the enforcer's own view is too stale to decide, 403 otherwise.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonOK:
		return http.StatusOK
	case ReasonMissing, ReasonMalformed, ReasonBadSignature, ReasonUnknownKey, ReasonExpired, ReasonNotYetValid:
		return http.StatusUnauthorized
	case ReasonThrottled:
		return http.StatusTooManyRequests
	case ReasonBadPath:
		return http.StatusBadRequest
	case ReasonDenylistStale:
		return http.StatusServiceUnavailable
	}
	return http.StatusForbidden
}

// folded reports whether a decision is folded with others of its source
// into one usage event with a count: every denial whose token was not
// verified, so it names no token id (no token, an unreadable one, an
// unknown key, a bad signature, a throttled source, an unsafe path or no
// route without a valid token).
func folded(d *Decision) bool {
	return !d.Allow && d.TokenID == ""
}

// String implements fmt.Stringer.
func (r Reason) String() string { return string(r) }
