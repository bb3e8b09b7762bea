package adminauth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// DefaultLeeway is how early, by the service's clock, a token is accepted
// before its not-before time (clock skew between issuer and service).
const DefaultLeeway = 30 * time.Second

// Sentinel errors; every refusal wraps exactly one of them.
var (
	// ErrUnauthenticated: no token, or one that is not a valid admin token
	// (format, signature, validity period, not on the ledger or not as
	// the ledger recorded it, revoked, expired).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: a genuine token that may not do this, here or now
	// (tenant, audience, scope, environment, window, network, device).
	ErrForbidden = errors.New("forbidden")
	// ErrUnavailable: the ledger or the denylist could not be read; the
	// request is refused (fail closed) and may be retried.
	ErrUnavailable = errors.New("admin authentication unavailable")
)

// KeySource verifies a token's signature (format, checksum, key id and
// Ed25519 signature) and returns its claims. *token.Keyring satisfies it,
// and so does *enforce.Enforcer.
type KeySource interface {
	Verify(s string) (*token.Token, error)
}

// Ledger is a view of the ledger's admin tokens.
type Ledger interface {
	// Lookup returns what the ledger holds about token id, as of the call:
	// it may wait, bounded by ctx, for the view to catch up. An error
	// means the view could not be brought up to date.
	Lookup(ctx context.Context, id string) (Record, bool, error)
}

// Denylist is a service's view of the denylist bucket (token entries and
// holder, key, tenant and "before" rules). *enforce.Enforcer satisfies it.
type Denylist interface {
	Revoked(ctx context.Context, t *token.Token) (bool, error)
}

// Options configures an Authenticator.
type Options struct {
	// Keys verifies signatures (required).
	Keys KeySource
	// Ledger is the view of the admin tokens' ledger (required).
	Ledger Ledger
	// Denylist, when set, is consulted too: rules the ledger view cannot
	// see (a key revoked through another tenant's token) still apply.
	Denylist Denylist
	// Environment is the control plane's environment: an admin token bound
	// to an environment is accepted only when it is this one (so, with the
	// default "", never).
	Environment string
	// Leeway is the clock skew allowed on not-before (default
	// DefaultLeeway; negative for none). Expiry is exact.
	Leeway time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Authenticator applies the control plane's admin-token rules. It is safe
// for concurrent use.
type Authenticator struct {
	o Options
}

// New checks the options.
func New(o Options) (*Authenticator, error) {
	if o.Keys == nil || o.Ledger == nil {
		return nil, errors.New("adminauth: a key source and a ledger view are required")
	}
	if o.Leeway == 0 {
		o.Leeway = DefaultLeeway
	}
	o.Leeway = max(o.Leeway, 0)
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authenticator{o: o}, nil
}

// Peer is what a transport knows about the caller.
type Peer struct {
	// Addr is the caller's address as the socket saw it.
	Addr netip.Addr
	// Device is the hex SHA-256 thumbprint (token.Thumbprint) of the TLS
	// client certificate the caller proved it holds; empty when none.
	Device string
}

// Request is one call to authenticate.
type Request struct {
	// Token is the presented token (never logged, never echoed).
	Token string
	// Scope is what the operation needs, such as "cordon:issue".
	Scope string
	// Peer is what the transport knows about the caller; nil when it knows
	// nothing (a NATS request): a token bound to networks or a device is
	// then refused, since the binding cannot be checked.
	Peer *Peer
}

// Caller is an authenticated administrator.
type Caller struct {
	TokenID string
	Tenant  string
	Holder  string
	KeyID   string
	// Scopes are the scopes the ledger recorded for the token.
	Scopes []string
}

// Actor is how the caller is recorded: "tenant/holder:token-id".
func (c *Caller) Actor() string { return c.Tenant + "/" + c.Holder + ":" + c.TokenID }

// HasScope reports whether the caller holds a scope covering want.
func (c *Caller) HasScope(want string) bool {
	return slices.ContainsFunc(c.Scopes, func(g string) bool { return token.ScopeCovers(g, want) })
}

// Authenticate checks req.Token for req.Scope; see the package comment for
// the rules, in the order they apply. The Caller's scopes are the ledger's.
func (a *Authenticator) Authenticate(ctx context.Context, req Request) (*Caller, error) {
	if req.Token == "" {
		return nil, fmt.Errorf("%w: no admin token", ErrUnauthenticated)
	}
	t, err := a.o.Keys.Verify(req.Token)
	if err != nil {
		// token errors describe the format, never echo the token
		return nil, fmt.Errorf("%w: admin token rejected: %v", ErrUnauthenticated, err)
	}
	now := a.o.Now()
	if now.Add(a.o.Leeway).Before(t.NotBeforeTime()) {
		return nil, fmt.Errorf("%w: admin token %s is not valid before %s", ErrUnauthenticated, t.ID, t.NotBeforeTime().UTC().Format(time.RFC3339))
	}
	if !now.Before(t.ExpiryTime()) {
		return nil, fmt.Errorf("%w: admin token %s expired at %s", ErrUnauthenticated, t.ID, t.ExpiryTime().UTC().Format(time.RFC3339))
	}
	if t.Tenant != events.AdminTenant || !slices.Contains(t.Audience, events.AdminAudience) {
		return nil, fmt.Errorf("%w: token %s (%s/%s, audience %s) is not for the Cordon API: want tenant %q and audience %q",
			ErrForbidden, t.ID, t.Tenant, t.Holder, strings.Join(t.Audience, ","), events.AdminTenant, events.AdminAudience)
	}

	rec, ok, err := a.o.Ledger.Lookup(ctx, t.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: read the ledger for admin token %s: %v", ErrUnavailable, t.ID, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: admin token %s is not on the ledger", ErrUnauthenticated, t.ID)
	}
	if diff := rec.Diff(t); len(diff) > 0 {
		return nil, fmt.Errorf("%w: admin token %s is not the token the ledger recorded (%s differ)", ErrUnauthenticated, t.ID, strings.Join(diff, ", "))
	}
	if why := rec.refusal(now); why != "" {
		return nil, fmt.Errorf("%w: admin token %s %s", ErrUnauthenticated, t.ID, why)
	}
	if a.o.Denylist != nil {
		revoked, err := a.o.Denylist.Revoked(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("%w: check the denylist for admin token %s: %v", ErrUnavailable, t.ID, err)
		}
		if revoked {
			return nil, fmt.Errorf("%w: admin token %s is revoked (denylist)", ErrUnauthenticated, t.ID)
		}
	}

	c := &Caller{TokenID: t.ID, Tenant: rec.Tenant, Holder: rec.Holder, KeyID: rec.KeyID, Scopes: slices.Clone(rec.Claims.Scopes)}
	if !c.HasScope(req.Scope) {
		return nil, fmt.Errorf("%w: token %s lacks scope %s (has %s)", ErrForbidden, t.ID, req.Scope, strings.Join(c.Scopes, ", "))
	}
	if err := a.context(t, now, req.Peer); err != nil {
		return nil, err
	}
	return c, nil
}

