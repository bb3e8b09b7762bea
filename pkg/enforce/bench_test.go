package enforce

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// benchEnforcer has the demo routes, a key, and usage events on but no
// publisher (the enqueue is measured; a full buffer drops).
func benchEnforcer(b *testing.B, mod func(*Options)) (*Enforcer, token.Signer) {
	b.Helper()
	s := newSigner(b)
	rs, err := LoadRoutes(demoRoutes)
	if err != nil {
		b.Fatal(err)
	}
	o := Options{ID: "bench", Routes: rs}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	if err := e.AddKey(s.KeyID, s.Public()); err != nil {
		b.Fatal(err)
	}
	return e, s
}

func BenchmarkCheckSeen(b *testing.B) {
	e, s := benchEnforcer(b, nil)
	tok, _ := mint(b, s, nil)
	req := readReq(tok)
	if d := e.Check(req); !d.Allow {
		b.Fatal(d)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Check(req)
	}
}

func BenchmarkCheckSeenNoUsage(b *testing.B) {
	e, s := benchEnforcer(b, func(o *Options) { o.DisableUsage = true })
	tok, _ := mint(b, s, nil)
	req := readReq(tok)
	e.Check(req)
	b.ReportAllocs()
	for b.Loop() {
		e.Check(req)
	}
}

// BenchmarkCheckSeenRestricted decides, without usage, while 1,000 tokens
// are quarantined and stepped up: on a token without a restriction (the
// denylist lookup each decision then pays) and on a quarantined token's
// allowed read.
func BenchmarkCheckSeenRestricted(b *testing.B) {
	e, s := benchEnforcer(b, func(o *Options) { o.DisableUsage = true })
	now := time.Now()
	rev := uint64(0)
	restrict := func(id string) {
		rev++
		if err := e.dl.apply(events.DenyKeyNarrow(id), narrowValue(b, id, time.Time{}, []string{"invoices:read"}, "10.0.0.0/8", "192.0.2.0/24"), false, rev, now); err != nil {
			b.Fatal(err)
		}
		rev++
		if err := e.dl.apply(events.DenyKeyStepUp(id+"-other"), stepUpValue(b, id+"-other", time.Time{}), false, rev, now); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1000 {
		restrict(fmt.Sprintf("other-%d", i))
	}
	free, _ := mint(b, s, nil)
	held, c := mint(b, s, nil)
	restrict(c.ID)
	for _, bc := range []struct {
		name string
		tok  string
	}{{"unrestricted", free}, {"quarantined read", held}} {
		b.Run(bc.name, func(b *testing.B) {
			req := readReq(bc.tok)
			if d := e.Check(req); !d.Allow {
				b.Fatal(d)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.Check(req)
			}
		})
	}
}

func BenchmarkCheckSeenParallel(b *testing.B) {
	e, s := benchEnforcer(b, nil)
	toks := make([]string, 64)
	for i := range toks {
		toks[i], _ = mint(b, s, nil)
		e.Check(readReq(toks[i]))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.Check(readReq(toks[i%len(toks)]))
			i++
		}
	})
}

// BenchmarkCheckSeenMany decides over 20,000 cached tokens in a scattered
// order (the cordon-bench ingestion's fleet), without usage: what the
// cache and the checks cost when their data is not in the CPU's caches.
func BenchmarkCheckSeenMany(b *testing.B) {
	e, s := benchEnforcer(b, func(o *Options) { o.DisableUsage = true; o.CacheSize = 40_000 })
	reqs := make([]*Request, 20_000)
	for i := range reqs {
		tok, _ := mint(b, s, nil)
		reqs[i] = readReq(tok)
		if d := e.Check(reqs[i]); !d.Allow {
			b.Fatal(d)
		}
	}
	b.ReportAllocs()
	i := 0
	var cpu0 time.Duration
	for b.Loop() {
		if cpu0 == 0 {
			cpu0 = cpuTime()
		}
		e.Check(reqs[i])
		i = (i + 7919) % len(reqs)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/decision")
}

func BenchmarkCheckFirstSeen(b *testing.B) {
	e, s := benchEnforcer(b, nil)
	toks := make([]string, 4096)
	for i := range toks {
		toks[i], _ = mint(b, s, nil)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(toks) { // minting is not measured
			b.StopTimer()
			for j := range toks {
				toks[j], _ = mint(b, s, nil)
			}
			i = 0
			b.StartTimer()
		}
		e.Check(readReq(toks[i]))
		i++
	}
}

func BenchmarkCheckBadTokenFlood(b *testing.B) {
	e, s := benchEnforcer(b, nil)
	forger := newSigner(b)
	forger.KeyID = s.KeyID
	tok, _ := mint(b, forger, nil)
	req := readReq(tok)
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Check(req); d.Reason != ReasonBadSignature {
			b.Fatal(d)
		}
	}
}

