package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// RevocationSuite measures revocation propagation (revoke request → every
// enforcer denies) with 1, 10 and 100 enforcers, and detection to denial
// (first out-of-context request → the token denied by every enforcer) on
// the whole embedded system.
func RevocationSuite() Suite {
	return Suite{Name: "revocation", Summary: "revocation to denial on 1, 10 and 100 enforcers; detection to denial", Run: runRevocationSuite}
}

func runRevocationSuite(ctx context.Context, progress io.Writer) ([]Figure, error) {
	var figs []Figure
	for _, c := range []struct{ enforcers, trials int }{{1, 200}, {10, 200}, {100, 100}} {
		fmt.Fprintf(progress, "   propagation to %d enforcer(s), %d revocations…\n", c.enforcers, c.trials)
		p50, p99, err := propagation(ctx, c.enforcers, c.trials)
		if err != nil {
			return nil, err
		}
		target := ""
		ok := true
		if c.enforcers == 10 {
			target, ok = "≤ 10 ms", p99 <= 10*time.Millisecond
		}
		figs = append(figs,
			Figure{Name: fmt.Sprintf("revoke → denied by all %d enforcers, p50", c.enforcers), Value: Millis(p50), Unit: "ms", OK: true},
			Figure{Name: fmt.Sprintf("revoke → denied by all %d enforcers, p99", c.enforcers), Value: Millis(p99), Unit: "ms", Target: target, OK: ok})
	}
	fmt.Fprintf(progress, "   detection to denial on the whole system, 10 enforcers…\n")
	p50, p99, n, err := detectionToDenial(ctx, 10, 40)
	if err != nil {
		return nil, err
	}
	figs = append(figs,
		Figure{Name: fmt.Sprintf("first out-of-context request → denied everywhere, p50 (n=%d)", n), Value: Millis(p50), Unit: "ms", OK: true},
		Figure{Name: fmt.Sprintf("first out-of-context request → denied everywhere, p99 (n=%d)", n), Value: Millis(p99), Unit: "ms", Target: "≤ 100 ms", OK: p99 <= 100*time.Millisecond})
	return figs, nil
}

// benchEnforcers starts n enforcers, each on its own connection, all
// watching the keys and denylist buckets.
//
// connect opens the connection of enforcer id (on a secured server, with
// that enforcer's own identity).
func benchEnforcers(ctx context.Context, connect func(id string) (*nats.Conn, error), n int, service string, anchors token.Anchors) ([]*enforce.Enforcer, func(), error) {
	var es []*enforce.Enforcer
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	for i := 0; i < n; i++ {
		nc, err := connect(benchEnforcerID(i))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		e, err := enforce.New(enforce.Options{ID: benchEnforcerID(i), Service: service, DisableUsage: true, TrustAnchors: anchors, Log: zerolog.Nop()})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		if err := e.Start(ctx, js); err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, func() { e.Close() })
		es = append(es, e)
	}
	return es, closeAll, nil
}

// benchEnforcerID is the id of the i-th benchmark enforcer.
func benchEnforcerID(i int) string { return fmt.Sprintf("bench-%d", i) }

