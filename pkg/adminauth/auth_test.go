package adminauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// ledger is a real JetStream with a signing key and a Follower: tokens
// "issued" here are recorded on TOKENS as the issuer records them.
type ledger struct {
	t      *testing.T
	env    *natstest.Env
	signer token.Signer
	ring   *token.Keyring
	f      *adminauth.Follower
	clk    *clock
}

func newLedger(t *testing.T, o adminauth.FollowOptions) *ledger {
	t.Helper()
	l := &ledger{t: t, env: natstest.Run(t), ring: token.NewKeyring(), clk: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	var err error
	if l.signer, err = token.GenerateSigner(l.clk.now()); err != nil {
		t.Fatal(err)
	}
	if err := l.ring.Add(l.signer.KeyID, l.signer.Public()); err != nil {
		t.Fatal(err)
	}
	o.JS = l.env.JS
	o.Log = zerolog.New(zerolog.NewTestWriter(t))
	if o.Now == nil {
		o.Now = l.clk.now
	}
	if l.f, err = adminauth.Follow(l.ctx(), o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.f.Close)
	return l
}

func (l *ledger) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	l.t.Cleanup(cancel)
	return ctx
}

// admin returns admin claims valid for an hour, issued now.
func (l *ledger) admin(scopes ...string) token.Claims {
	now := l.clk.now()
	return token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: scopes,
		Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()}
}

// issue mints c and records it on the ledger the way the issuer does.
func (l *ledger) issue(c token.Claims) string {
	l.t.Helper()
	tok := l.forge(c)
	lc := adminauth.LedgerClaims(c)
	l.publish(time.Unix(c.IssuedAt, 0), &events.TokenIssued{TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder, KeyID: l.signer.KeyID,
		Claims: lc, Actor: "issuer:test", BreakGlass: c.BreakGlass})
	return tok
}

// forge mints c with the real key and records nothing.
func (l *ledger) forge(c token.Claims) string {
	l.t.Helper()
	tok, err := l.signer.Mint(c)
	if err != nil {
		l.t.Fatal(err)
	}
	return tok
}

