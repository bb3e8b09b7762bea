package policy

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

// Request is what a caller asks a token to allow. Empty dimensions are
// unrestricted as far as Check is concerned; Narrow fills them from the
// ceiling first.
type Request struct {
	Tenant string
	Holder string
	// Scopes are required: a request names what it needs.
	Scopes      []string
	Audience    []string
	Networks    []netip.Prefix
	Environment string
	Windows     []token.Window
	// Device is a lowercase hex SHA-256 thumbprint, or empty.
	Device string
	// TTL is the lifetime, expiry minus not-before.
	TTL        time.Duration
	BreakGlass bool
}

// Narrow fills the dimensions r leaves out from the ceiling c: audience,
// networks and windows become the ceiling's, the environment the ceiling's
// only environment (when it has exactly one), and the TTL max_ttl. Scopes,
// device binding and break-glass are never filled in.
func Narrow(c *Ceiling, r Request) Request {
	if len(r.Audience) == 0 {
		r.Audience = slices.Clone(c.Audiences)
	}
	if len(r.Networks) == 0 {
		r.Networks = slices.Clone(c.Networks)
	}
	if r.Environment == "" && len(c.Environments) == 1 {
		r.Environment = c.Environments[0]
	}
	if len(r.Windows) == 0 {
		r.Windows = slices.Clone(c.Windows)
	}
	if r.TTL == 0 {
		r.TTL = c.MaxTTL
	}
	return r
}

// Validate checks that the request is well formed, naming the field that is
// not. Errors wrap ErrInvalidRequest.
func (r *Request) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidRequest, field, fmt.Sprintf(format, args...))
	}
	if err := checkName(r.Tenant); err != nil {
		return bad("tenant", "%v", err)
	}
	if err := checkName(r.Holder); err != nil {
		return bad("holder", "%v", err)
	}
	if len(r.Scopes) == 0 {
		return bad("scopes", "at least one scope is required")
	}
	for i, s := range r.Scopes {
		if err := checkScope(s); err != nil {
			return bad(fmt.Sprintf("scopes[%d]", i), "%v", err)
		}
	}
	for i, a := range r.Audience {
		if err := checkAudience(a); err != nil {
			return bad(fmt.Sprintf("audience[%d]", i), "%v", err)
		}
	}
	for i, n := range r.Networks {
		if !n.IsValid() || n.Masked() != n || n.Addr().Is4In6() {
			return bad(fmt.Sprintf("networks[%d]", i), "%q is not a CIDR with host bits zero", n)
		}
	}
	if r.Environment != "" {
		if err := checkName(r.Environment); err != nil {
			return bad("environment", "%v", err)
		}
	}
	for i, w := range r.Windows {
		if err := w.Validate(); err != nil {
			return bad(fmt.Sprintf("windows[%d]", i), "%v", err)
		}
	}
	if r.Device != "" {
		if b, err := hex.DecodeString(r.Device); err != nil || len(b) != 32 || strings.ToLower(r.Device) != r.Device {
			return bad("device", "%q is not a lowercase hex SHA-256 thumbprint (64 characters)", r.Device)
		}
	}
	switch {
	case r.TTL == 0:
		return bad("ttl", "a token must expire: ttl is required")
	case r.TTL < 0:
		return bad("ttl", "%s is negative", r.TTL)
	case r.TTL < minTTL:
		return bad("ttl", "%s is shorter than %s", r.TTL, minTTL)
	}
	return nil
}

// Check reports whether r stays within the ceiling c. The error names the
// first claim that exceeds it and why, and wraps ErrExceedsCeiling (or
// ErrInvalidRequest for a malformed request). Dimensions are checked in a
// fixed order: scopes, audience, networks, environment, windows, device,
// ttl, break-glass.
func Check(c *Ceiling, r Request) error {
	name := c.Name()
	exceeds := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrExceedsCeiling, fmt.Sprintf(format, args...))
	}
	if r.Tenant != c.Tenant || r.Holder != c.Holder {
		return exceeds("a request for %s/%s cannot use the ceiling of %s", r.Tenant, r.Holder, name)
	}
	if err := r.Validate(); err != nil {
		return err
	}
	for _, s := range r.Scopes {
		if !slices.ContainsFunc(c.Scopes, func(g string) bool { return token.ScopeCovers(g, s) }) {
			return exceeds("scope %q is not in the ceiling of %s (allowed: %s)", s, name, strings.Join(c.Scopes, ", "))
		}
	}
	for _, a := range r.Audience {
		if !slices.Contains(c.Audiences, a) && !slices.Contains(c.Audiences, "*") {
			return exceeds("audience %q is not in the ceiling of %s (allowed: %s)", a, name, strings.Join(c.Audiences, ", "))
		}
	}
	if len(c.Networks) > 0 {
		allowed := joinPrefixes(c.Networks)
		if len(r.Networks) == 0 {
			return exceeds("a token usable from any network exceeds the ceiling of %s (allowed: %s)", name, allowed)
		}
		for _, n := range r.Networks {
			if slices.ContainsFunc(c.Networks, func(a netip.Prefix) bool { return within(n, a) }) {
				continue
			}
			if slices.ContainsFunc(c.Networks, func(a netip.Prefix) bool { return n.Overlaps(a) }) {
				return exceeds("network %s is wider than any allowed network of %s (allowed: %s)", n, name, allowed)
			}
			return exceeds("network %s is outside the allowed networks of %s (allowed: %s)", n, name, allowed)
		}
	}
	if len(c.Environments) > 0 {
		allowed := strings.Join(c.Environments, ", ")
		if r.Environment == "" {
			return exceeds("a token valid in any environment exceeds the ceiling of %s (allowed: %s); name one", name, allowed)
		}
		if !slices.Contains(c.Environments, r.Environment) {
			return exceeds("environment %q is not in the ceiling of %s (allowed: %s)", r.Environment, name, allowed)
		}
	}
	if len(c.Windows) > 0 {
		allowed := joinWindows(c.Windows)
		if len(r.Windows) == 0 {
			return exceeds("a token usable at any time exceeds the ceiling of %s (allowed windows: %s)", name, allowed)
		}
		for _, w := range r.Windows {
			if !slices.ContainsFunc(c.Windows, func(o token.Window) bool { return w.Within(o) }) {
				return exceeds("window %q is not within an allowed window of %s (allowed: %s)", FormatWindow(w), name, allowed)
			}
		}
	}
	if c.RequireDevice && r.Device == "" {
		return exceeds("device binding is required for %s: give the client certificate thumbprint", name)
	}
	if r.TTL > c.MaxTTL {
		return exceeds("ttl %s exceeds max_ttl %s of %s", FormatDuration(r.TTL), FormatDuration(c.MaxTTL), name)
	}
	if r.BreakGlass && !c.BreakGlass {
		return exceeds("break-glass tokens are not allowed for %s", name)
	}
	return nil
}

// within reports whether n is inside outer (same family, at least as long).
func within(n, outer netip.Prefix) bool {
	return n.Addr().BitLen() == outer.Addr().BitLen() && n.Bits() >= outer.Bits() && outer.Contains(n.Addr())
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func joinWindows(ws []token.Window) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = fmt.Sprintf("%q", FormatWindow(w))
	}
	return strings.Join(s, ", ")
}
