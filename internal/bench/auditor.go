package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// AuditorSuite measures the auditor: end-to-end ingestion throughput
// (real enforcers deciding requests and publishing their usage → JetStream
// → the auditor with every detector on → rows in ClickHouse on chDB) next
// to the rates of its stages, and detection latency (an attack decided by
// a real enforcer, its usage batch published → its anomaly published, and
// from the decision) with background traffic. Detector memory is
// MemorySuite's, in a fresh process.
func AuditorSuite() Suite {
	return Suite{Name: "auditor", Summary: "usage ingestion from real enforcers into ClickHouse, stage by stage; detection latency", Run: runAuditorSuite}
}

// Sizes of the auditor suite.
const (
	// auditorEvents per throughput run: long enough that the engine's
	// merges of the run's own parts land inside it. Over 400,000
	// decisions the defaults measured 11.3 to 12.5 µs per event, over
	// 1,600,000 14.9 and over 3,200,000 14.1 in adjacent sittings
	// (docs/operations.md, "How long a run must be").
	auditorEvents      = 1_600_000
	auditorTokens      = 20_000
	auditorHolders     = 50
	latencyAttacks     = 250
	latencyBackground  = 5_000 // events/s while attacks are injected
	latencyAttackEvery = 20 * time.Millisecond
	// ingestEnforcers enforcers publish the end-to-end run's usage.
	ingestEnforcers = 4
	// ingestLearnDays of holder traffic (event time in the past) come
	// first, so that every holder is past detect's default holder
	// learning (200 events, 72 h) when the measured run starts.
	ingestLearnDays = 4
)

// benchCH holds the bench process's chDB session open: chDB keeps one
// session per process at one data path (sharedChDBPath), so every suite
// shares it and isolates itself by database name (dropped after use).
var benchCH struct {
	once sync.Once
	keep *chdbstore.Backend
	err  error
}

// openBenchBackend opens a fresh database on the shared chDB session.
func openBenchBackend(ctx context.Context, db string) (store.Backend, error) {
	benchCH.once.Do(func() {
		benchCH.keep, benchCH.err = chdbstore.Open(ctx, chdbstore.Options{Path: sharedChDBPath(), Database: "bench_keep"})
	})
	if benchCH.err != nil {
		return nil, fmt.Errorf("open chdb: %w", benchCH.err)
	}
	_ = benchCH.keep.Exec(ctx, "DROP DATABASE IF EXISTS `"+db+"`")
	return chdbstore.Open(ctx, chdbstore.Options{Path: sharedChDBPath(), Database: db})
}

// dropBenchDatabase frees a database's disk space once a run is over.
func dropBenchDatabase(db string) {
	if benchCH.keep != nil {
		_ = benchCH.keep.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
	}
}

func runAuditorSuite(ctx context.Context, env Env) ([]Figure, error) {
	progress := env.Progress
	var figs []Figure
	sz := ingestSize{events: env.size(auditorEvents, 4000), tokens: env.size(auditorTokens, 200)}
	fmt.Fprintf(progress, "   ingestion: %d decisions by %d enforcers over %d tokens of %d holders, every detector on (default thresholds), chDB store\n",
		sz.events, ingestEnforcers, sz.tokens, auditorHolders)
	f, err := benchIngestion(ctx, progress, sz, env.size(3, 1), env.CPUProfile)
	if err != nil {
		return nil, fmt.Errorf("ingestion: %w", err)
	}
	figs = append(figs, f...)

	lat := latencySize{attacks: env.size(latencyAttacks, 10), bgTokens: env.size(2000, 50), days: 4}
	fmt.Fprintf(progress, "   detection latency: %d attacks, one every %v, over %d events/s of background traffic\n",
		lat.attacks, latencyAttackEvery, latencyBackground)
	f, err = benchDetectionLatency(ctx, progress, lat)
	if err != nil {
		return nil, fmt.Errorf("detection latency: %w", err)
	}
	return append(figs, f...), nil
}

// usageWorkload is usage traffic: the events enforcers decide.
type usageWorkload struct {
	envs []events.Envelope
}

// newUsageWorkload makes n usage events of tokens spread over holders and
// tenants, each holder with its own address pool, mostly allowed, in event
// time order starting at start, step apart.
func newUsageWorkload(n, tokens int, start time.Time, step time.Duration, seed uint64) (*usageWorkload, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	ids := make([]string, tokens)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
	}
	routes := []struct{ method, route, scope string }{
		{"GET", "/invoices/{id}", "invoices:read"}, {"GET", "/invoices", "invoices:list"},
		{"POST", "/invoices", "invoices:write"}, {"GET", "/customers/{id}", "customers:read"},
	}
	w := &usageWorkload{envs: make([]events.Envelope, n)}
	for i := range n {
		t := rng.IntN(tokens)
		h := t % auditorHolders
		r := routes[rng.IntN(len(routes))]
		decision, reason := events.DecisionAllow, "ok"
		if rng.IntN(50) == 0 {
			decision, reason = events.DecisionDeny, events.ReasonScopeMissing
		}
		u := &events.UsageDecided{
			TokenID: ids[t], Tenant: fmt.Sprintf("tenant-%d", h%5), Holder: fmt.Sprintf("holder-%d", h), KeyID: "sig-1",
			Enforcer: fmt.Sprintf("edge-%d", h%4), Service: "billing", SourceIP: fmt.Sprintf("10.%d.%d.%d", h, t%4, 1+rng.IntN(8)),
			UserAgent: "billing-client/2.3", Method: r.method, Route: r.route, Scope: r.scope, Decision: decision, Reason: reason,
			LatencyNS: int64(20_000 + rng.IntN(30_000)),
		}
		e, err := events.New("enforcer/"+u.Enforcer, start.Add(time.Duration(i)*step), u)
		if err != nil {
			return nil, err
		}
		w.envs[i] = e
	}
	return w, nil
}