// context checks the token's environment, windows, networks and device.
func (a *Authenticator) context(t *token.Token, now time.Time, p *Peer) error {
	if t.Environment != "" && t.Environment != a.o.Environment {
		where := fmt.Sprintf("environment %q", a.o.Environment)
		if a.o.Environment == "" {
			where = "no environment"
		}
		return fmt.Errorf("%w: admin token %s is bound to environment %q; this control plane serves %s", ErrForbidden, t.ID, t.Environment, where)
	}
	if !t.AllowsTime(now) {
		return fmt.Errorf("%w: admin token %s may not be used at %s (outside its time windows)", ErrForbidden, t.ID, now.UTC().Format(time.RFC3339))
	}
	if len(t.Networks) > 0 {
		switch {
		case p == nil:
			return fmt.Errorf("%w: admin token %s is bound to networks, which a NATS request cannot prove; use the HTTPS API", ErrForbidden, t.ID)
		case !p.Addr.IsValid() || !t.AllowsAddr(p.Addr.Unmap()):
			return fmt.Errorf("%w: admin token %s may not be used from %s (outside its networks)", ErrForbidden, t.ID, p.Addr)
		}
	}
	if t.Device != "" {
		switch {
		case p == nil:
			return fmt.Errorf("%w: admin token %s is bound to a device, which a NATS request cannot prove; use the HTTPS API", ErrForbidden, t.ID)
		case p.Device == "":
			return fmt.Errorf("%w: admin token %s is bound to a device and no TLS client certificate was presented", ErrForbidden, t.ID)
		case !t.AllowsDevice(p.Device):
			return fmt.Errorf("%w: admin token %s is bound to another device than the TLS client certificate presented", ErrForbidden, t.ID)
		}
	}
	return nil
}
