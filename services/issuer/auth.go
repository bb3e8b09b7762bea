package issuer

import (
	"context"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/pkg/adminauth"
)

// Caller is an authenticated user of the admin API; its scopes are the
// ones the ledger recorded for its token.
type Caller = adminauth.Caller

// catchUpTimeout bounds how long an admin request waits for the registry
// to apply the ledger as it stood when the request came in.
const catchUpTimeout = 5 * time.Second

// Authenticate verifies an admin token for an operation needing
// req.Scope, with the control plane's one set of rules (pkg/adminauth):
// signed by one of this issuer's own keys, within its validity period, for
// tenant "cordon" and audience "cordon", known to the registry with exactly
// the claims the ledger recorded at issue, neither revoked, expired nor
// rotated past its grace period, the registry's scopes covering the
// operation, and its environment, windows, networks and device satisfied by
// what the transport knows (req.Peer). Failures wrap ErrUnauthenticated
// (who are you?), ErrForbidden (not allowed) or adminauth.ErrUnavailable.
func (i *Issuer) Authenticate(ctx context.Context, req adminauth.Request) (*Caller, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	return i.admins.Authenticate(ctx, req)
}

// ledgerView is the registry as the admin authenticator's ledger view: the
// issuer follows the whole ledger already, so it is not followed twice.
type ledgerView struct{ i *Issuer }

// Lookup implements adminauth.Ledger: it waits until the registry has
// applied the ledger as it stands now, then returns the token's record.
func (v ledgerView) Lookup(ctx context.Context, id string) (adminauth.Record, bool, error) {
	i := v.i
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := i.ledger.Sync(ctx); err != nil {
		return adminauth.Record{}, false, fmt.Errorf("registry behind the ledger: %w", err)
	}
	rec, ok := i.reg.record(id, i.now())
	return rec, ok, nil
}

// record is what the registry holds about a token, as the admin
// authenticator reads it.
func (r *registry) record(id string, now time.Time) (adminauth.Record, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.tokens[id]
	if !ok {
		return adminauth.Record{}, false
	}
	info := e.snapshot(now)
	rec := adminauth.Record{
		TokenID: info.ID, Tenant: info.Tenant, Holder: info.Holder, KeyID: info.KeyID,
		Claims: info.Claims, BreakGlass: info.BreakGlass, IssuedAt: e.issued,
		Revoked: info.RevokedAt != nil, ExpiryRecorded: e.expiredEvent, SuccessorID: info.SuccessorID,
	}
	if info.GraceUntil != nil {
		rec.GraceUntil = *info.GraceUntil
	}
	return rec, true
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
