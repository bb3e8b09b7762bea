package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/enforcer"
)

// EnforceSuite measures the enforcer: in-process decision latency for seen
// and first-seen tokens, allocations per decision, and the latency the
// reverse proxy adds over calling the upstream directly at a fixed rate,
// with usage events published to a real (embedded) JetStream.
func EnforceSuite() Suite {
	return Suite{Name: "enforce", Summary: "decision latency and allocations; latency the enforcing proxy adds", Run: runEnforceSuite}
}

// Sizes of the enforce suite (full run; a smoke run takes far fewer).
const (
	// enforceSeenSamples decisions on seen tokens are timed at
	// enforceSeenRate decisions per second, a rate the usage publisher
	// keeps up with (the suite fails the figure if it dropped any).
	enforceSeenSamples = 200_000
	enforceSeenRate    = 20_000
	// enforceFirstSamples decisions on first-seen tokens are timed.
	enforceFirstSamples = 3_000
	// enforceProxyTriples triples of requests (direct, through the
	// enforcing proxy, through a plain reverse proxy) start at
	// enforceProxyRate triples per second, after enforceProxyWarmup.
	enforceProxyTriples = 3_000
	enforceProxyWarmup  = 500
	enforceProxyRate    = 1000
	// enforceForgedSamples forged tokens are checked per setting.
	enforceForgedSamples = 20_000
)

type enforceBench struct {
	srv    *natsrun.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	signer token.Signer
	anchor token.Anchor
	routes *enforce.Routes
	dir    string
}

func runEnforceSuite(ctx context.Context, env Env) ([]Figure, error) {
	progress := env.Progress
	b, err := newEnforceBench(ctx)
	if err != nil {
		return nil, err
	}
	defer b.close()
	var figs []Figure

	seenN, seenRate := env.size(enforceSeenSamples, 2000), env.size(enforceSeenRate, 20_000)
	fmt.Fprintf(progress, "   decision latency (in-process, usage events published to JetStream): %d seen-token decisions at %d/s, %d first-seen\n",
		seenN, seenRate, env.size(enforceFirstSamples, 300))
	f, err := b.decisions(ctx, seenN, seenRate, env.size(enforceFirstSamples, 300))
	if err != nil {
		return nil, err
	}
	figs = append(figs, f...)

	forged := env.size(enforceForgedSamples, 500)
	fmt.Fprintf(progress, "   forged-token flood from one source (%d distinct forgeries under a valid key id), throttled and not\n", forged)
	f, err = b.forgedFlood(forged)
	if err != nil {
		return nil, err
	}
	figs = append(figs, f...)

	triples, warm := env.size(enforceProxyTriples, 100), env.size(enforceProxyWarmup, 20)
	fmt.Fprintf(progress, "   reverse proxy: %d triples of requests (direct, enforcing proxy, plain httputil.ReverseProxy; order rotating) at %d triples/s after %d warm-up triples\n",
		triples, enforceProxyRate, warm)
	f, err = b.proxy(ctx, triples, warm)
	if err != nil {
		return nil, err
	}
	return append(figs, f...), nil
}

func newEnforceBench(ctx context.Context) (*enforceBench, error) {
	dir, err := os.MkdirTemp("", "cordon-bench-enforce-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	b := &enforceBench{dir: dir}
	if b.srv, err = natsrun.Start(natsrun.Options{DataDir: filepath.Join(dir, "nats"), Port: -1}); err != nil {
		b.close()
		return nil, err
	}
	if b.nc, err = natsconn.Dial(natsconn.Config{URL: b.srv.ClientURL(), Name: "bench-enforce"}); err != nil {
		b.close()
		return nil, err
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		b.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := natsconn.Ensure(ctx, b.js, events.StreamOptions{}); err != nil {
		b.close()
		return nil, err
	}
	if b.signer, err = token.GenerateSigner(time.Now()); err != nil {
		b.close()
		return nil, err
	}
	kv, err := b.js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		b.close()
		return nil, fmt.Errorf("keys bucket: %w", err)
	}
	if b.anchor, err = token.GenerateAnchor(); err != nil {
		b.close()
		return nil, err
	}
	rec, _ := json.Marshal(b.anchor.EndorsedRecord(events.KeyRecord{KeyID: b.signer.KeyID, PublicKey: b.signer.Public(), Created: time.Now().UTC()}))
	if _, err := kv.Put(ctx, b.signer.KeyID, rec); err != nil {
		b.close()
		return nil, fmt.Errorf("publish key: %w", err)
	}
	b.routes, err = enforce.ParseRoutes("bench", []byte(`service: invoices
environment: prod
routes:
  - {method: GET, path: "/invoices/{id}", scope: "invoices:read"}
  - {method: GET, path: /invoices, scope: "invoices:list"}
`))
	if err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *enforceBench) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Stop()
	}
	os.RemoveAll(b.dir)
}

