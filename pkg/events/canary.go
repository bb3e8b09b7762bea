package events

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Canary tokens (issue 13): tokens minted for no one to use, planted where
// a thief looks (a CI secret, a config file, a wiki page). Every enforcer
// denies them from the start, like a revoked token; the first use at any
// enforcer is reported at once on core NATS, and the revoker alerts
// on-call without waiting for the auditor.

// SubjectCanaryPrefix starts the subjects enforcers report canary use on.
const SubjectCanaryPrefix = "cordon.canary."

// CanarySubject is the subject enforcer reports canary use on.
func CanarySubject(enforcer string) string { return SubjectCanaryPrefix + enforcer }

// Detector names of canary alerts.
const (
	// DetectorCanaryUsed: a canary token was presented.
	DetectorCanaryUsed = "canary_used"
)

// CanaryTripped is an enforcer's report of a canary token presented to it.
// It names the token by id, never by its string.
type CanaryTripped struct {
	TokenID   string    `json:"token_id"`
	Tenant    string    `json:"tenant"`
	Holder    string    `json:"holder"`
	Enforcer  string    `json:"enforcer"`
	Time      time.Time `json:"time"`
	SourceIP  string    `json:"source_ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Method    string    `json:"method,omitempty"`
	Route     string    `json:"route,omitempty"`
}

// ErrCanaryReport is returned for a malformed CanaryTripped.
var ErrCanaryReport = errors.New("canary report")

// Validate checks a report's fields.
func (c *CanaryTripped) Validate() error {
	switch {
	case c.TokenID == "" || c.Tenant == "" || c.Enforcer == "" || c.Time.IsZero():
		return fmt.Errorf("%w: token_id, tenant, enforcer and time are required", ErrCanaryReport)
	case len(c.UserAgent) > 1024 || len(c.Route) > 1024 || len(c.Method) > 32 || len(c.Holder) > 256:
		return fmt.Errorf("%w: a field is too long", ErrCanaryReport)
	}
	if c.SourceIP != "" {
		if _, err := netip.ParseAddr(c.SourceIP); err != nil {
			return fmt.Errorf("%w: source_ip %q", ErrCanaryReport, c.SourceIP)
		}
	}
	if err := ValidateName(c.Enforcer); err != nil {
		return fmt.Errorf("%w: enforcer: %v", ErrCanaryReport, err)
	}
	return nil
}