func BenchmarkMiddlewareSeen(b *testing.B) {
	e, s := benchEnforcer(b, nil)
	tok, _ := mint(b, s, nil)
	h := e.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("GET", "/invoices/42", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 204 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkUsagePublish measures the whole cost of publishing one
// decision's usage, in both formats, with the tokens of 1 or 100 holders:
// Check, encoding, PublishAsync to a real JetStream (file store, in this
// process), acknowledgement. cpu-ns/decision is the process's CPU time
// (user and system, every goroutine, the server's included) per decision;
// stored-B/event is what USAGE stores per event (data, subject, headers).
//
// 2026-12-03, 2-core Intel Xeon VM shared with other jobs (load average
// about 12), go test -run XXX -bench BenchmarkUsagePublish -benchtime
// 400000x ./pkg/enforce/ (Check alone, BenchmarkCheckSeenNoUsage: 475 ns):
//
//	batch/holders=1     832 cpu-ns/decision   988 events/msg  23.9 stored-B/event  0 allocs/op
//	batch/holders=100  1002 cpu-ns/decision   100 events/msg  26.9 stored-B/event  0 allocs/op
//	event/holders=1   16088 cpu-ns/decision     1 events/msg 667.8 stored-B/event 52 allocs/op
//	event/holders=100 17563 cpu-ns/decision     1 events/msg 668.7 stored-B/event 52 allocs/op
func BenchmarkUsagePublish(b *testing.B) {
	for _, format := range []string{UsageFormatBatch, UsageFormatEvent} {
		for _, holders := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/holders=%d", format, holders), func(b *testing.B) {
				benchUsagePublish(b, format, holders)
			})
		}
	}
}

func benchUsagePublish(b *testing.B, format string, holders int) {
	f := &fixture{env: natstest.Run(b), signer: newSigner(b)}
	f.publishKey(b, f.signer)
	rs, _ := LoadRoutes(demoRoutes)
	f.routes = rs
	e := f.enforcer(b, "bench-usage", func(o *Options) { o.UsageBuffer = 1 << 16; o.UsageFormat = format })
	reqs := make([]*Request, holders)
	for i := range reqs {
		tok, _ := mint(b, f.signer, func(c *token.Claims) { c.Holder = fmt.Sprintf("worker-%d", i) })
		reqs[i] = readReq(tok)
		reqs[i].UserAgent = "billing-sdk/3.1 (linux; go1.26)"
		e.Check(reqs[i])
	}
	resources := make([]string, 10000) // distinct resources, as invoices are
	for i := range resources {
		resources[i] = strconv.Itoa(i)
	}
	ctx := context.Background()
	if err := e.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	st0 := e.Stats()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 10000 {
		for j := 0; j < min(10000, b.N-i); j++ {
			r := reqs[j%len(reqs)]
			r.Resource = resources[j]
			e.Check(r)
		}
		if err := e.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	st := e.Stats()
	if e.UsageDropped() > 0 || st.UsageFailed > 0 {
		b.Fatalf("%d dropped, %d failed", e.UsageDropped(), st.UsageFailed)
	}
	published := st.UsagePublished - st0.UsagePublished
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/decision")
	info, err := f.env.JS.Stream(ctx, events.StreamUsage)
	if err != nil {
		b.Fatal(err)
	}
	if published > 0 {
		b.ReportMetric(float64(info.CachedInfo().State.Bytes)/float64(st.UsagePublished), "stored-B/event")
		b.ReportMetric(float64(published)/float64(st.UsageBatches-st0.UsageBatches), "events/msg")
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProxy sends sequential requests through the enforcing proxy to
// an upstream on loopback, with usage events going to a real JetStream.
func BenchmarkProxy(b *testing.B) {
	f := &fixture{env: natstest.Run(b), signer: newSigner(b)}
	f.publishKey(b, f.signer)
	f.routes, _ = LoadRoutes(demoRoutes)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer up.Close()
	f.upstream = up
	e := f.enforcer(b, "bench-proxy", nil)
	srv := f.proxy(b, e)
	tok, _ := mint(b, f.signer, nil)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("GET", srv.URL+"/invoices/1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.StatusCode)
		}
	}
}

// BenchmarkCheckForgedFlood: distinct forged tokens under a valid key id
// from one source. Past the throttle's burst they are refused without a
// signature check; with throttling off each costs an Ed25519 verification.
func BenchmarkCheckForgedFlood(b *testing.B) {
	for _, bc := range []struct {
		name  string
		burst int
	}{{"throttled", 0}, {"unthrottled", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			e, s := benchEnforcer(b, func(o *Options) { o.ThrottleBurst = bc.burst })
			forger := newSigner(b)
			forger.KeyID = s.KeyID
			toks := make([]string, 4096)
			for i := range toks {
				toks[i], _ = mint(b, forger, nil)
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				e.Check(readReq(toks[i%len(toks)]))
				i++
			}
		})
	}
}

// BenchmarkUsageClient is the publisher's cost of the client of one usage
// event from a browser's user agent: read each time, or from the cache.
func BenchmarkUsageClient(b *testing.B) {
	const ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"
	b.Run("normalize", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			events.NormalizeClient(ua)
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := clientCache{m: map[string]string{}, max: clientCacheSize}
		b.ReportAllocs()
		for b.Loop() {
			c.get(ua)
		}
	})
}
