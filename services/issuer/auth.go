package issuer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/pkg/token"
)

// Caller is an authenticated user of the admin API.
type Caller struct {
	TokenID string
	Tenant  string
	Holder  string
	KeyID   string
	Scopes  []string
}

// Actor is how the caller is recorded on the ledger: "tenant/holder:token-id".
func (c *Caller) Actor() string { return c.Tenant + "/" + c.Holder + ":" + c.TokenID }

// HasScope reports whether the caller holds a scope covering want.
func (c *Caller) HasScope(want string) bool {
	return slices.ContainsFunc(c.Scopes, func(g string) bool { return token.ScopeCovers(g, want) })
}

// Authenticate verifies an admin token for an operation needing scope: it
// must be signed by one of this issuer's own keys (Ed25519 verification;
// the format's checksum is compared in constant time), be within its
// validity period, be in the registry and not revoked, be for tenant
// "cordon" with audience "cordon", and carry the scope. Failures wrap
// ErrUnauthenticated (who are you?) or ErrForbidden (not allowed).
func (i *Issuer) Authenticate(tok, scope string) (*Caller, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	return i.authenticate(tok, scope)
}

func (i *Issuer) authenticate(tok, scope string) (*Caller, error) {
	if tok == "" {
		return nil, fmt.Errorf("%w: no admin token: send \"Authorization: Bearer <token>\"", ErrUnauthenticated)
	}
	t, err := i.keys.ring.Verify(tok)
	if err != nil {
		// token errors describe the format, never echo the token
		return nil, fmt.Errorf("%w: admin token rejected: %v", ErrUnauthenticated, err)
	}
	now := i.now()
	if now.Before(t.NotBeforeTime()) {
		return nil, fmt.Errorf("%w: admin token %s is not valid before %s", ErrUnauthenticated, t.ID, t.NotBeforeTime().UTC())
	}
	if !now.Before(t.ExpiryTime()) {
		return nil, fmt.Errorf("%w: admin token %s expired at %s", ErrUnauthenticated, t.ID, t.ExpiryTime().UTC())
	}
	info, ok := i.reg.get(t.ID, now)
	if !ok {
		return nil, fmt.Errorf("%w: admin token %s is not in the ledger", ErrUnauthenticated, t.ID)
	}
	if info.Status == StatusRevoked || info.Status == StatusExpired {
		return nil, fmt.Errorf("%w: admin token %s is %s", ErrUnauthenticated, t.ID, info.Status)
	}
	if t.Tenant != AdminTenant || !slices.Contains(t.Audience, AdminAudience) {
		return nil, fmt.Errorf("%w: token %s (%s/%s, audience %s) is not for the Cordon API: want tenant %q and audience %q",
			ErrForbidden, t.ID, t.Tenant, t.Holder, strings.Join(t.Audience, ","), AdminTenant, AdminAudience)
	}
	c := &Caller{TokenID: t.ID, Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, Scopes: t.Scopes}
	if !c.HasScope(scope) {
		return nil, fmt.Errorf("%w: token %s lacks scope %s (has %s)", ErrForbidden, t.ID, scope, strings.Join(t.Scopes, ", "))
	}
	return c, nil
}

// authorizeGrant stops a caller from minting Cordon API scopes it does not
// hold itself: a token with only cordon:issue cannot mint a cordon:keys
// token.
func authorizeGrant(c *Caller, tenant string, scopes []string) error {
	if tenant != AdminTenant {
		return nil
	}
	for _, s := range scopes {
		if !c.HasScope(s) {
			return fmt.Errorf("%w: cannot grant scope %s, which the caller %s/%s does not hold", ErrForbidden, s, c.Tenant, c.Holder)
		}
	}
	return nil
}
