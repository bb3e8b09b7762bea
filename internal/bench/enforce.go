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
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
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

// Sizes of the enforce suite.
const (
	enforceSeenSamples  = 200_000
	enforceFirstSamples = 3_000
	enforceProxyRate    = 2000            // requests per second
	enforceProxyFor     = 3 * time.Second // each, direct and proxied
	enforceProxySlices  = 6
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

func runEnforceSuite(ctx context.Context, progress io.Writer) ([]Figure, error) {
	b, err := newEnforceBench(ctx)
	if err != nil {
		return nil, err
	}
	defer b.close()
	var figs []Figure

	fmt.Fprintln(progress, "   decision latency (in-process, usage events on)")
	f, err := b.decisions(ctx)
	if err != nil {
		return nil, err
	}
	figs = append(figs, f...)

	fmt.Fprintf(progress, "   forged-token flood from one source (%d distinct forgeries under a valid key id), throttled and not\n", enforceForgedSamples)
	f, err = b.forgedFlood()
	if err != nil {
		return nil, err
	}
	figs = append(figs, f...)

	fmt.Fprintf(progress, "   reverse proxy at %d req/s for %v each, direct and proxied in alternating slices\n", enforceProxyRate, enforceProxyFor)
	f, err = b.proxy(ctx)
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

func (b *enforceBench) decisions(ctx context.Context) ([]Figure, error) {
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
	fresh, err := b.mint(enforceFirstSamples + 501)
	if err != nil {
		return nil, err
	}
	next := enforceFirstSamples
	firstAllocs := enforceAllocsPerRun(500, func() {
		r := enforce.Request{Token: fresh[next], Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench"}
		quiet.Check(&r)
		next++
	})

	runtime.GC()
	seenLat := make([]time.Duration, enforceSeenSamples)
	for i := range seenLat {
		r := &reqs[i%len(reqs)]
		t0 := time.Now()
		d := e.Check(r)
		seenLat[i] = time.Since(t0)
		if !d.Allow {
			return nil, fmt.Errorf("seen token denied: %s", d.Reason)
		}
	}
	// Publish the seen phase's backlog first (200,000 decisions in well
	// under a second fill the usage buffer), so that it does not compete
	// with the first-seen phase for the CPU.
	fctx, fcancel = context.WithTimeout(ctx, 30*time.Second)
	err = e.Flush(fctx)
	fcancel()
	if err != nil {
		return nil, err
	}
	firstLat := make([]time.Duration, enforceFirstSamples)
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

	sp := Percentiles(seenLat, 50, 99)
	fp := Percentiles(firstLat, 50, 99)
	vp := Percentiles(verLat, 50, 99)
	st := e.Stats()
	return []Figure{
		{Name: "check, seen token, p50", Value: Micros(sp[0]), Unit: "µs", Target: "≤ 2", OK: sp[0] <= 2*time.Microsecond},
		{Name: "check, seen token, p99", Value: Micros(sp[1]), Unit: "µs", Target: "≤ 10", OK: sp[1] <= 10*time.Microsecond},
		{Name: "check, seen token, allocations per decision", Value: seenAllocs, Unit: "allocs", Target: "≤ 2", OK: seenAllocs <= 2},
		{Name: "check, first-seen token, p50", Value: Micros(fp[0]), Unit: "µs", OK: true},
		{Name: "check, first-seen token, p99", Value: Micros(fp[1]), Unit: "µs", Target: "≤ 100", OK: fp[1] <= 100*time.Microsecond},
		{Name: "check, first-seen token, allocations per decision", Value: firstAllocs, Unit: "allocs", OK: true},
		{Name: "ed25519.Verify alone (reference), p50", Value: Micros(vp[0]), Unit: "µs", OK: true},
		{Name: "ed25519.Verify alone (reference), p99", Value: Micros(vp[1]), Unit: "µs", OK: true},
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
func (b *enforceBench) forgedFlood() ([]Figure, error) {
	forger, err := token.GenerateSigner(time.Now())
	if err != nil {
		return nil, err
	}
	forger.KeyID = b.signer.KeyID
	toks := make([]string, enforceForgedSamples)
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
	return []Figure{
		{Name: "forged token, valid key id, one source: mean cost, throttled (default)", Value: Micros(throttled), Unit: "µs", OK: true},
		{Name: "forged token, valid key id, one source: mean cost, throttling off (baseline)", Value: Micros(open), Unit: "µs", OK: true},
		{Name: "forged token flood: signature checks run, throttled / off", Value: float64(tMiss), Unit: fmt.Sprintf("of %d (off: %d)", len(toks), oMiss), OK: true},
		{Name: "forged token flood: cost ratio off / throttled", Value: float64(open) / float64(max(throttled, 1)), Unit: "×", OK: true},
	}, nil
}

// proxy measures request latency at a fixed rate against the upstream
// directly and through the enforcing proxy (usage published to JetStream).
func (b *enforceBench) proxy(ctx context.Context) ([]Figure, error) {
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

	toks, err := b.mint(200)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	direct := "http://" + up.Addr().String() + "/invoices/42"
	proxied := "http://" + px.Addr().String() + "/invoices/42"

	// Warm up connections and the token cache.
	if _, err := enforceLoad(ctx, client, proxied, toks, enforceProxyRate, time.Second); err != nil {
		return nil, err
	}
	if _, err := enforceLoad(ctx, client, direct, toks, enforceProxyRate, time.Second); err != nil {
		return nil, err
	}
	// Direct and proxied runs alternate in short slices so that a change
	// in background load affects both alike.
	before := e.Stats()
	var dLat, pLat []time.Duration
	var dCPU, pCPU time.Duration
	for range enforceProxySlices {
		c0 := enforceCPUTime()
		l, err := enforceLoad(ctx, client, direct, toks, enforceProxyRate, enforceProxyFor/enforceProxySlices)
		if err != nil {
			return nil, err
		}
		c1 := enforceCPUTime()
		dLat, dCPU = append(dLat, l...), dCPU+c1-c0
		l, err = enforceLoad(ctx, client, proxied, toks, enforceProxyRate, enforceProxyFor/enforceProxySlices)
		if err != nil {
			return nil, err
		}
		pLat, pCPU = append(pLat, l...), pCPU+enforceCPUTime()-c1
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Flush(fctx); err != nil {
		return nil, err
	}
	after := e.Stats()
	dp := Percentiles(dLat, 50, 99)
	pp := Percentiles(pLat, 50, 99)
	added := pp[1] - dp[1]
	return []Figure{
		{Name: "CPU per request, direct (client + upstream)", Value: Micros(dCPU / time.Duration(len(dLat))), Unit: "µs", OK: true},
		{Name: "CPU per request, proxied (client + proxy + upstream + usage + NATS)", Value: Micros(pCPU / time.Duration(len(pLat))), Unit: "µs", OK: true},
		{Name: "upstream direct, p50", Value: Millis(dp[0]), Unit: "ms", OK: true},
		{Name: "upstream direct, p99", Value: Millis(dp[1]), Unit: "ms", OK: true},
		{Name: "through the enforcing proxy, p50", Value: Millis(pp[0]), Unit: "ms", OK: true},
		{Name: "through the enforcing proxy, p99", Value: Millis(pp[1]), Unit: "ms", OK: true},
		{Name: "proxy added latency, p99", Value: Millis(added), Unit: "ms", Target: "≤ 1", OK: added <= time.Millisecond},
		{Name: "proxy added latency, p50", Value: Millis(pp[0] - dp[0]), Unit: "ms", OK: true},
		{Name: "usage events published during the proxied run", Value: float64(after.UsagePublished - before.UsagePublished), Unit: "events", OK: true},
		{Name: "usage events dropped during the proxied run", Value: float64(after.UsageDropped - before.UsageDropped), Unit: "events", Target: "0", OK: after.UsageDropped == before.UsageDropped},
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

// enforceCPUTime is the process's user and system CPU time.
func enforceCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// load sends GET requests at a fixed rate for d (open loop: a slow reply
// does not delay the next request) and returns each request's latency.
func enforceLoad(ctx context.Context, c *http.Client, target string, toks []string, rate int, d time.Duration) ([]time.Duration, error) {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
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
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			req.Header.Set("Authorization", "Bearer "+toks[i%len(toks)])
			req.Header.Set("User-Agent", "cordon-bench")
			t0 := time.Now()
			resp, err := c.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s: status %d", target, resp.StatusCode)
				}
			}
			lat[i] = time.Since(t0)
			if err != nil {
				select {
				case errs <- err:
				default:
				}
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