// untilAllDeny polls the enforcers until each denies req as revoked and
// returns when the last one did.
func untilAllDeny(ctx context.Context, es []*enforce.Enforcer, req func() *enforce.Request, timeout time.Duration) (time.Time, error) {
	pending := append([]*enforce.Enforcer(nil), es...)
	deadline := time.Now().Add(timeout)
	var last time.Time
	for len(pending) > 0 {
		rest := pending[:0]
		for _, e := range pending {
			if d := e.Check(req()); d.Reason == enforce.ReasonRevoked {
				last = time.Now()
				continue
			}
			rest = append(rest, e)
		}
		pending = rest
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return last, fmt.Errorf("%d of %d enforcers still allow the token after %v", len(pending), len(es), timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
	return last, nil
}

func propagation(ctx context.Context, n, trials int) (p50, p99 time.Duration, err error) {
	dir, err := os.MkdirTemp("", "cordon-bench-revoke-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, Port: -1})
	if err != nil {
		return 0, 0, err
	}
	defer srv.Stop()
	nc, err := srv.Connect("bench-keys")
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	if err := natsconn.Ensure(ctx, js, events.StreamOptions{}); err != nil {
		return 0, 0, err
	}
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		return 0, 0, err
	}
	anchor, err := token.GenerateAnchor()
	if err != nil {
		return 0, 0, err
	}
	anchors := token.Anchors{anchor.Public()}
	rec, _ := json.Marshal(anchor.EndorsedRecord(events.KeyRecord{KeyID: signer.KeyID, PublicKey: signer.Public(), Created: time.Now().UTC()}))
	keys, err := js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		return 0, 0, err
	}
	if _, err := keys.Put(ctx, signer.KeyID, rec); err != nil {
		return 0, 0, err
	}
	svc, err := revoker.Start(ctx, revoker.Config{NATS: natsconn.Config{URL: srv.ClientURL(), Name: "bench-revoker",
		Options: []nats.Option{nats.InProcessServer(srv.Server)}}, TrustAnchors: anchors, Response: response.Default(),
		Source: "bench", Log: zerolog.Nop()})
	if err != nil {
		return 0, 0, err
	}
	defer svc.Close()
	rv := svc.Revoker()
	es, closeAll, err := benchEnforcers(ctx, func(id string) (*nats.Conn, error) { return srv.Connect("bench-enforcer-" + id) }, n, "bench", anchors)
	if err != nil {
		return 0, 0, err
	}
	defer closeAll()

	samples := make([]time.Duration, 0, trials)
	for i := 0; i < trials; i++ {
		now := time.Now()
		c := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "bench", Holder: "svc", Scopes: []string{"x:read"},
			Audience: []string{"bench"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
		tok, err := signer.Mint(c)
		if err != nil {
			return 0, 0, err
		}
		req := func() *enforce.Request {
			return &enforce.Request{Token: tok, Method: "GET", Route: "/x", Scope: "x:read", RemoteAddr: netip.MustParseAddr("127.0.0.1")}
		}
		// Every enforcer has the token cached as good before it is revoked.
		for _, e := range es {
			if d := e.Check(req()); !d.Allow {
				return 0, 0, fmt.Errorf("warm-up denied: %s", d.Reason)
			}
		}
		start := time.Now()
		if _, err := rv.Revoke(ctx, revoker.Request{Kind: events.RevokeToken, TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder, Actor: "bench", Reason: "bench"}); err != nil {
			return 0, 0, err
		}
		last, err := untilAllDeny(ctx, es, req, 10*time.Second)
		if err != nil {
			return 0, 0, err
		}
		samples = append(samples, last.Sub(start))
	}
	ps := Percentiles(samples, 50, 99)
	return ps[0], ps[1], nil
}

// detectionToDenial runs the leak on the whole embedded system (issuer,
// auditor with detectors, revoker, enforcers) trials times: a token learns
// its baseline from one address, then is used from another; the time is
// from that first out-of-context request until every enforcer denies it.
func detectionToDenial(ctx context.Context, enforcers, trials int) (p50, p99 time.Duration, n int, err error) {
	dir, err := os.MkdirTemp("", "cordon-bench-loop-")
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	extra := make([]string, max(enforcers-1, 0))
	for i := range extra {
		extra[i] = benchEnforcerID(i)
	}
	sys, err := up.Start(ctx, up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: sharedChDBPath(), Database: "bench_loop", Log: zerolog.Nop(), ExtraEnforcers: extra})
	if err != nil {
		return 0, 0, 0, err
	}
	defer sys.Close()
	others, closeAll, err := benchEnforcers(ctx, func(id string) (*nats.Conn, error) {
		return sys.Connect("bench-enforcer-"+id, sys.EnforcerCredsFile(id))
	}, enforcers-1, "invoices", token.Anchors{sys.Issuer.TrustAnchor()})
	if err != nil {
		return 0, 0, 0, err
	}
	defer closeAll()
	all := append([]*enforce.Enforcer{sys.Enforcer}, others...)
	holderIP, attackerIP := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.66.0.9")

	samples := make([]time.Duration, 0, trials)
	for i := 0; i < trials; i++ {
		res, err := sys.Issuer.Issue(ctx, "bench", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
		if err != nil {
			return 0, 0, 0, err
		}
		req := func(ip netip.Addr) *enforce.Request {
			return &enforce.Request{Token: res.Token, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: ip, UserAgent: "bench"}
		}
		before := sys.Auditor.Stats().Usage
		const learn = 25
		for k := 0; k < learn; k++ {
			if d := sys.Enforcer.Check(req(holderIP)); !d.Allow {
				return 0, 0, 0, fmt.Errorf("legitimate use denied: %s", d.Reason)
			}
		}
		if err := sys.Enforcer.Flush(ctx); err != nil {
			return 0, 0, 0, err
		}
		deadline := time.Now().Add(20 * time.Second)
		for sys.Auditor.Stats().Usage < before+learn {
			if time.Now().After(deadline) {
				return 0, 0, 0, fmt.Errorf("auditor did not catch up")
			}
			time.Sleep(time.Millisecond)
		}
		// The leak: the first request from elsewhere is still allowed.
		start := time.Now()
		if d := sys.Enforcer.Check(req(attackerIP)); !d.Allow {
			return 0, 0, 0, fmt.Errorf("first attacker request denied early: %s", d.Reason)
		}
		last, err := untilAllDeny(ctx, all, func() *enforce.Request { return req(attackerIP) }, 10*time.Second)
		if err != nil {
			return 0, 0, 0, err
		}
		samples = append(samples, last.Sub(start))
	}
	ps := Percentiles(samples, 50, 99)
	return ps[0], ps[1], len(samples), nil
}