// publish publishes events [from, to) of the workload, each as its own
// message, as fast as JetStream takes them, and returns the highest stream
// sequence.
func (w *usageWorkload) publish(ctx context.Context, js jetstream.JetStream, from, to int) (uint64, error) {
	var last uint64
	futures := make([]jetstream.PubAckFuture, 0, 4096)
	drain := func() error {
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				last = max(last, ack.Sequence)
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for i := from; i < to; i++ {
		e := w.envs[i]
		b, err := events.Encode(e)
		if err != nil {
			return last, err
		}
		f, err := js.PublishAsync(events.Subject(e), b, jetstream.WithMsgID(e.MsgID()))
		if err != nil {
			return last, err
		}
		if futures = append(futures, f); len(futures) == cap(futures) {
			if err := drain(); err != nil {
				return last, err
			}
		}
	}
	return last, drain()
}

// cpuTime is the CPU time this process has used (every thread: Go,
// the embedded NATS server and chDB alike).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// phase is a measured part of the ingestion benchmark.
type phase struct {
	// wall and cpu (getrusage, every thread) span fn; gc is the Go
	// runtime's estimate of the CPU its garbage collector took meanwhile.
	wall, cpu, gc time.Duration
}

func measure(fn func() error) (phase, error) {
	g0, c0, t0 := gcCPU(), cpuTime(), time.Now()
	err := fn()
	return phase{wall: time.Since(t0), cpu: cpuTime() - c0, gc: gcCPU() - g0}, err
}

// profiled runs measure(fn) under a CPU profile written to
// <prefix>.<stage>.pprof when prefix is set (cordon-bench --cpuprofile).
func profiled(prefix, stage string, fn func() error) (phase, error) {
	if prefix == "" {
		return measure(fn)
	}
	f, err := os.Create(prefix + "." + stage + ".pprof")
	if err != nil {
		return phase{}, fmt.Errorf("cpu profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return phase{}, fmt.Errorf("cpu profile: %w", err)
	}
	ph, err := measure(fn)
	pprof.StopCPUProfile()
	return ph, err
}

// gcCPU is the CPU time the Go garbage collector used so far, as the
// runtime estimates it (runtime/metrics /cpu/classes/gc/total).
func gcCPU() time.Duration {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return time.Duration(s[0].Value.Float64() * float64(time.Second))
}

// benchPipeline starts an embedded pipeline on a fresh database of the
// shared chDB session, its auditor tuned by ac (the zero value: the
// auditor's defaults). The database's tables are made first, so that a
// deferred auditor's start (StartAuditor) is its consumption, not the
// store's migrations.
func benchPipeline(ctx context.Context, db string, cfg *detect.Config, ac auditor.Config, deferAuditor bool) (*replay.Pipeline, error) {
	b, err := openBenchBackend(ctx, db)
	if err != nil {
		return nil, err
	}
	s, err := store.Open(ctx, b, store.Options{})
	if err != nil {
		b.Close()
		return nil, err
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	return replay.Start(ctx, replay.PipelineOptions{
		Detectors:    cfg,
		Auditor:      ac,
		DeferAuditor: deferAuditor,
		Backend: func(ctx context.Context) (store.Backend, error) {
			return chdbstore.Open(ctx, chdbstore.Options{Path: sharedChDBPath(), Database: db})
		},
		Log: zerolog.Nop(),
	})
}

// waitAuditor waits until the auditor has written usage up to seq.
func waitAuditor(ctx context.Context, a *auditor.Auditor, seq uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for a.Stats().LastUsageSeq < seq {
		if time.Now().After(deadline) {
			st := a.Stats()
			return fmt.Errorf("auditor wrote up to %d of %d after %v (%+v)", st.LastUsageSeq, seq, limit, st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// ingestSize sizes the ingestion run.
type ingestSize struct{ events, tokens int }

// ingestRoutes are the routes the ingestion enforcers protect; tokens
// hold the first three scopes, so the fourth route is denied
// (scope_missing).
var ingestRoutes = []struct{ method, route, scope string }{
	{"GET", "/invoices/{id}", "invoices:read"}, {"GET", "/invoices", "invoices:list"},
	{"POST", "/invoices", "invoices:write"}, {"GET", "/customers/{id}", "customers:read"},
}

// ingestFleet is real enforcers (pkg/enforce, usage published as their
// Options default, so a change of the enforcer's publishing shows here
// without touching the bench) deciding requests of tokens spread over
// holders and tenants, each holder from its own networks.
type ingestFleet struct {
	signer token.Signer
	anchor token.Anchor
	// reqs[t*len(ingestRoutes)+r] is token t on route r; learn are the
	// learning phase's requests, in event time order.
	reqs  []enforce.Request
	learn []enforce.Request
	es    []*enforce.Enforcer
}

func newIngestFleet(tokens int) (*ingestFleet, error) {
	f := &ingestFleet{}
	var err error
	if f.signer, f.anchor, err = newSigning(); err != nil {
		return nil, err
	}
	now := time.Now()
	mint := func(h int) (string, error) {
		return f.signer.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: fmt.Sprintf("tenant-%d", h%5), Holder: fmt.Sprintf("holder-%d", h),
			Scopes: []string{"invoices:read", "invoices:list", "invoices:write"}, Audience: []string{"billing"},
			Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, IssuedAt: now.Add(-10 * 24 * time.Hour).Unix(),
			NotBefore: now.Add(-10 * 24 * time.Hour).Unix(), Expiry: now.Add(6 * time.Hour).Unix()})
	}
	req := func(tok string, h, net, host, r int) enforce.Request {
		rt := ingestRoutes[r]
		return enforce.Request{Token: tok, Method: rt.method, Route: rt.route, Resource: strconv.Itoa(1 + host*37%1000), Scope: rt.scope,
			RemoteAddr: netip.AddrFrom4([4]byte{10, byte(h), byte(net), byte(1 + host%8)}), UserAgent: "billing-client/2.3"}
	}
	for t := range tokens {
		tok, err := mint(t % auditorHolders)
		if err != nil {
			return nil, err
		}
		for r := range ingestRoutes {
			f.reqs = append(f.reqs, req(tok, t%auditorHolders, t%4, t, r))
		}
	}
	// Learning: four tokens per holder, each from one of the holder's
	// four networks, used every 96 minutes of event time (all hours of
	// the day) for ingestLearnDays days ending an hour ago.
	day0 := now.Add(-time.Duration(ingestLearnDays)*24*time.Hour - time.Hour)
	var learners []string
	for i := range 4 * auditorHolders {
		tok, err := mint(i % auditorHolders)
		if err != nil {
			return nil, err
		}
		learners = append(learners, tok)
	}
	for k := 0; k < ingestLearnDays*15; k++ {
		at := day0.Add(time.Duration(k) * 96 * time.Minute)
		for i, tok := range learners {
			r := req(tok, i%auditorHolders, i/auditorHolders, k, k%3)
			r.Time = at.Add(time.Duration(i) * time.Millisecond)
			f.learn = append(f.learn, r)
		}
	}
	return f, nil
}

// start starts ingestEnforcers enforcers publishing to js, trusting the
// fleet's signing key through the keys bucket.
func (f *ingestFleet) start(ctx context.Context, js jetstream.JetStream) error {
	if err := trustSigner(ctx, js, f.signer, f.anchor); err != nil {
		return err
	}
	for i := range ingestEnforcers {
		// The verified-token cache holds the fleet's tokens (the default,
		// enforce.DefaultCacheSize, is smaller than 20,000): a decision
		// here is a seen token's, and the figures are ingestion's, not
		// repeated signature checks of tokens evicted from a small cache.
		e, err := startBenchEnforcer(ctx, js, fmt.Sprintf("edge-%d", i), f.anchor, 2*len(f.reqs)/len(ingestRoutes))
		if err != nil {
			return err
		}
		f.es = append(f.es, e)
	}
	return nil
}

// newSigning returns a fresh signing key and a trust anchor to endorse it.
func newSigning() (token.Signer, token.Anchor, error) {
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		return token.Signer{}, token.Anchor{}, err
	}
	anchor, err := token.GenerateAnchor()
	return signer, anchor, err
}

// trustSigner publishes signer's key, endorsed by anchor, in the keys
// bucket.
func trustSigner(ctx context.Context, js jetstream.JetStream, signer token.Signer, anchor token.Anchor) error {
	kv, err := js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		return fmt.Errorf("keys bucket: %w", err)
	}
	rec, _ := json.Marshal(anchor.EndorsedRecord(events.KeyRecord{KeyID: signer.KeyID, PublicKey: signer.Public(), Created: time.Now().UTC()}))
	if _, err := kv.Put(ctx, signer.KeyID, rec); err != nil {
		return fmt.Errorf("publish key: %w", err)
	}
	return nil
}

// startBenchEnforcer starts an enforcer of the billing service trusting
// anchor, its usage published as by default, with a verified-token cache
// of cacheSize.
func startBenchEnforcer(ctx context.Context, js jetstream.JetStream, id string, anchor token.Anchor, cacheSize int) (*enforce.Enforcer, error) {
	e, err := enforce.New(enforce.Options{ID: id, Service: "billing", Environment: "prod",
		TrustAnchors: token.Anchors{anchor.Public()}, CacheSize: cacheSize, Log: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Start(sctx, js); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// drainBelowHalf waits while e's usage buffer is more than half full, so
// that a loop deciding as fast as it can drops no usage event.
func drainBelowHalf(ctx context.Context, e *enforce.Enforcer) error {
	for st := e.Stats(); st.UsageQueued > st.UsageCapacity/2; st = e.Stats() {
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

func (f *ingestFleet) close() {
	for _, e := range f.es {
		e.Close()
	}
	f.es = nil
}

// usageStats sums the enforcers' usage counters.
func (f *ingestFleet) usageStats() (published, dropped, failed uint64) {
	for _, e := range f.es {
		st := e.Stats()
		published, dropped, failed = published+st.UsagePublished, dropped+st.UsageDropped, failed+st.UsageFailed
	}
	return
}

// decide runs reqs through the enforcers: enforcer k takes every
// ingestEnforcers-th request, on its own goroutine, as fast as its usage
// publisher keeps up (a loop that outruns it waits for its buffer to
// drain below a quarter, so no event is dropped), then flushes.
func (f *ingestFleet) decide(ctx context.Context, reqs []enforce.Request) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(f.es))
	for k, e := range f.es {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < len(reqs); i += len(f.es) {
				r := reqs[i]
				e.Check(&r)
				if (i/len(f.es))%256 == 255 {
					if err := drainBelowHalf(ctx, e); err != nil {
						errc <- err
						return
					}
				}
			}
			fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := e.Flush(fctx); err != nil {
				errc <- fmt.Errorf("flush %s: %w", e.Options().ID, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// measuredRequests is the measured run: n requests of the fleet's tokens
// at random, 1 in 50 on the route their scopes lack.
func (f *ingestFleet) measuredRequests(n int) []enforce.Request {
	rng := rand.New(rand.NewPCG(1, 7))
	tokens := len(f.reqs) / len(ingestRoutes)
	out := make([]enforce.Request, n)
	for i := range out {
		r := rng.IntN(3)
		if rng.IntN(50) == 0 {
			r = 3
		}
		out[i] = f.reqs[rng.IntN(tokens)*len(ingestRoutes)+r]
	}
	return out
}

// warmRequests uses every token once at every enforcer (the first-seen
// signature checks are not part of the measured run): decide gives
// enforcer k every request at an index ≡ k modulo the enforcers, so each
// token appears ingestEnforcers times in a row.
func (f *ingestFleet) warmRequests() []enforce.Request {
	var out []enforce.Request
	for i := 0; i < len(f.reqs); i += len(ingestRoutes) {
		for range ingestEnforcers {
			out = append(out, f.reqs[i])
		}
	}
	return out
}

// streamState is the USAGE stream's message and byte counts and last
// sequence.
func streamState(ctx context.Context, js jetstream.JetStream) (msgs, bytes, last uint64, err error) {
	st, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("usage stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("usage stream: %w", err)
	}
	return info.State.Msgs, info.State.Bytes, info.State.LastSeq, nil
}

func benchIngestion(ctx context.Context, progress io.Writer, sz ingestSize, pairs int, prof string) ([]Figure, error) {
	fleet, err := newIngestFleet(sz.tokens)
	if err != nil {
		return nil, err
	}
	measured := fleet.measuredRequests(sz.events)
	warm := fleet.warmRequests()
	perEvent := func(ph phase, n int) float64 { return float64(ph.cpu.Nanoseconds()) / 1000 / float64(n) }
	report := func(name string, ph phase, n int) {
		fmt.Fprintf(progress, "   %-34s %d events in %v, %.1f µs CPU each\n", name+":", n, ph.wall.Round(time.Millisecond), perEvent(ph, n))
	}

	// Stages 1 and 2: the enforcers alone (decisions and usage publishing,
	// no consumer), then the auditor alone draining what they published.
	var enfOnly, audOnly phase
	var backlog int
	err = func() error {
		const db = "bench_backlog"
		defer dropBenchDatabase(db)
		p, err := benchPipeline(ctx, db, nil, auditor.Config{}, true)
		if err != nil {
			return err
		}
		defer p.Close()
		if err := fleet.start(ctx, p.JS); err != nil {
			return err
		}
		defer fleet.close()
		if err := fleet.decide(ctx, fleet.learn); err != nil {
			return err
		}
		if err := fleet.decide(ctx, warm); err != nil {
			return err
		}
		if enfOnly, err = profiled(prof, "enforcers", func() error { return fleet.decide(ctx, measured) }); err != nil {
			return err
		}
		report("enforcers only (decide + publish)", enfOnly, len(measured))
		if _, dropped, failed := fleet.usageStats(); dropped+failed > 0 {
			return fmt.Errorf("enforcers dropped %d and failed %d usage events", dropped, failed)
		}
		_, _, last, err := streamState(ctx, p.JS)
		if err != nil {
			return err
		}
		// The backlog is every event published (learning, warm-up and
		// measured), in last (a message count: batches) messages.
		backlog = len(fleet.learn) + len(warm) + len(measured)
		audOnly, err = profiled(prof, "auditor", func() error {
			if err := p.StartAuditor(ctx); err != nil {
				return err
			}
			return waitAuditor(ctx, p.Auditor, last, 5*time.Minute)
		})
		report("auditor alone (backlog)", audOnly, backlog)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("enforcers, then auditor alone: %w", err)
	}

	// Stage 3: the store alone, the same number of rows in the auditor's
	// batches by its writers.
	w, err := newUsageWorkload(sz.events, sz.tokens, time.Now().Add(-2*time.Hour).Truncate(time.Hour), 10*time.Millisecond, 1)
	if err != nil {
		return nil, err
	}
	storeOnly, err := func() (phase, error) {
		const db = "bench_store_only"
		defer dropBenchDatabase(db)
		b, err := openBenchBackend(ctx, db)
		if err != nil {
			return phase{}, err
		}
		// As the auditor writes: a de-duplication token per insert, and
		// usage_events read without FINAL (Options.TokenInserts).
		s, err := store.Open(ctx, b, store.Options{TokenInserts: true})
		if err != nil {
			b.Close()
			return phase{}, err
		}
		defer s.Close()
		return profiled(prof, "store", func() error {
			type group struct {
				token string
				evs   []events.Envelope
			}
			work := make(chan group)
			errc := make(chan error, auditor.DefaultWriters)
			var wg sync.WaitGroup
			for range auditor.DefaultWriters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for g := range work {
						if err := s.InsertUsageOnce(ctx, g.token, g.evs); err != nil {
							errc <- err
							for range work {
							}
							return
						}
					}
				}()
			}
			for i := 0; i < len(w.envs); i += auditor.DefaultBatchSize {
				end := min(i+auditor.DefaultBatchSize, len(w.envs))
				work <- group{token: fmt.Sprintf("bench:%d-%d", i, end), evs: w.envs[i:end]}
			}
			close(work)
			wg.Wait()
			close(errc)
			return <-errc
		})
	}()
	if err != nil {
		return nil, fmt.Errorf("store only: %w", err)
	}
	report("store only", storeOnly, len(w.envs))

	// End to end: enforcers and auditor running together, after the
	// learning phase and the warm-up were consumed, with the auditor's
	// defaults and, as the same-run baseline, its earlier write settings;
	// pairs of each, interleaved (now, before, before, now, now, before…)
	// so that a drift of the machine weighs on both alike, and the
	// median of each is reported, with the figures of that median run.
	// Only the first run with the defaults is profiled.
	var nowRuns, beforeRuns []endToEnd
	for i := range 2 * pairs {
		baseline := i%4 == 1 || i%4 == 2
		ac, name, profile := auditor.Config{}, "end to end", prof
		if baseline {
			ac, profile = earlierWrites, ""
			name = "end to end, " + earlierWritesName
		} else if len(nowRuns) > 0 {
			profile = ""
		}
		r, err := benchEndToEnd(ctx, fleet, warm, measured, ac, profile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		report(name, r.ph, len(measured))
		if baseline {
			beforeRuns = append(beforeRuns, r)
		} else {
			nowRuns = append(nowRuns, r)
		}
	}
	e2e, before := medianRun(nowRuns), medianRun(beforeRuns)
	endToEnd, batches, msgs, bytes, anomalies, dropped := e2e.ph, e2e.batches, e2e.msgs, e2e.bytes, e2e.anomalies, e2e.dropped

	n := len(measured)
	rate := func(ph phase, n int) float64 { return float64(n) / ph.wall.Seconds() }
	cores := float64(runtime.NumCPU())
	e2eHow := fmt.Sprintf("timer and getrusage (every thread of the process: enforcers, NATS, auditor, chDB) from the first measured Check to the auditor's last row; n=%d decisions by %d enforcers over %d tokens of %d holders (learnt: %d days of holder traffic first), warm-up (every token once) excluded; nothing else ran in the process; the median of %d runs interleaved with the baseline's",
		n, ingestEnforcers, sz.tokens, auditorHolders, ingestLearnDays, len(nowRuns))
	return []Figure{
		{Name: "ingestion end to end (enforcer decisions → rows in chDB, detectors on)", Value: rate(endToEnd, n), Unit: "events/s",
			Target: "≥ 150000", OK: rate(endToEnd, n) >= 150_000, How: e2eHow},
		{Name: "  CPU per event end to end (all threads)", Value: perEvent(endToEnd, n), Unit: "µs", Target: "≤ 10", OK: perEvent(endToEnd, n) <= 10, How: e2eHow},
		{Name: "  baseline, same run: CPU per event end to end with " + earlierWritesName + " (the earlier defaults)",
			Value: perEvent(before.ph, n), Unit: fmt.Sprintf("µs (now %.2f× of it)", perEvent(endToEnd, n)/perEvent(before.ph, n)), OK: true,
			How: fmt.Sprintf("as the row above (median of as many runs, interleaved), on a fresh database with the auditor's --separate-inserts; mean insert %.0f rows (now %.0f)",
				float64(n)/float64(max(before.batches, 1)), float64(n)/float64(max(batches, 1)))},
		{Name: fmt.Sprintf("  CPU-bound ceiling on %.0f cores", cores), Value: cores * 1e6 / perEvent(endToEnd, n), Unit: "events/s", OK: true, How: "cores / CPU per event"},
		{Name: "  usage events dropped by the enforcers", Value: float64(dropped), Unit: "events", Target: "0", OK: dropped == 0, How: "Stats.UsageDropped, whole run"},
		{Name: "  usage events per JetStream message", Value: float64(n) / float64(max(msgs, 1)), Unit: "events", OK: true, How: "measured decisions / USAGE messages added"},
		{Name: "  bytes per event in the USAGE stream", Value: float64(bytes) / float64(n), Unit: "bytes", OK: true, How: "USAGE stream bytes added / measured decisions"},
		{Name: "  mean usage insert end to end", Value: float64(n) / float64(max(batches, 1)), Unit: "rows", OK: true, How: "measured decisions / auditor inserts (Stats.Batches)"},
		{Name: "  Go garbage collector's share of that CPU", Value: 100 * float64(endToEnd.gc) / float64(max(endToEnd.cpu, 1)), Unit: "%", OK: true,
			How: "runtime/metrics /cpu/classes/gc/total over the same window, over getrusage's CPU"},
		{Name: "  anomalies raised during the measured run", Value: float64(anomalies), Unit: "anomalies", OK: true, How: "auditor Stats.Anomalies"},
		{Name: "  stage: enforcers alone (decide + publish, no consumer)", Value: rate(enfOnly, n), Unit: "events/s", OK: true,
			How: fmt.Sprintf("timer from the first measured Check to the last enforcer's Flush; n=%d", n)},
		{Name: "  stage: enforcers alone, CPU per event", Value: perEvent(enfOnly, n), Unit: "µs", OK: true, How: "getrusage over the same window"},
		{Name: "  stage: auditor alone draining that backlog", Value: rate(audOnly, backlog), Unit: "events/s", OK: true,
			How: fmt.Sprintf("timer from StartAuditor to the last row; n=%d (learning, warm-up and measured events)", backlog)},
		{Name: "  stage: auditor alone, CPU per event (NATS delivery included)", Value: perEvent(audOnly, backlog), Unit: "µs", OK: true, How: "getrusage over the same window"},
		{Name: fmt.Sprintf("  stage: store alone (chDB, %d-row batches, %d writers)", auditor.DefaultBatchSize, auditor.DefaultWriters),
			Value: rate(storeOnly, len(w.envs)), Unit: "rows/s", OK: true, How: fmt.Sprintf("timer around the inserts of n=%d rows, each insert with its de-duplication token as the auditor writes (InsertUsageOnce)", len(w.envs))},
		{Name: "  stage: store alone, CPU per row", Value: perEvent(storeOnly, len(w.envs)), Unit: "µs", OK: true, How: "getrusage over the same window"},
	}, nil
}

// earlierWrites are the auditor's write settings before issue 12's last
// change (each partition's groups in inserts of their own): the
// ingestion's same-run baseline of the current defaults.
var earlierWrites = auditor.Config{SeparateInserts: true}

// earlierWritesName names earlierWrites in the figures.
const earlierWritesName = "separate inserts per partition"

// medianRun is the run of median CPU time (the lower middle of an even
// count).
func medianRun(runs []endToEnd) endToEnd {
	rs := slices.Clone(runs)
	slices.SortFunc(rs, func(a, b endToEnd) int { return cmp.Compare(a.ph.cpu, b.ph.cpu) })
	return rs[(len(rs)-1)/2]
}

// endToEnd is one end-to-end ingestion run.
type endToEnd struct {
	ph                                       phase
	batches, msgs, bytes, anomalies, dropped uint64
}

// benchEndToEnd runs the fleet's learning phase and warm-up through a
// fresh pipeline whose auditor is tuned by ac, waits until they are
// written, then times the measured decisions from the first Check to the
// auditor's last row (a CPU profile of it with prof), and checks every
// decision is in ClickHouse once.
func benchEndToEnd(ctx context.Context, fleet *ingestFleet, warm, measured []enforce.Request, ac auditor.Config, prof string) (endToEnd, error) {
	var r endToEnd
	const db = "bench_e2e"
	defer dropBenchDatabase(db)
	p, err := benchPipeline(ctx, db, nil, ac, false)
	if err != nil {
		return r, err
	}
	defer p.Close()
	if err := fleet.start(ctx, p.JS); err != nil {
		return r, err
	}
	defer fleet.close()
	if err := fleet.decide(ctx, fleet.learn); err != nil {
		return r, err
	}
	if err := fleet.decide(ctx, warm); err != nil {
		return r, err
	}
	msgs0, bytes0, last, err := streamState(ctx, p.JS)
	if err != nil {
		return r, err
	}
	if err := waitAuditor(ctx, p.Auditor, last, 5*time.Minute); err != nil {
		return r, fmt.Errorf("learning and warm-up: %w", err)
	}
	st0 := p.Auditor.Stats()
	runtime.GC()
	run := func() error {
		if err := fleet.decide(ctx, measured); err != nil {
			return err
		}
		_, _, last, err := streamState(ctx, p.JS)
		if err != nil {
			return err
		}
		return waitAuditor(ctx, p.Auditor, last, 5*time.Minute)
	}
	if r.ph, err = profiled(prof, "e2e", run); err != nil {
		return r, err
	}
	msgs1, bytes1, _, err := streamState(ctx, p.JS)
	if err != nil {
		return r, err
	}
	r.msgs, r.bytes = msgs1-msgs0, bytes1-bytes0
	st := p.Auditor.Stats()
	r.batches, r.anomalies = st.Batches-st0.Batches, st.Anomalies-st0.Anomalies
	_, r.dropped, _ = fleet.usageStats()
	want := uint64(len(fleet.learn) + len(warm) + len(measured))
	if n, err := p.Store.CountUsage(ctx); err != nil || n != want {
		return r, fmt.Errorf("rows in clickhouse = %d (%v), want %d (every decision once)", n, err, want)
	}
	return r, nil
}

// benchDetectionLatency trains tokens through a real enforcer, then
// injects attacks (each a learnt token used from a new network) among
// steady background traffic through the same enforcer, publishing its
// usage as it does by default (batches, its linger), and times each
// attack from its decision and from its batch's publication to its
// anomaly on the ANOMALIES subjects.
// latencySize sizes the detection latency run.
type latencySize struct{ attacks, bgTokens, days int }

func benchDetectionLatency(ctx context.Context, progress io.Writer, sz latencySize) ([]Figure, error) {
	const db = "bench_latency"
	defer dropBenchDatabase(db)
	p, err := benchPipeline(ctx, db, nil, auditor.Config{}, false)
	if err != nil {
		return nil, err
	}
	defer p.Close()

	// The tokens: sz.attacks victims and sz.bgTokens of background, of 40
	// holders, minted without a network restriction, so that an attacker's
	// requests pass the enforcer and detection is the only defence.
	day0 := time.Now().UTC().Add(-time.Duration(sz.days+1) * 24 * time.Hour).Truncate(24 * time.Hour)
	signer, anchor, err := newSigning()
	if err != nil {
		return nil, err
	}
	n := sz.attacks + sz.bgTokens
	toks, ids := make([]string, n), make([]string, n)
	for i := range toks {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		if toks[i], err = signer.Mint(token.Claims{ID: ids[i], Tenant: "acme", Holder: fmt.Sprintf("holder-%d", i%40),
			Scopes: []string{"invoices:read"}, Audience: []string{"billing"}, Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
			IssuedAt: day0.Add(-24 * time.Hour).Unix(), NotBefore: day0.Add(-24 * time.Hour).Unix(), Expiry: time.Now().Add(6 * time.Hour).Unix()}); err != nil {
			return nil, err
		}
	}
	if err := trustSigner(ctx, p.JS, signer, anchor); err != nil {
		return nil, err
	}
	enf, err := startBenchEnforcer(ctx, p.JS, "edge-1", anchor, 2*n)
	if err != nil {
		return nil, err
	}
	defer enf.Close()
	use := func(i int, at time.Time, ip netip.Addr) enforce.Request {
		return enforce.Request{Token: toks[i], Method: "GET", Route: "/invoices/{id}", Resource: strconv.Itoa(1 + i%1000), Scope: "invoices:read",
			RemoteAddr: ip, UserAgent: "billing-client/2.3", Time: at}
	}
	home := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), 5}) }

	// Training: every token gets sz.days days of office-hours use from its
	// holder's network, so that its baseline and its holder's are learnt
	// at the default thresholds (a token: 50 uses over 48 h; a holder: 200
	// over 72 h).
	k := 0
	for d := 0; d < sz.days; d++ {
		for j := 0; j < 20; j++ {
			at := day0.Add(time.Duration(d)*24*time.Hour + 9*time.Hour + time.Duration(j)*20*time.Minute)
			for i := range n {
				r := use(i, at.Add(time.Duration(i)*time.Millisecond), home(i))
				if !enf.Check(&r).Allow {
					return nil, fmt.Errorf("training request of token %d denied", i)
				}
				if k++; k%256 == 0 {
					if err := drainBelowHalf(ctx, enf); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = enf.Flush(fctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("training: flush: %w", err)
	}
	_, _, last, err := streamState(ctx, p.JS)
	if err != nil {
		return nil, err
	}
	if err := waitAuditor(ctx, p.Auditor, last, 3*time.Minute); err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}
	if a := p.Auditor.Stats().Anomalies; a > 0 {
		fmt.Fprintf(progress, "   (training raised %d anomalies)\n", a)
	}
	trained := p.Knowledge().Stats()

	// Each attack's decision, the publication of the batch that carries
	// it (a plain subscription on the subjects enforcers publish usage
	// on), and its anomaly's arrival (one on the ANOMALIES subjects), by
	// token id: a victim is used once after training, by its attacker.
	type sample struct{ decided, published, got time.Time }
	var mu sync.Mutex
	byToken := map[string]*sample{}
	usageSub, err := p.NC.Subscribe(events.SubjectUsagePrefix+"*.*.*", func(m *nats.Msg) {
		now := time.Now()
		var b events.UsageBatch
		if events.DecodeUsageBatch(m.Subject, m.Data, &b) != nil {
			return
		}
		var e events.Envelope
		var u events.UsageDecided
		mu.Lock()
		defer mu.Unlock()
		for b.Next(&e, &u) {
			if s, ok := byToken[u.TokenID]; ok && s.published.IsZero() {
				s.published = now
			}
		}
	})
	if err != nil {
		return nil, err
	}
	defer usageSub.Unsubscribe()
	anomSub, err := p.NC.Subscribe(events.SubjectAnomalyPrefix+">", func(m *nats.Msg) {
		now := time.Now()
		_, an, err := events.DecodeAs[*events.AnomalyDetected](m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		if s, ok := byToken[an.TokenID]; ok && s.got.IsZero() {
			s.got = now
		}
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer anomSub.Unsubscribe()

	// Live: background traffic at a steady rate, an attack every
	// latencyAttackEvery, event time continuing on the last day at noon.
	live := day0.Add(time.Duration(sz.days)*24*time.Hour + 12*time.Hour)
	perTick := latencyBackground * int(latencyAttackEvery) / int(time.Second)
	tick := time.NewTicker(latencyAttackEvery)
	defer tick.Stop()
	sent := 0
	for a := 0; a < sz.attacks; a++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		for j := 0; j < perTick; j++ {
			i := sz.attacks + (sent+j)%sz.bgTokens
			r := use(i, live.Add(time.Duration(sent+j)*time.Millisecond), home(i))
			enf.Check(&r)
		}
		sent += perTick
		r := use(a, live.Add(time.Duration(sent)*time.Millisecond), netip.AddrFrom4([4]byte{198, 51, byte(a % 250), 77}))
		mu.Lock()
		byToken[ids[a]] = &sample{decided: time.Now()}
		mu.Unlock()
		if d := enf.Check(&r); !d.Allow {
			return nil, fmt.Errorf("attack %d denied by the enforcer (%s): the bench wants an allowed use", a, d.Reason)
		}
	}
	if st := enf.Stats(); st.UsageDropped > 0 {
		return nil, fmt.Errorf("the enforcer dropped %d usage events", st.UsageDropped)
	}
	deadline := time.Now().Add(30 * time.Second)
	var fromDecision, fromPublication []time.Duration
	missing := 0
	for {
		mu.Lock()
		fromDecision, fromPublication, missing = fromDecision[:0], fromPublication[:0], 0
		for _, s := range byToken {
			if s.got.IsZero() || s.published.IsZero() {
				missing++
				continue
			}
			fromDecision = append(fromDecision, s.got.Sub(s.decided))
			fromPublication = append(fromPublication, s.got.Sub(s.published))
		}
		mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if len(fromDecision) < sz.attacks*9/10 {
		return nil, fmt.Errorf("only %d of %d attacks raised an anomaly", len(fromDecision), sz.attacks)
	}
	if st := p.Knowledge().Stats(); st.Waits > trained.Waits {
		fmt.Fprintf(progress, "   (during the attacks, a partition waited %d times for others to read further (shared knowledge), %d given up)\n",
			st.Waits-trained.Waits, st.GaveUp-trained.GaveUp)
	}
	traffic := fmt.Sprintf("n=%d attacks (a learnt token used from a new network), one every %v, among %d events/s of background, all decided by one enforcer publishing its usage as by default (batches, a %v linger); default thresholds, tokens and holders learnt over %d days of event time",
		len(fromDecision), latencyAttackEvery, latencyBackground, enforce.DefaultUsageLinger, sz.days)
	pub := Percentiles(fromPublication, 50, 99, 100)
	dec := Percentiles(fromDecision, 50, 99, 100)
	how := "timer from the arrival of the batch carrying the attack at a subscriber of the usage subjects (its publication) to its anomaly's arrival on the ANOMALIES subjects; " + traffic
	decHow := "timer from the attack's Check call to its anomaly's arrival on the ANOMALIES subjects: the above plus the enforcer's linger; " + traffic
	figs := []Figure{
		{Name: "detection latency (default thresholds, learnt), " + pub[0].Label, Value: Millis(pub[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "detection latency (default thresholds, learnt), " + pub[1].Label, Value: Millis(pub[1].Value), Unit: "ms", Target: "≤ 100 ms", OK: pub[1].Value <= 100*time.Millisecond, How: how},
	}
	if !pub[1].Max {
		figs = append(figs, Figure{Name: "detection latency (default thresholds, learnt), " + pub[2].Label, Value: Millis(pub[2].Value), Unit: "ms", OK: true, How: how})
	}
	figs = append(figs,
		Figure{Name: "  from the decision (linger included), " + dec[0].Label, Value: Millis(dec[0].Value), Unit: "ms", OK: true, How: decHow},
		Figure{Name: "  from the decision (linger included), " + dec[1].Label, Value: Millis(dec[1].Value), Unit: "ms", OK: true, How: decHow})
	if !dec[1].Max {
		figs = append(figs, Figure{Name: "  from the decision (linger included), " + dec[2].Label, Value: Millis(dec[2].Value), Unit: "ms", OK: true, How: decHow})
	}
	return append(figs, Figure{Name: "attacks detected", Value: float64(len(fromDecision)), Unit: fmt.Sprintf("of %d", sz.attacks), OK: missing == 0}), nil
}