func (l *ledger) publish(at time.Time, p events.Payload) {
	l.t.Helper()
	e, err := events.New("test", at, p)
	if err != nil {
		l.t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.env.JS.Publish(l.ctx(), events.Subject(e), b, jetstream.WithMsgID(e.MsgID())); err != nil {
		l.t.Fatal(err)
	}
}

func (l *ledger) authn(o adminauth.Options) *adminauth.Authenticator {
	l.t.Helper()
	if o.Keys == nil {
		o.Keys = l.ring
	}
	o.Ledger = l.f
	o.Now = l.clk.now
	a, err := adminauth.New(o)
	if err != nil {
		l.t.Fatal(err)
	}
	return a
}

func with(c token.Claims, mod func(*token.Claims)) token.Claims {
	c.Scopes, c.Audience = slices.Clone(c.Scopes), slices.Clone(c.Audience)
	mod(&c)
	return c
}

// TestAuthenticate runs every rule of the authenticator against tokens on
// a real ledger: forged tokens (right key, not as the ledger recorded
// them) are refused, the ledger's scopes decide, the context is enforced
// and a transport that cannot see the caller refuses bound tokens.
func TestAuthenticate(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{})
	now := l.clk.now()
	other, err := token.GenerateSigner(now)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.ring.Add(other.KeyID, other.Public())
	outsider, _ := token.GenerateSigner(now)

	base := l.admin("cordon:read", "cordon:revoke")
	legit := l.issue(base)
	reader := l.admin("cordon:read")
	readerTok := l.issue(reader)
	netC := with(l.admin("cordon:read"), func(c *token.Claims) { c.Networks = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")} })
	netTok := l.issue(netC)
	day := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	todayTok := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) {
		c.Windows = []token.Window{{Days: []string{day[now.Weekday()]}, Start: "00:00", End: "24:00"}}
	}))
	otherDayTok := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) {
		c.Windows = []token.Window{{Days: []string{day[(now.Weekday()+3)%7]}, Start: "00:00", End: "24:00", Zone: "UTC"}}
	}))
	thumb := token.Thumbprint([]byte("the admin's certificate"))
	deviceTok := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) { c.Device = thumb }))
	envTok := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) { c.Environment = "prod" }))
	acme := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) { c.Tenant = "acme" }))
	noAud := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) { c.Audience = []string{"billing"} }))

	revoked := l.admin("cordon:read")
	revokedTok := l.issue(revoked)
	l.publish(now, &events.TokenRevoked{TokenID: revoked.ID, Tenant: "cordon", Holder: "admin", Kind: events.RevokeToken, Actor: "t", Reason: "leak", Expiry: time.Unix(revoked.Expiry, 0)})
	holderGone := with(l.admin("cordon:read"), func(c *token.Claims) { c.Holder = "ops" })
	holderGoneTok := l.issue(holderGone)
	sibling := with(l.admin("cordon:read"), func(c *token.Claims) { c.Holder = "ops" })
	l.issue(sibling)
	l.publish(now, &events.TokenRevoked{TokenID: sibling.ID, Tenant: "cordon", Holder: "ops", Kind: events.RevokeHolder, Actor: "t", Reason: "incident", Expiry: time.Unix(sibling.Expiry, 0)})
	expired := l.admin("cordon:read")
	expiredTok := l.issue(expired)
	l.publish(now, &events.TokenExpired{TokenID: expired.ID, Tenant: "cordon", Holder: "admin", Expiry: time.Unix(expired.Expiry, 0)})
	inGrace := l.admin("cordon:read")
	inGraceTok := l.issue(inGrace)
	l.publish(now, &events.TokenRotated{TokenID: inGrace.ID, SuccessorID: "s1", Tenant: "cordon", Holder: "admin", GraceUntil: now.Add(time.Minute), Actor: "t"})
	pastGrace := l.admin("cordon:read")
	pastGraceTok := l.issue(pastGrace)
	l.publish(now, &events.TokenRotated{TokenID: pastGrace.ID, SuccessorID: "s2", Tenant: "cordon", Holder: "admin", GraceUntil: now.Add(-time.Second), Actor: "t"})

	inside := &adminauth.Peer{Addr: netip.MustParseAddr("10.20.3.4")}
	outside := &adminauth.Peer{Addr: netip.MustParseAddr("192.0.2.7")}
	a := l.authn(adminauth.Options{})
	tests := []struct {
		name, tok, scope string
		peer             *adminauth.Peer
		want             error
		say              string
	}{
		{"legit", legit, "cordon:revoke", nil, nil, ""},
		{"legit over HTTP", legit, "cordon:read", outside, nil, ""},
		{"no token", "", "cordon:read", nil, adminauth.ErrUnauthenticated, "no admin token"},
		{"garbage", "cordon_xyz", "cordon:read", nil, adminauth.ErrUnauthenticated, "admin token rejected"},
		{"unknown key", func() string { s, _ := outsider.Mint(base); return s }(), "cordon:read", nil, adminauth.ErrUnauthenticated, "unknown signing key"},

		// (a) a fresh id with admin scopes, minted with the real key
		{"forged fresh id", l.forge(l.admin("cordon:*")), "cordon:revoke", nil, adminauth.ErrUnauthenticated, "not on the ledger"},
		// (b) a known id, claims widened
		{"forged wider scopes", l.forge(with(base, func(c *token.Claims) { c.Scopes = []string{"cordon:*"} })), "cordon:keys", nil, adminauth.ErrUnauthenticated, "scopes differ"},
		{"forged longer life", l.forge(with(base, func(c *token.Claims) { c.Expiry += 86400 * 365 })), "cordon:read", nil, adminauth.ErrUnauthenticated, "exp differ"},
		// (c) a cordon:read token's id with cordon:*
		{"forged reader as admin", l.forge(with(reader, func(c *token.Claims) { c.Scopes = []string{"cordon:*"} })), "cordon:read", nil, adminauth.ErrUnauthenticated, "scopes differ"},
		// any other claim that differs
		{"forged holder", l.forge(with(base, func(c *token.Claims) { c.Holder = "root" })), "cordon:read", nil, adminauth.ErrUnauthenticated, "holder differ"},
		{"forged key", func() string { s, _ := other.Mint(base); return s }(), "cordon:read", nil, adminauth.ErrUnauthenticated, "kid differ"},
		{"forged audience", l.forge(with(base, func(c *token.Claims) { c.Audience = []string{"cordon", "billing"} })), "cordon:read", nil, adminauth.ErrUnauthenticated, "audience differ"},
		{"forged networks dropped", l.forge(with(netC, func(c *token.Claims) { c.Networks = nil })), "cordon:read", nil, adminauth.ErrUnauthenticated, "networks differ"},
		{"forged environment", l.forge(with(base, func(c *token.Claims) { c.Environment = "dev" })), "cordon:read", nil, adminauth.ErrUnauthenticated, "environment differ"},
		{"forged windows", l.forge(with(base, func(c *token.Claims) { c.Windows = []token.Window{{Start: "00:00", End: "24:00"}} })), "cordon:read", nil, adminauth.ErrUnauthenticated, "windows differ"},
		{"forged device", l.forge(with(base, func(c *token.Claims) { c.Device = thumb })), "cordon:read", nil, adminauth.ErrUnauthenticated, "device differ"},
		{"forged not-before", l.forge(with(base, func(c *token.Claims) { c.NotBefore -= 60 })), "cordon:read", nil, adminauth.ErrUnauthenticated, "nbf differ"},
		{"forged break-glass", l.forge(with(base, func(c *token.Claims) { c.BreakGlass = true })), "cordon:read", nil, adminauth.ErrUnauthenticated, "break_glass differ"},
		{"forged later issue", l.forge(with(base, func(c *token.Claims) { c.IssuedAt += 3600 })), "cordon:read", nil, adminauth.ErrUnauthenticated, "iat differ"},
		{"earlier issue is the ledger's token", l.forge(with(base, func(c *token.Claims) { c.IssuedAt -= 3600 })), "cordon:read", nil, nil, ""},

		{"ledger's scopes decide", readerTok, "cordon:revoke", nil, adminauth.ErrForbidden, "lacks scope cordon:revoke"},
		{"other tenant", acme, "cordon:read", nil, adminauth.ErrForbidden, "not for the Cordon API"},
		{"other audience", noAud, "cordon:read", nil, adminauth.ErrForbidden, "not for the Cordon API"},
		{"revoked", revokedTok, "cordon:read", nil, adminauth.ErrUnauthenticated, "is revoked"},
		{"holder revoked", holderGoneTok, "cordon:read", nil, adminauth.ErrUnauthenticated, "is revoked"},
		{"expiry recorded", expiredTok, "cordon:read", nil, adminauth.ErrUnauthenticated, "has expired"},
		{"rotated, in grace", inGraceTok, "cordon:read", nil, nil, ""},
		{"rotated, past grace", pastGraceTok, "cordon:read", nil, adminauth.ErrUnauthenticated, "grace period ended"},

		{"network over NATS", netTok, "cordon:read", nil, adminauth.ErrForbidden, "use the HTTPS API"},
		{"network from outside", netTok, "cordon:read", outside, adminauth.ErrForbidden, "outside its networks"},
		{"network from an unknown address", netTok, "cordon:read", &adminauth.Peer{}, adminauth.ErrForbidden, "outside its networks"},
		{"network from inside", netTok, "cordon:read", inside, nil, ""},
		{"network from inside, IPv4-mapped", netTok, "cordon:read", &adminauth.Peer{Addr: netip.MustParseAddr("::ffff:10.20.3.4")}, nil, ""},
		{"window today", todayTok, "cordon:read", nil, nil, ""},
		{"window another day", otherDayTok, "cordon:read", outside, adminauth.ErrForbidden, "outside its time windows"},
		{"device over NATS", deviceTok, "cordon:read", nil, adminauth.ErrForbidden, "bound to a device"},
		{"device without certificate", deviceTok, "cordon:read", outside, adminauth.ErrForbidden, "no TLS client certificate"},
		{"device, another certificate", deviceTok, "cordon:read", &adminauth.Peer{Addr: outside.Addr, Device: token.Thumbprint([]byte("x"))}, adminauth.ErrForbidden, "another device"},
		{"device, its certificate", deviceTok, "cordon:read", &adminauth.Peer{Addr: outside.Addr, Device: thumb}, nil, ""},
		{"environment", envTok, "cordon:read", outside, adminauth.ErrForbidden, `bound to environment "prod"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.Authenticate(l.ctx(), adminauth.Request{Token: tt.tok, Scope: tt.scope, Peer: tt.peer})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Tenant != "cordon" || c.TokenID == "" || !c.HasScope(tt.scope) {
					t.Fatalf("caller %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.say) {
				t.Fatalf("error %v, want %v saying %q", err, tt.want, tt.say)
			}
			if c != nil {
				t.Fatal("a caller came with the refusal")
			}
			if len(tt.tok) > 20 && strings.Contains(err.Error(), tt.tok[len(tt.tok)-20:]) {
				t.Fatal("the error echoes the token")
			}
		})
	}

	t.Run("environment served", func(t *testing.T) {
		prod := l.authn(adminauth.Options{Environment: "prod"})
		if _, err := prod.Authenticate(l.ctx(), adminauth.Request{Token: envTok, Scope: "cordon:read"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("caller scopes are the ledger's", func(t *testing.T) {
		c, err := a.Authenticate(l.ctx(), adminauth.Request{Token: legit, Scope: "cordon:read"})
		if err != nil || !slices.Equal(c.Scopes, base.Scopes) || c.Actor() != "cordon/admin:"+base.ID {
			t.Fatalf("%+v, %v", c, err)
		}
	})
	t.Run("validity period", func(t *testing.T) {
		soon := l.issue(with(l.admin("cordon:read"), func(c *token.Claims) {
			c.NotBefore = now.Add(time.Hour).Unix()
			c.Expiry = now.Add(2 * time.Hour).Unix()
		}))
		if _, err := a.Authenticate(l.ctx(), adminauth.Request{Token: soon, Scope: "cordon:read"}); !errors.Is(err, adminauth.ErrUnauthenticated) || !strings.Contains(err.Error(), "not valid before") {
			t.Fatalf("not yet valid: %v", err)
		}
		l.clk.set(now.Add(2 * time.Hour))
		defer l.clk.set(now)
		if _, err := a.Authenticate(l.ctx(), adminauth.Request{Token: legit, Scope: "cordon:read"}); !errors.Is(err, adminauth.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired: %v", err)
		}
	})
}

// TestDenylist: with a denylist view (an enforcer's, on the real bucket),
// a rule the ledger view cannot see — a signing key revoked — refuses the
// admin token too.
func TestDenylist(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{})
	l.env.PublishKey(t, l.signer)
	enf, err := enforce.New(enforce.Options{ID: "admin-test", Service: "cordon", DisableUsage: true, TrustAnchors: l.env.Anchors(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	if err := enf.Start(l.ctx(), l.env.JS); err != nil {
		t.Fatal(err)
	}
	a := l.authn(adminauth.Options{Keys: enf, Denylist: enf})
	tok := l.issue(l.admin("cordon:read"))
	if _, err := a.Authenticate(l.ctx(), adminauth.Request{Token: tok, Scope: "cordon:read"}); err != nil {
		t.Fatalf("before the rule: %v", err)
	}
	deny, err := l.env.JS.KeyValue(l.ctx(), events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	rule, _ := json.Marshal(events.DenyRecord{Kind: events.RevokeKey, KeyID: l.signer.KeyID, Reason: "key stolen", Actor: "t",
		RevokedAt: l.clk.now(), Expiry: l.clk.now().Add(time.Hour)})
	if _, err := deny.Put(l.ctx(), events.DenyKeyKey(l.signer.KeyID), rule); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		_, err := a.Authenticate(l.ctx(), adminauth.Request{Token: tok, Scope: "cordon:read"})
		if !errors.Is(err, adminauth.ErrUnauthenticated) || !strings.Contains(err.Error(), "denylist") {
			return errors.New("the key rule does not refuse the admin token yet")
		}
		return nil
	})
}

// TestUnavailable: when the ledger cannot be read, admin requests are
// refused (fail closed) with ErrUnavailable.
func TestUnavailable(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{})
	tok := l.issue(l.admin("cordon:read"))
	a := l.authn(adminauth.Options{})
	if _, err := a.Authenticate(l.ctx(), adminauth.Request{Token: tok, Scope: "cordon:read"}); err != nil {
		t.Fatal(err)
	}
	l.env.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := a.Authenticate(ctx, adminauth.Request{Token: tok, Scope: "cordon:read"}); !errors.Is(err, adminauth.ErrUnavailable) {
		t.Fatalf("ledger unreachable: %v, want ErrUnavailable", err)
	}
}
