package events

import "slices"

// Reasons of a usage event (UsageDecided.Reason): ReasonOK for an allow, one
// of the deny reasons for a denial. The deny reasons are a closed set: an
// enforcer (pkg/enforce) tests them in the order they are declared here and
// reports the first that fails, and the detectors (pkg/detect), the
// simulator (pkg/simulate) and analysts' queries name them with these
// values. They are defined here, once, because every one of those reads
// them off the usage events.
//
// UsageDecided.Validate does not refuse a reason it does not know: a newer
// enforcer may report one that an older auditor has never heard of, and its
// event must still be stored, not dead-lettered. Configuration that names
// reasons (the detectors') is checked with IsDenyReason.
const (
	// ReasonOK is the reason of every allow.
	ReasonOK = "ok"

	// ReasonMissing: the request carries no token.
	ReasonMissing = "missing"
	// ReasonThrottled: the token has not been verified before and its
	// source (an IPv4 address, an IPv6 /64) caused too many failed
	// verifications (malformed, unknown key, bad signature) lately, so it is
	// refused without running the signature check until a cool-down passes.
	// Tokens already verified still pass.
	ReasonThrottled = "throttled"
	// ReasonMalformed: the token is not a Cordon token (prefix, structure,
	// encoding, claims) or its checksum does not match.
	ReasonMalformed = "malformed"
	// ReasonUnknownKey: the token's signing key is not (or no longer) in the
	// enforcer's keyring; a retired key denies tokens it signed, cached ones
	// included.
	ReasonUnknownKey = "unknown_key"
	// ReasonBadSignature: the signature does not verify under the named key.
	ReasonBadSignature = "bad_signature"
	// ReasonNotYetValid: the token's not-before is in the future.
	ReasonNotYetValid = "not_yet_valid"
	// ReasonExpired: the token's expiry has passed.
	ReasonExpired = "expired"
	// ReasonDenylistStale: the enforcer's denylist view is older than its
	// bound and it fails closed, so a revocation might have been missed.
	ReasonDenylistStale = "denylist_stale"
	// ReasonRevoked: the denylist revokes the token, its holder, its signing
	// key, its tenant, or tokens of its tenant issued before a time.
	ReasonRevoked = "revoked"
	// ReasonWrongAudience: the enforcer's service is not in the token's
	// audience.
	ReasonWrongAudience = "wrong_audience"
	// ReasonScopeMissing: no scope of the token covers the route's scope.
	ReasonScopeMissing = "scope_missing"
	// ReasonSourceNetwork: the client address is outside the token's
	// networks.
	ReasonSourceNetwork = "source_network"
	// ReasonEnvironment: the token is bound to another environment than the
	// enforcer's.
	ReasonEnvironment = "environment"
	// ReasonTimeWindow: the request falls outside the token's time-of-use
	// windows.
	ReasonTimeWindow = "time_window"
	// ReasonDeviceBinding: the token is bound to a client certificate and
	// the request did not present that certificate.
	ReasonDeviceBinding = "device_binding"
	// ReasonQuarantined: the token is quarantined (graduated response,
	// step narrow) and the request is not a read of one of its read scopes
	// from its holder's known networks.
	ReasonQuarantined = "quarantined"
	// ReasonStepUpRequired: the token must be stepped up (graduated
	// response, step step_up) and the request did not present the client
	// certificate the token is bound to.
	ReasonStepUpRequired = "step_up_required"
	// ReasonBadPath: the request path is not in canonical form (enforcing
	// proxy and HTTP middleware only): an encoded slash, backslash or
	// percent sign (%2F, %5C, %25), a dot segment ("." or "..", encoded or
	// not, also "..;x"), an empty segment ("//", ";x"), a segment ending in
	// '.' or ' ', a backslash, a control byte, invalid UTF-8, or a
	// look-alike of '/', '\' or '.' (such as the full-width solidus). An
	// upstream could resolve such a path to another route than the one it
	// matched.
	ReasonBadPath = "bad_path"
	// ReasonNoRoute: the request matches no route of the service (enforcing
	// proxy and HTTP middleware only); it is denied before the token's
	// context is checked.
	ReasonNoRoute = "no_route"
)

// denyReasons is the closed set, in check order.
var denyReasons = []string{
	ReasonMissing, ReasonThrottled, ReasonMalformed, ReasonUnknownKey, ReasonBadSignature,
	ReasonNotYetValid, ReasonExpired, ReasonDenylistStale, ReasonRevoked,
	ReasonWrongAudience, ReasonScopeMissing, ReasonSourceNetwork,
	ReasonEnvironment, ReasonTimeWindow, ReasonDeviceBinding, ReasonQuarantined, ReasonStepUpRequired,
	ReasonBadPath, ReasonNoRoute,
}

// DenyReasons returns every deny reason, in the order an enforcer tests
// them (the middleware's ReasonBadPath and ReasonNoRoute last). The slice is
// the caller's.
func DenyReasons() []string { return slices.Clone(denyReasons) }

// IsDenyReason reports whether s is one of DenyReasons.
func IsDenyReason(s string) bool { return slices.Contains(denyReasons, s) }
