package faults_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

const outagePolicy = `version: 1
holders:
  - tenant: acme
    holder: billing-api
    scopes: [invoices:read]
    audiences: [invoices]
    max_ttl: 24h
`

// gatedDialer dials only while open: the enforcer's link to NATS, which
// the test holds shut to keep the enforcer away after NATS has returned.
type gatedDialer struct{ open atomic.Bool }

var errGateShut = errors.New("link held down by the test")

func (g *gatedDialer) Dial(network, address string) (net.Conn, error) {
	if !g.open.Load() {
		return nil, errGateShut
	}
	return (&net.Dialer{Timeout: time.Second}).Dial(network, address)
}

// TestEnforcerWhenNATSStops stops the NATS server under an enforcer that
// has a staleness bound and fails closed: it keeps enforcing its last
// denylist (a revoked token denied, a good one allowed) until the bound,
// then denies everything as denylist_stale. NATS restarts on the same port
// and data directory, a token is revoked while the enforcer is still away,
// and once the enforcer is let back it resyncs: the good token is allowed
// again and the token revoked in its absence is never allowed. Every
// judgement is a property of the decisions against the enforcer's bound
// (their start and end times against when NATS stopped and the view's
// current-as-of), never a wall-clock window: a loaded machine delays
// decisions, it does not change what they must be.
func TestEnforcerWhenNATSStops(t *testing.T) {
	const maxStale = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, Port: -1, ServerName: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Stop()
		}
	})
	connect := func(name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		nc, err := nats.Connect(url, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	_, admin := connect("admin")
	if err := natsconn.Ensure(ctx, admin, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("outage.yaml", []byte(outagePolicy))
	if err != nil {
		t.Fatal(err)
	}
	nc, js := connect("issuer")
	iss, err := issuer.New(issuer.Options{NC: nc, JS: js, DataDir: t.TempDir(), Policy: pol, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	nc, js = connect("revoker")
	anchors := token.Anchors{iss.TrustAnchor()}
	rv, err := revoker.New(revoker.Options{NC: nc, JS: js, Policy: response.Default(), Log: zerolog.Nop(), TrustAnchors: anchors})
	if err != nil {
		t.Fatal(err)
	}
	if err := rv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rv.Close() })
	gate := &gatedDialer{}
	gate.open.Store(true)
	_, js = connect("enforcer", nats.SetCustomDialer(gate))
	enf, err := enforce.New(enforce.Options{ID: "edge-1", Service: "invoices", MaxStaleness: maxStale, FailClosed: true, TrustAnchors: anchors, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	if err := enf.Start(ctx, js); err != nil {
		t.Fatal(err)
	}
	probe := enf.Options().ProbeInterval

	tokens := map[string]string{} // name -> token string
	ids := map[string]string{}
	for _, name := range []string{"good", "bad", "late"} {
		res, err := iss.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[name], ids[name] = res.Token, res.ID
	}
	// slow counts decisions that took over a second: Check waited on the
	// network (a reconnect lasts seconds; a decision, microseconds).
	slow := 0
	check := func(name string) enforce.Decision {
		start := time.Now()
		d := enf.Check(&enforce.Request{Token: tokens[name], Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("10.0.0.1")})
		if time.Since(start) > time.Second {
			slow++
		}
		return d
	}
	revoke := func(name string) time.Time {
		t.Helper()
		natstest.WaitFor(t, 30*time.Second, func() error {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := rv.Revoke(rctx, revoker.Request{Kind: events.RevokeToken, TokenID: ids[name], Actor: "test", Reason: "outage drill"})
			return err
		})
		return time.Now()
	}
	revoke("bad")
	natstest.WaitFor(t, 5*time.Second, func() error {
		if d := check("bad"); d.Reason != enforce.ReasonRevoked {
			return fmt.Errorf("bad token: %s, want revoked", d.Reason)
		}
		return nil
	})
	for _, name := range []string{"good", "late"} {
		if d := check(name); !d.Allow {
			t.Fatalf("%s token denied before the outage: %s", name, d.Reason)
		}
	}

	// NATS stops; the enforcer's link is held down from now on.
	gate.open.Store(false)
	srv.Stop()
	stopped = true
	down := time.Now()
	t.Logf("nats stopped; enforcer view last current %v before", down.Sub(enf.DenylistCurrentAt()).Round(time.Millisecond))
	// The outage is judged on properties of every decision, each taken
	// with its start and end: the view cannot be current after NATS
	// stopped, so the enforcer's final current-as-of c is at most down;
	// a round that ended before c+maxStale must still enforce the last
	// denylist (good and late allowed, bad revoked), every round that
	// started after c+maxStale — and so after down+maxStale — must deny
	// all three as denylist_stale, the revoked token is never allowed,
	// and once failed closed the enforcer stays closed.
	// The view's current-as-of instant may move back during the outage
	// (when the revokers' broadcast falls silent the bucket's older
	// instant caps it), never forward: each round is judged by the
	// instants sampled around it.
	type round struct {
		start, end      time.Time
		before, after   time.Time // DenylistCurrentAt around the round
		good, bad, late enforce.Decision
	}
	var rounds []round
	after := 0 // rounds started past down+maxStale
	natstest.WaitFor(t, 60*time.Second, func() error {
		for range 20 {
			r := round{before: enf.DenylistCurrentAt(), start: time.Now()}
			r.good, r.bad, r.late = check("good"), check("bad"), check("late")
			r.end = time.Now()
			r.after = enf.DenylistCurrentAt()
			rounds = append(rounds, r)
			if r.start.Sub(down) > maxStale {
				after++
			}
			time.Sleep(5 * time.Millisecond)
		}
		if after < 20 {
			return fmt.Errorf("%d rounds past the bound, want 20", after)
		}
		return nil
	})
	current := enf.DenylistCurrentAt()
	if current.After(down) {
		t.Fatalf("denylist view current as of %v after nats stopped", current.Sub(down))
	}
	var within, beyond int
	var lastAllowed, firstStale time.Time
	for _, r := range rounds {
		at := r.start.Sub(down).Round(time.Millisecond)
		if r.bad.Allow {
			t.Fatalf("revoked token allowed %v into the outage", at)
		}
		allowed := r.good.Allow || r.late.Allow
		stale := r.good.Reason == enforce.ReasonDenylistStale && r.late.Reason == enforce.ReasonDenylistStale && r.bad.Reason == enforce.ReasonDenylistStale
		switch {
		case allowed && !firstStale.IsZero():
			t.Fatalf("allowed again %v into the outage after failing closed at %v", at, firstStale.Sub(down))
		case allowed:
			lastAllowed = r.end
		case stale && firstStale.IsZero():
			firstStale = r.start
		}
		lo, hi := r.before, r.after
		if hi.Before(lo) {
			lo, hi = hi, lo
		}
		if hi.After(down) {
			t.Fatalf("%v into the outage: denylist view current as of %v after nats stopped", at, hi.Sub(down))
		}
		switch {
		case r.start.After(down.Add(maxStale)) && !stale:
			// The property: nothing is enforced on a view older than the
			// bound, whatever the view says of itself.
			t.Errorf("%v into the outage, past nats stopping + the bound: good %s, late %s, bad %s; want denylist_stale for all",
				at, r.good.Reason, r.late.Reason, r.bad.Reason)
		case r.end.Before(lo.Add(maxStale)):
			within++
			if r.good.Reason != enforce.ReasonOK || r.late.Reason != enforce.ReasonOK || r.bad.Reason != enforce.ReasonRevoked {
				t.Errorf("%v into the outage, within the bound (view current %v before nats stopped): good %s, late %s, bad %s; want ok, ok, revoked",
					at, down.Sub(lo), r.good.Reason, r.late.Reason, r.bad.Reason)
			}
		case r.start.After(hi.Add(maxStale)):
			beyond++
			if !stale {
				t.Errorf("%v into the outage, past the bound: good %s, late %s, bad %s; want denylist_stale for all",
					at, r.good.Reason, r.late.Reason, r.bad.Reason)
			}
		}
	}
	if within == 0 || beyond == 0 {
		t.Fatalf("%d rounds within the bound and %d past it: nothing to judge one side by", within, beyond)
	}
	t.Logf("view current %v before nats stopped; enforced its last denylist in %d rounds (last allowed %v into the outage), failed closed in %d (first %v into it); bound %v, probe every %v",
		down.Sub(current).Round(time.Millisecond), within, lastAllowed.Sub(down).Round(time.Millisecond), beyond,
		firstStale.Sub(down).Round(time.Millisecond), maxStale, probe)

	// NATS returns on the same port and data directory; a token is revoked
	// while the enforcer is still away.
	srv, err = natsrun.Start(natsrun.Options{DataDir: dir, Port: port, ServerName: "outage"})
	if err != nil {
		t.Fatalf("restart nats on port %d: %v", port, err)
	}
	stopped = false
	back := time.Now()
	revokedAt := revoke("late")
	t.Logf("nats back on port %d; token revoked %v later while the enforcer is away", port, revokedAt.Sub(back).Round(time.Millisecond))
	for _, name := range []string{"good", "late", "bad"} {
		if d := check(name); d.Reason != enforce.ReasonDenylistStale {
			t.Fatalf("%s token %s while the enforcer is away, want denylist_stale", name, d.Reason)
		}
	}

	// The enforcer is let back: it must resync before it allows anything,
	// and never allow the token revoked in its absence.
	gate.open.Store(true)
	opened := time.Now()
	var resynced time.Time
	for resynced.IsZero() && time.Since(opened) < 60*time.Second {
		late, good := check("late"), check("good")
		if late.Allow {
			t.Fatalf("token revoked while the enforcer was away allowed %v after it came back", time.Since(opened))
		}
		if good.Allow {
			resynced = time.Now()
			break
		}
		if good.Reason != enforce.ReasonDenylistStale {
			t.Fatalf("good token %s while resyncing", good.Reason)
		}
		time.Sleep(time.Millisecond)
	}
	if resynced.IsZero() {
		t.Fatalf("enforcer still failing closed 60s after its link came back (denylist revision %d, current at %v)",
			enf.DenylistRevision(), enf.DenylistCurrentAt())
	}
	t.Logf("enforcer resynced %v after its link came back (%v after nats returned)",
		resynced.Sub(opened).Round(time.Millisecond), resynced.Sub(back).Round(time.Millisecond))
	want := map[string]enforce.Reason{"good": enforce.ReasonOK, "bad": enforce.ReasonRevoked, "late": enforce.ReasonRevoked}
	for name, reason := range want {
		if d := check(name); d.Reason != reason {
			t.Errorf("after the resync %s token: %s, want %s", name, d.Reason, reason)
		}
	}
	if bound := 5 * time.Second; resynced.Sub(opened) > bound {
		t.Errorf("resync took %v after the link came back, want at most %v", resynced.Sub(opened), bound)
	}
	if slow != 0 {
		t.Errorf("%d decisions took over a second: Check waited on the network", slow)
	}
}
