package issuer

import (
	"errors"
	"net/http"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Sentinel errors callers branch on. Errors from the policy package
// (policy.ErrExceedsCeiling, policy.ErrUnknownHolder,
// policy.ErrInvalidRequest) pass through wrapped, and so does
// adminauth.ErrUnavailable (503: the ledger could not be read).
// ErrUnauthenticated and ErrForbidden are the admin authenticator's own,
// shared by every control-plane service.
var (
	ErrBadRequest      = errors.New("bad request")
	ErrUnauthenticated = adminauth.ErrUnauthenticated
	ErrForbidden       = adminauth.ErrForbidden
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	ErrNotReady        = errors.New("issuer not ready")
)

// Classify maps an error to its HTTP status and the stable code used in
// ErrorBody and CmdReply.
func Classify(err error) (status int, code string) {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, ErrBadRequest), errors.Is(err, policy.ErrInvalidRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, policy.ErrUnknownHolder):
		return http.StatusUnprocessableEntity, "unknown_holder"
	case errors.Is(err, policy.ErrExceedsCeiling):
		return http.StatusUnprocessableEntity, "exceeds_ceiling"
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests, "rate_limited"
	case errors.Is(err, ErrNotReady), errors.Is(err, adminauth.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	}
	return http.StatusInternalServerError, "internal"
}
