package enforce

import (
	"net/http"

	"github.com/cordonhq/cordon/pkg/events"
)

// Reason says why a request was allowed or denied. Its values are the event
// contract's (pkg/events: ReasonOK and the closed set of deny reasons,
// documented there); Check tests them in the order events.DenyReasons lists
// them and reports the first that fails. ReasonBadPath and ReasonNoRoute
// come from the HTTP middleware, which decides them before the token's
// context. This package adds the HTTP status of each (HTTPStatus).
type Reason string

// ReasonOK is the reason of every allow.
const ReasonOK Reason = events.ReasonOK

// Deny reasons, in the order Check tests them; see the events constants of
// the same names for what each means.
const (
	ReasonMissing       Reason = events.ReasonMissing
	ReasonThrottled     Reason = events.ReasonThrottled // see also Options.ThrottleBurst
	ReasonMalformed     Reason = events.ReasonMalformed
	ReasonUnknownKey    Reason = events.ReasonUnknownKey
	ReasonBadSignature  Reason = events.ReasonBadSignature
	ReasonNotYetValid   Reason = events.ReasonNotYetValid
	ReasonExpired       Reason = events.ReasonExpired
	ReasonDenylistStale Reason = events.ReasonDenylistStale // Options.MaxStaleness with Options.FailClosed; off by default
	ReasonRevoked       Reason = events.ReasonRevoked
	ReasonWrongAudience Reason = events.ReasonWrongAudience
	ReasonScopeMissing  Reason = events.ReasonScopeMissing
	ReasonSourceNetwork Reason = events.ReasonSourceNetwork
	ReasonEnvironment   Reason = events.ReasonEnvironment
	ReasonTimeWindow    Reason = events.ReasonTimeWindow
	ReasonDeviceBinding Reason = events.ReasonDeviceBinding
	// ReasonQuarantined and ReasonStepUpRequired come from the graduated
	// response's restrictions (denylist entries events.DenyKeyNarrow and
	// events.DenyKeyStepUp), checked after every other check has passed.
	ReasonQuarantined    Reason = events.ReasonQuarantined
	ReasonStepUpRequired Reason = events.ReasonStepUpRequired
	ReasonBadPath        Reason = events.ReasonBadPath // proxy and middleware only
	ReasonNoRoute        Reason = events.ReasonNoRoute // proxy and middleware only
)

// Reasons lists every deny reason, in check order (the middleware's
// ReasonBadPath and ReasonNoRoute last): events.DenyReasons, typed.
func Reasons() []Reason {
	all := events.DenyReasons()
	out := make([]Reason, len(all))
	for i, r := range all {
		out[i] = Reason(r)
	}
	return out
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