func (b *enforceBench) enforcer(ctx context.Context, id string) (*enforce.Enforcer, error) {
	e, err := enforce.New(enforce.Options{ID: id, Routes: b.routes, TrustAnchors: token.Anchors{b.anchor.Public()}, Log: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Start(sctx, b.js); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (b *enforceBench) mint(n int) ([]string, error) {
	out := make([]string, n)
	now := time.Now()
	for i := range out {
		var err error
		out[i], err = b.signer.Mint(token.Claims{
			ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "billing-worker",
			Scopes: []string{"invoices:read", "invoices:list"}, Audience: []string{"invoices"},
			Networks:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			IssuedAt:  now.Unix(),
			NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix(),
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decisions times Check on seen tokens at a steady rate the usage
// publisher keeps up with (seenN decisions at seenRate per second; every
// decision's usage event must be published, none dropped), then on
// firstN first-seen tokens, then ed25519.Verify alone as the baseline of
// the first-seen figure.
func (b *enforceBench) decisions(ctx context.Context, seenN, seenRate, firstN int) ([]Figure, error) {
	e, err := b.enforcer(ctx, "bench-check")
	if err != nil {
		return nil, err
	}
	defer e.Close()
	seen, err := b.mint(1000)
	if err != nil {
		return nil, err
	}
	reqs := make([]enforce.Request, len(seen))
	for i, t := range seen {
		reqs[i] = enforce.Request{Token: t, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench"}
		if d := e.Check(&reqs[i]); !d.Allow {
			return nil, fmt.Errorf("warm-up decision denied: %s", d.Reason)
		}
	}
	// Allocations on the request path, counted on an enforcer without a
	// background publisher (whose own allocations MemStats would count).
	quiet, err := enforce.New(enforce.Options{ID: "bench-allocs", Routes: b.routes, Log: zerolog.Nop(), DisableUsage: true})
	if err != nil {
		return nil, err
	}
	defer quiet.Close()
	if err := quiet.AddKey(b.signer.KeyID, b.signer.Public()); err != nil {
		return nil, err
	}
	quiet.Check(&reqs[0])
	// Let the warm-up's usage events drain first: MemStats counts every
	// goroutine's allocations.
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	err = e.Flush(fctx)
	fcancel()
	if err != nil {
		return nil, err
	}
	seenAllocs := enforceAllocsPerRun(10_000, func() { quiet.Check(&reqs[0]) })
	fresh, err := b.mint(firstN + 501)
	if err != nil {
		return nil, err
	}
	next := firstN
	firstAllocs := enforceAllocsPerRun(500, func() {
		r := enforce.Request{Token: fresh[next], Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench"}
		quiet.Check(&r)
		next++
	})

	runtime.GC()
	// Seen tokens at a steady rate: decision i is due at start + i/rate;
	// the loop sleeps when ahead and decides back to back when behind, so
	// the achieved rate is reported beside the figures. The timer spans
	// one Check call.
	before := e.Stats()
	seenLat := make([]time.Duration, seenN)
	interval := time.Second / time.Duration(seenRate)
	start := time.Now()
	for i := range seenLat {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		r := &reqs[i%len(reqs)]
		t0 := time.Now()
		d := e.Check(r)
		seenLat[i] = time.Since(t0)
		if !d.Allow {
			return nil, fmt.Errorf("seen token denied: %s", d.Reason)
		}
	}
	seenFor := time.Since(start)
	fctx, fcancel = context.WithTimeout(ctx, 30*time.Second)
	err = e.Flush(fctx)
	fcancel()
	if err != nil {
		return nil, err
	}
	afterSeen := e.Stats()
	seenDropped := afterSeen.UsageDropped - before.UsageDropped
	seenPublished := afterSeen.UsagePublished - before.UsagePublished
	seenRateGot := float64(seenN) / seenFor.Seconds()
	firstLat := make([]time.Duration, firstN)
	runtime.GC()
	for i := range firstLat {
		r := enforce.Request{Token: fresh[i], Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench"}
		t0 := time.Now()
		d := e.Check(&r)
		firstLat[i] = time.Since(t0)
		if !d.Allow {
			return nil, fmt.Errorf("first-seen token denied: %s", d.Reason)
		}
	}

	// The signature check alone, for reference: first-seen latency is
	// bounded below by it.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte(fresh[0])
	sig := ed25519.Sign(priv, msg)
	verLat := make([]time.Duration, 2000)
	for i := range verLat {
		t0 := time.Now()
		ed25519.Verify(pub, msg, sig)
		verLat[i] = time.Since(t0)
	}

	sp := Percentiles(seenLat, 50, 99, 99.9)
	fp := Percentiles(firstLat, 50, 99)
	vp := Percentiles(verLat, 50, 99)
	st := e.Stats()
	seenHow := fmt.Sprintf("timer around one Check; n=%d at %.0f decisions/s achieved (%d/s asked), usage published to JetStream, %d dropped", len(seenLat), seenRateGot, seenRate, seenDropped)
	firstHow := fmt.Sprintf("timer around one Check of a token never seen; n=%d; baseline: ed25519.Verify alone below", len(firstLat))
	verHow := fmt.Sprintf("timer around one ed25519.Verify; n=%d", len(verLat))
	return []Figure{
		{Name: "check, seen token, sustained rate", Value: seenRateGot, Unit: "decisions/s", OK: true, How: fmt.Sprintf("%d decisions over %v, paced", len(seenLat), seenFor.Round(time.Millisecond))},
		{Name: "check, seen token, " + sp[0].Label, Value: Micros(sp[0].Value), Unit: "µs", Target: "≤ 2", OK: sp[0].Value <= 2*time.Microsecond, How: seenHow},
		{Name: "check, seen token, " + sp[1].Label, Value: Micros(sp[1].Value), Unit: "µs", Target: "≤ 10", OK: !sp[1].Max && sp[1].Value <= 10*time.Microsecond, How: seenHow},
		{Name: "check, seen token, " + sp[2].Label, Value: Micros(sp[2].Value), Unit: "µs", OK: true, How: seenHow},
		{Name: "check, seen token: usage events dropped at that rate", Value: float64(seenDropped), Unit: "events", Target: "0", OK: seenDropped == 0,
			How: fmt.Sprintf("Stats.UsageDropped over the timed decisions; %d published", seenPublished)},
		{Name: "check, seen token: usage events published at that rate", Value: float64(seenPublished), Unit: "events", Target: fmt.Sprintf("= %d", len(seenLat)), OK: seenPublished == uint64(len(seenLat)),
			How: "Stats.UsagePublished after Flush"},
		{Name: "check, seen token, allocations per decision", Value: seenAllocs, Unit: "allocs", Target: "≤ 2", OK: seenAllocs <= 2, How: "runtime.MemStats.Mallocs over 10,000 decisions, usage off, GOMAXPROCS 1"},
		{Name: "check, first-seen token, " + fp[0].Label, Value: Micros(fp[0].Value), Unit: "µs", OK: true, How: firstHow},
		{Name: "check, first-seen token, " + fp[1].Label, Value: Micros(fp[1].Value), Unit: "µs", Target: "≤ 100", OK: !fp[1].Max && fp[1].Value <= 100*time.Microsecond, How: firstHow},
		{Name: "check, first-seen token, allocations per decision", Value: firstAllocs, Unit: "allocs", OK: true, How: "runtime.MemStats.Mallocs over 500 decisions, usage off"},
		{Name: "ed25519.Verify alone (baseline), " + vp[0].Label, Value: Micros(vp[0].Value), Unit: "µs", OK: true, How: verHow},
		{Name: "ed25519.Verify alone (baseline), " + vp[1].Label, Value: Micros(vp[1].Value), Unit: "µs", OK: true, How: verHow},
		{Name: "verified-token cache entries / capacity", Value: float64(st.CacheEntries) / float64(st.CacheCapacity), Unit: "ratio", OK: true},
	}, nil
}

// forgedFlood measures what a flood of distinct forged tokens (a valid key
// id, a signature by another key) from one source costs the enforcer per
// request: with the default throttle, which refuses a source's cache-miss
// tokens once it failed too often, and with throttling off (every forgery
// costs an Ed25519 verification). Each setting runs the same
// enforceForgedSamples tokens on its own enforcer (no usage events, no
// NATS), one after the other in this process; the timer spans the whole
// loop of Check calls, so the figures are means.
func (b *enforceBench) forgedFlood(n int) ([]Figure, error) {
	forger, err := token.GenerateSigner(time.Now())
	if err != nil {
		return nil, err
	}
	forger.KeyID = b.signer.KeyID
	toks := make([]string, n)
	now := time.Now()
	for i := range toks {
		toks[i], err = forger.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "billing-worker",
			Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, IssuedAt: now.Unix(),
			NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()})
		if err != nil {
			return nil, err
		}
	}
	run := func(burst int) (time.Duration, uint64, error) {
		e, err := enforce.New(enforce.Options{ID: "bench-forged", Routes: b.routes, Log: zerolog.Nop(), DisableUsage: true, ThrottleBurst: burst})
		if err != nil {
			return 0, 0, err
		}
		defer e.Close()
		if err := e.AddKey(b.signer.KeyID, b.signer.Public()); err != nil {
			return 0, 0, err
		}
		src := netip.MustParseAddr("198.51.100.7")
		runtime.GC()
		t0 := time.Now()
		for _, t := range toks {
			r := enforce.Request{Token: t, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: src}
			if e.Check(&r).Allow {
				return 0, 0, errors.New("a forged token was allowed")
			}
		}
		return time.Since(t0) / time.Duration(len(toks)), e.Stats().CacheMisses, nil
	}
	throttled, tMiss, err := run(0)
	if err != nil {
		return nil, err
	}
	open, oMiss, err := run(-1)
	if err != nil {
		return nil, err
	}
	how := fmt.Sprintf("timer around the loop of %d Check calls, divided by n", len(toks))
	return []Figure{
		{Name: "forged token, valid key id, one source: mean cost, throttled (default)", Value: Micros(throttled), Unit: "µs", OK: true, How: how + "; baseline: throttling off below"},
		{Name: "forged token, valid key id, one source: mean cost, throttling off (baseline)", Value: Micros(open), Unit: "µs", OK: true, How: how},
		{Name: "forged token flood: signature checks run, throttled / off", Value: float64(tMiss), Unit: fmt.Sprintf("of %d (off: %d)", len(toks), oMiss), OK: true},
		{Name: "forged token flood: cost ratio off / throttled", Value: float64(open) / float64(max(throttled, 1)), Unit: "×", OK: true},
	}, nil
}

// proxy measures the latency a reverse proxy adds to a request, by
// triples: the same request sent to the upstream directly, through the
// enforcing proxy (as `cordon enforce` runs it, usage published to
// JetStream) and through a plain httputil.ReverseProxy without enforcement
// (same transport settings), one after the other in an order that rotates
// through all six permutations. Each triple gives two differences
// (enforcing − direct, plain − direct), whose percentiles are the added
// latency; triples start at enforceProxyRate per second (open loop).
func (b *enforceBench) proxy(ctx context.Context, triples, warmup int) ([]Figure, error) {
	up, err := enforceServe(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"42","amount":1200}`)
	}))
	if err != nil {
		return nil, err
	}
	defer up.Close()
	upURL, _ := url.Parse("http://" + up.Addr().String())

	// The enforcing proxy as `cordon enforce` runs it, with its own NATS
	// connection.
	px, err := enforcer.Start(ctx, enforcer.Config{
		Options:  enforce.Options{ID: "bench-proxy", Routes: b.routes, TrustAnchors: token.Anchors{b.anchor.Public()}, Log: zerolog.Nop()},
		NATS:     natsconn.Config{URL: b.srv.ClientURL()},
		Upstream: upURL.String(), Listen: "127.0.0.1:0", SyncTimeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	defer px.Close()
	e := px.Enforcer()

	// The plain reverse proxy: what any proxy in front of the service
	// costs, without enforcement.
	plain, err := enforceServe(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(upURL); pr.SetXForwarded() },
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		},
	})
	if err != nil {
		return nil, err
	}
	defer plain.Close()

	toks, err := b.mint(200)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	targets := [3]string{
		"http://" + up.Addr().String() + "/invoices/42",
		"http://" + px.Addr().String() + "/invoices/42",
		"http://" + plain.Addr().String() + "/invoices/42",
	}
	// Warm up connections and the token cache.
	if _, err := enforceTriples(ctx, client, targets, toks, enforceProxyRate, warmup); err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	err = e.Flush(wctx)
	wcancel()
	if err != nil {
		return nil, err
	}
	before := e.Stats()
	c0 := cpuTime()
	lat, err := enforceTriples(ctx, client, targets, toks, enforceProxyRate, triples)
	if err != nil {
		return nil, err
	}
	cpu := cpuTime() - c0
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Flush(fctx); err != nil {
		return nil, err
	}
	after := e.Stats()
	direct, enf, pl := make([]time.Duration, len(lat)), make([]time.Duration, len(lat)), make([]time.Duration, len(lat))
	addEnf, addPlain := make([]time.Duration, len(lat)), make([]time.Duration, len(lat))
	for i, l := range lat {
		direct[i], enf[i], pl[i] = l[0], l[1], l[2]
		addEnf[i], addPlain[i] = l[1]-l[0], l[2]-l[0]
	}
	dp, ep, pp := Percentiles(direct, 50, 99), Percentiles(enf, 50, 99), Percentiles(pl, 50, 99)
	ae, ap := Percentiles(addEnf, 50, 99), Percentiles(addPlain, 50, 99)
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(max(b, time.Microsecond)) }
	how := fmt.Sprintf("timer around one client request (send to body read); n=%d triples at %d/s, order rotating", len(lat), enforceProxyRate)
	pairHow := fmt.Sprintf("per triple: proxied − direct of the same triple; n=%d", len(lat))
	return []Figure{
		{Name: "upstream direct (baseline), " + dp[0].Label, Value: Millis(dp[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "upstream direct (baseline), " + dp[1].Label, Value: Millis(dp[1].Value), Unit: "ms", OK: true, How: how},
		{Name: "through the enforcing proxy, " + ep[0].Label, Value: Millis(ep[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "through the enforcing proxy, " + ep[1].Label, Value: Millis(ep[1].Value), Unit: "ms", OK: true, How: how},
		{Name: "through a plain httputil.ReverseProxy, " + pp[0].Label, Value: Millis(pp[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "through a plain httputil.ReverseProxy, " + pp[1].Label, Value: Millis(pp[1].Value), Unit: "ms", OK: true, How: how},
		{Name: "enforcing proxy added latency (paired), " + ae[0].Label, Value: Millis(ae[0].Value), Unit: "ms", OK: true, How: pairHow},
		{Name: "enforcing proxy added latency (paired), " + ae[1].Label, Value: Millis(ae[1].Value), Unit: "ms", Target: "≤ 1", OK: !ae[1].Max && ae[1].Value <= time.Millisecond, How: pairHow},
		{Name: "plain reverse proxy added latency (paired), " + ap[0].Label, Value: Millis(ap[0].Value), Unit: "ms", OK: true, How: pairHow},
		{Name: "plain reverse proxy added latency (paired), " + ap[1].Label, Value: Millis(ap[1].Value), Unit: "ms", OK: true, How: pairHow},
		{Name: "added latency enforcing / plain, " + ae[0].Label, Value: ratio(ae[0].Value, ap[0].Value), Unit: "×", OK: true, How: "ratio of the two paired figures above"},
		{Name: "added latency enforcing / plain, " + ae[1].Label, Value: ratio(ae[1].Value, ap[1].Value), Unit: "×", OK: true, How: "ratio of the two paired figures above"},
		{Name: "process CPU per triple (client, upstream, both proxies, usage, NATS)", Value: Micros(cpu / time.Duration(max(len(lat), 1))), Unit: "µs", OK: true,
			How: "getrusage over the timed triples, divided by n"},
		{Name: "usage events published during the timed triples", Value: float64(after.UsagePublished - before.UsagePublished), Unit: "events", OK: true},
		{Name: "usage events dropped during the timed triples", Value: float64(after.UsageDropped - before.UsageDropped), Unit: "events", Target: "0", OK: after.UsageDropped == before.UsageDropped},
	}, nil
}

// enforceAllocsPerRun is the average number of heap allocations of f over runs
// calls, after one warm-up call (as testing.AllocsPerRun, without importing
// testing into the binary). It counts every goroutine's allocations.
func enforceAllocsPerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(runs)
}

// enforceHTTPServer is a plain HTTP server on a loopback port.
type enforceHTTPServer struct {
	ln  net.Listener
	srv *http.Server
}

func enforceServe(h http.Handler) (*enforceHTTPServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &enforceHTTPServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the server's listening address.
func (s *enforceHTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server.
func (s *enforceHTTPServer) Close() { _ = s.srv.Close() }

// perms are the six orders of a triple's requests.
var perms = [6][3]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}}

// enforceTriples starts n triples at rate per second (open loop: a slow
// triple does not delay the next one); each sends the same GET to the
// three targets one after the other, in the order perms[i%6], and records
// each request's latency by target.
func enforceTriples(ctx context.Context, c *http.Client, targets [3]string, toks []string, rate, n int) ([][3]time.Duration, error) {
	interval := time.Second / time.Duration(rate)
	lat := make([][3]time.Duration, n)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for _, k := range perms[i%len(perms)] {
				d, err := enforceGet(ctx, c, targets[k], toks[i%len(toks)])
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				lat[i][k] = d
			}
		}(i)
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return lat, nil
}

// enforceGet sends one GET with the token and reads the whole reply.
func enforceGet(ctx context.Context, c *http.Client, target, tok string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "cordon-bench")
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: status %d", target, resp.StatusCode)
	}
	return d, err
}
