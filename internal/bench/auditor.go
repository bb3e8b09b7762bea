package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/services/auditor"
)

// AuditorSuite measures the auditor: end-to-end ingestion throughput
// (usage events published → rows in ClickHouse on chDB, every detector on)
// next to the publish-only, store-only and consume-only rates that bound
// it; detection latency (attack event published → anomaly published) with
// background traffic; and the detectors' memory per active token at
// 1,000,000 tokens (with their holders' and tenants' state) and per holder.
func AuditorSuite() Suite {
	return Suite{Name: "auditor", Summary: "usage ingestion throughput into ClickHouse, detection latency, detector memory", Run: runAuditorSuite}
}

// Sizes of the auditor suite.
const (
	auditorEvents       = 400_000 // per throughput run
	auditorTokens       = 20_000
	auditorHolders      = 50
	latencyAttacks      = 250
	latencyBackground   = 5_000 // events/s while attacks are injected
	latencyAttackEvery  = 20 * time.Millisecond
	memoryTokens        = 1_000_000
	auditorMemoryBudget = 2048 // bytes per token
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

func runAuditorSuite(ctx context.Context, progress io.Writer) ([]Figure, error) {
	var figs []Figure
	fmt.Fprintf(progress, "   ingestion: %d usage events, %d tokens, every detector on, chDB store\n", auditorEvents, auditorTokens)
	f, err := benchIngestion(ctx, progress)
	if err != nil {
		return nil, fmt.Errorf("ingestion: %w", err)
	}
	figs = append(figs, f...)

	fmt.Fprintf(progress, "   detection latency: %d attacks, one every %v, over %d events/s of background traffic\n",
		latencyAttacks, latencyAttackEvery, latencyBackground)
	f, err = benchDetectionLatency(ctx, progress)
	if err != nil {
		return nil, fmt.Errorf("detection latency: %w", err)
	}
	figs = append(figs, f...)

	fmt.Fprintf(progress, "   memory: %d tokens in the detection engine\n", memoryTokens)
	f, err = benchAuditorMemory()
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return append(figs, f...), nil
}

// usageWorkload is pre-encoded usage traffic: what enforcers publish.
type usageWorkload struct {
	subjects []string
	data     [][]byte
	ids      []string
	envs     []events.Envelope
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
	w := &usageWorkload{subjects: make([]string, n), data: make([][]byte, n), ids: make([]string, n), envs: make([]events.Envelope, n)}
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
		b, err := events.Encode(e)
		if err != nil {
			return nil, err
		}
		w.subjects[i], w.data[i], w.ids[i], w.envs[i] = events.Subject(e), b, e.MsgID(), e
	}
	return w, nil
}

// publish publishes the workload as fast as JetStream takes it and returns
// the highest stream sequence.
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
		f, err := js.PublishAsync(w.subjects[i], w.data[i], jetstream.WithMsgID(w.ids[i]))
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
	wall, cpu time.Duration
}

func measure(fn func() error) (phase, error) {
	c0, t0 := cpuTime(), time.Now()
	err := fn()
	return phase{wall: time.Since(t0), cpu: cpuTime() - c0}, err
}

// benchPipeline starts an embedded pipeline on a fresh database of the
// shared chDB session. The database's tables are made first, so that a
// deferred auditor's start (StartAuditor) is its consumption, not the
// store's migrations.
func benchPipeline(ctx context.Context, db string, cfg *detect.Config, deferAuditor bool) (*replay.Pipeline, error) {
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

func benchIngestion(ctx context.Context, progress io.Writer) ([]Figure, error) {
	w, err := newUsageWorkload(auditorEvents, auditorTokens, time.Now().Add(-2*time.Hour).Truncate(time.Hour), 10*time.Millisecond, 1)
	if err != nil {
		return nil, err
	}
	report := func(name string, ph phase) {
		fmt.Fprintf(progress, "   %-28s %d events in %v, %.1f µs CPU each\n", name+":", auditorEvents, ph.wall.Round(time.Millisecond),
			float64(ph.cpu.Nanoseconds())/1000/auditorEvents)
	}

	// Publish only: JetStream, file store, no consumer.
	pubOnly, err := func() (phase, error) {
		dir, err := os.MkdirTemp("", "cordon-bench-pub-")
		if err != nil {
			return phase{}, err
		}
		defer os.RemoveAll(dir)
		srv, err := natsrun.Start(natsrun.Options{DataDir: dir, Port: -1})
		if err != nil {
			return phase{}, err
		}
		defer srv.Stop()
		nc, err := srv.Connect("bench-publish")
		if err != nil {
			return phase{}, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
		if err != nil {
			return phase{}, err
		}
		if err := natsconn.Ensure(ctx, js, events.StreamOptions{}); err != nil {
			return phase{}, err
		}
		return measure(func() error { _, err := w.publish(ctx, js, 0, len(w.data)); return err })
	}()
	if err != nil {
		return nil, fmt.Errorf("publish only: %w", err)
	}
	report("publish only", pubOnly)

	// Store only: the auditor's batches, written by its writers.
	storeOnly, err := func() (phase, error) {
		const db = "bench_store_only"
		defer dropBenchDatabase(db)
		b, err := openBenchBackend(ctx, db)
		if err != nil {
			return phase{}, err
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			b.Close()
			return phase{}, err
		}
		defer s.Close()
		return measure(func() error {
			work := make(chan []events.Envelope)
			errc := make(chan error, auditor.DefaultWriters)
			var wg sync.WaitGroup
			for range auditor.DefaultWriters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for batch := range work {
						if err := s.InsertUsage(ctx, batch); err != nil {
							errc <- err
							for range work {
							}
							return
						}
					}
				}()
			}
			for i := 0; i < len(w.envs); i += auditor.DefaultBatchSize {
				work <- w.envs[i:min(i+auditor.DefaultBatchSize, len(w.envs))]
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
	report("store only", storeOnly)

	// The auditor alone, draining a backlog published before it started.
	consumeOnly, err := func() (phase, error) {
		const db = "bench_backlog"
		defer dropBenchDatabase(db)
		p, err := benchPipeline(ctx, db, nil, true)
		if err != nil {
			return phase{}, err
		}
		defer p.Close()
		last, err := w.publish(ctx, p.JS, 0, len(w.data))
		if err != nil {
			return phase{}, err
		}
		return measure(func() error {
			if err := p.StartAuditor(ctx); err != nil {
				return err
			}
			return waitAuditor(ctx, p.Auditor, last, 3*time.Minute)
		})
	}()
	if err != nil {
		return nil, fmt.Errorf("auditor alone: %w", err)
	}
	report("auditor alone (backlog)", consumeOnly)

	// End to end: publisher and auditor running together.
	var batches uint64
	endToEnd, err := func() (phase, error) {
		const db = "bench_e2e"
		defer dropBenchDatabase(db)
		p, err := benchPipeline(ctx, db, nil, false)
		if err != nil {
			return phase{}, err
		}
		defer p.Close()
		ph, err := measure(func() error {
			last, err := w.publish(ctx, p.JS, 0, len(w.data))
			if err != nil {
				return err
			}
			return waitAuditor(ctx, p.Auditor, last, 3*time.Minute)
		})
		if err != nil {
			return ph, err
		}
		if n, err := p.Store.CountUsage(ctx); err != nil || n != uint64(len(w.data)) {
			return ph, fmt.Errorf("rows in clickhouse = %d (%v), want %d", n, err, len(w.data))
		}
		batches = p.Auditor.Stats().Batches
		return ph, nil
	}()
	if err != nil {
		return nil, fmt.Errorf("end to end: %w", err)
	}
	report("end to end", endToEnd)

	rate := func(ph phase) float64 { return auditorEvents / ph.wall.Seconds() }
	cpuPer := func(ph phase) float64 { return float64(ph.cpu.Nanoseconds()) / 1000 / auditorEvents }
	cores := float64(runtime.NumCPU())
	return []Figure{
		{Name: "ingestion end to end (published → rows in chDB, detectors on)", Value: rate(endToEnd), Unit: "events/s",
			Target: "≥ 100000", OK: rate(endToEnd) >= 100_000},
		{Name: "  CPU per event end to end (all threads)", Value: cpuPer(endToEnd), Unit: "µs", OK: true},
		{Name: fmt.Sprintf("  CPU-bound ceiling on %.0f cores", cores), Value: cores * 1e6 / cpuPer(endToEnd), Unit: "events/s", OK: true},
		{Name: "  publish only (JetStream file store, no consumer)", Value: rate(pubOnly), Unit: "events/s", OK: true},
		{Name: "  publish only, CPU per event", Value: cpuPer(pubOnly), Unit: "µs", OK: true},
		{Name: fmt.Sprintf("  store only (chDB, %d-row batches, %d writers)", auditor.DefaultBatchSize, auditor.DefaultWriters),
			Value: rate(storeOnly), Unit: "rows/s", OK: true},
		{Name: "  store only, CPU per row", Value: cpuPer(storeOnly), Unit: "µs", OK: true},
		{Name: "  auditor alone draining a backlog", Value: rate(consumeOnly), Unit: "events/s", OK: true},
		{Name: "  auditor alone, CPU per event (NATS delivery and acks included)", Value: cpuPer(consumeOnly), Unit: "µs", OK: true},
		{Name: "  mean batch written end to end", Value: float64(auditorEvents) / float64(max(batches, 1)), Unit: "rows", OK: true},
	}, nil
}

// benchDetectionLatency trains tokens, then injects attacks (each a learned
// token used from a new network) among steady background traffic and
// times each from its publication to its anomaly on the ANOMALIES subjects.
func benchDetectionLatency(ctx context.Context, progress io.Writer) ([]Figure, error) {
	const db = "bench_latency"
	defer dropBenchDatabase(db)
	p, err := benchPipeline(ctx, db, nil, false)
	if err != nil {
		return nil, err
	}
	defer p.Close()

	// Training: the attacked tokens and the background tokens get three
	// days of office-hours use from their holder's network, so that their
	// baselines are learnt.
	day0 := time.Now().UTC().Add(-4 * 24 * time.Hour).Truncate(24 * time.Hour)
	const bgTokens = 2000
	victims := make([]string, latencyAttacks)
	bg := make([]string, bgTokens)
	for i := range victims {
		victims[i] = uuid.Must(uuid.NewV7()).String()
	}
	for i := range bg {
		bg[i] = uuid.Must(uuid.NewV7()).String()
	}
	use := func(tok string, i int, at time.Time, ip string) (string, []byte, events.Envelope, error) {
		u := &events.UsageDecided{TokenID: tok, Tenant: "acme", Holder: fmt.Sprintf("holder-%d", i%40), KeyID: "sig-1", Enforcer: "edge-1",
			Service: "billing", SourceIP: ip, UserAgent: "billing-client/2.3", Method: "GET", Route: "/invoices/{id}",
			Scope: "invoices:read", Decision: events.DecisionAllow, Reason: events.ReasonOK, LatencyNS: 30_000}
		e, err := events.New("enforcer/edge-1", at, u)
		if err != nil {
			return "", nil, e, err
		}
		b, err := events.Encode(e)
		return events.Subject(e), b, e, err
	}
	train := &usageWorkload{}
	all := append(append([]string(nil), victims...), bg...)
	for d := 0; d < 3; d++ {
		for k := 0; k < 20; k++ {
			at := day0.Add(time.Duration(d)*24*time.Hour + 9*time.Hour + time.Duration(k)*20*time.Minute)
			for i, tok := range all {
				subj, b, e, err := use(tok, i, at.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.%d.%d.5", i/250, i%250))
				if err != nil {
					return nil, err
				}
				train.subjects, train.data, train.ids = append(train.subjects, subj), append(train.data, b), append(train.ids, e.MsgID())
			}
		}
	}
	last, err := train.publish(ctx, p.JS, 0, len(train.data))
	if err != nil {
		return nil, err
	}
	if err := waitAuditor(ctx, p.Auditor, last, 3*time.Minute); err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}
	if n := p.Auditor.Stats().Anomalies; n > 0 {
		fmt.Fprintf(progress, "   (training raised %d anomalies)\n", n)
	}

	// Anomalies as published: a plain subscription on their subjects.
	type sample struct{ sent, got time.Time }
	var mu sync.Mutex
	byEvent := map[string]*sample{}
	sub, err := p.NC.Subscribe(events.SubjectAnomalyPrefix+">", func(m *nats.Msg) {
		now := time.Now()
		_, an, err := events.DecodeAs[*events.AnomalyDetected](m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		if s, ok := byEvent[an.EventID]; ok && s.got.IsZero() {
			s.got = now
		}
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()

	// Live: background traffic at a steady rate, an attack every
	// latencyAttackEvery, event time continuing on day 3 at noon.
	live := day0.Add(3*24*time.Hour + 12*time.Hour)
	perTick := latencyBackground * int(latencyAttackEvery) / int(time.Second)
	tick := time.NewTicker(latencyAttackEvery)
	defer tick.Stop()
	n := 0
	for a := 0; a < latencyAttacks; a++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		for k := 0; k < perTick; k++ {
			i := (n + k) % bgTokens
			subj, b, e, err := use(bg[i], latencyAttacks+i, live.Add(time.Duration(n+k)*time.Millisecond), fmt.Sprintf("10.%d.%d.5", (latencyAttacks+i)/250, (latencyAttacks+i)%250))
			if err != nil {
				return nil, err
			}
			if _, err := p.JS.PublishAsync(subj, b, jetstream.WithMsgID(e.MsgID())); err != nil {
				return nil, err
			}
		}
		n += perTick
		subj, b, e, err := use(victims[a], a, live.Add(time.Duration(n)*time.Millisecond), fmt.Sprintf("198.51.%d.77", a%250))
		if err != nil {
			return nil, err
		}
		mu.Lock()
		byEvent[e.ID.String()] = &sample{sent: time.Now()}
		mu.Unlock()
		if _, err := p.JS.PublishAsync(subj, b, jetstream.WithMsgID(e.MsgID())); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var lat []time.Duration
	missing := 0
	for {
		mu.Lock()
		lat, missing = lat[:0], 0
		for _, s := range byEvent {
			if s.got.IsZero() {
				missing++
			} else {
				lat = append(lat, s.got.Sub(s.sent))
			}
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
	if len(lat) < latencyAttacks*9/10 {
		return nil, fmt.Errorf("only %d of %d attacks raised an anomaly", len(lat), latencyAttacks)
	}
	pc := Percentiles(lat, 50, 99, 100)
	return []Figure{
		{Name: "detection latency p50 (attack published → anomaly published)", Value: Millis(pc[0]), Unit: "ms", OK: true},
		{Name: "detection latency p99", Value: Millis(pc[1]), Unit: "ms", Target: "≤ 100 ms", OK: pc[1] <= 100*time.Millisecond},
		{Name: "detection latency max", Value: Millis(pc[2]), Unit: "ms", OK: true},
		{Name: "attacks detected", Value: float64(len(lat)), Unit: fmt.Sprintf("of %d", latencyAttacks), OK: missing == 0},
	}, nil
}

// benchAuditorMemory fills a detection engine — the auditor's only
// per-token state — with memoryTokens tokens (an issued event and three
// uses each) and reports the live heap per token.
func benchAuditorMemory() ([]Figure, error) {
	cfg := detect.DefaultConfig()
	cfg.MaxTokens = memoryTokens
	ids := make([]string, memoryTokens)
	for i := range ids {
		ids[i] = fmt.Sprintf("019cabd9-%04x-7%03x-8%03x-%012x", i>>24&0xffff, i>>12&0xfff, i&0xfff, i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e, err := detect.New(cfg)
	if err != nil {
		return nil, err
	}
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	u := &events.UsageDecided{Enforcer: "edge-1", Service: "orders", Method: "GET", Scope: "orders:read", Decision: events.DecisionAllow, Reason: events.ReasonOK}
	env := events.Envelope{Type: events.TypeUsageDecided, Source: "bench", Version: events.SchemaVersion, Data: u}
	var sb strings.Builder
	for i, id := range ids {
		tenant, holder := fmt.Sprintf("tenant-%d", i%50), fmt.Sprintf("holder-%d", i%5000)
		e.Observe(events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeTokenIssued, Time: base, Source: "bench", Version: events.SchemaVersion,
			Data: &events.TokenIssued{TokenID: id, Tenant: tenant, Holder: holder, KeyID: "k", Actor: "a",
				Claims: events.TokenClaims{Scopes: []string{"s"}, Expiry: base.Add(48 * time.Hour), Windows: []events.Window{{Zone: "Europe/Paris"}}}}})
		for k := 0; k < 3; k++ {
			sb.Reset()
			fmt.Fprintf(&sb, "10.%d.%d.%d", i>>16&0xff, i>>8&0xff, 10+(i+k)%4)
			u.TokenID, u.Tenant, u.Holder, u.SourceIP = id, tenant, holder, sb.String()
			u.Route = fmt.Sprintf("/v1/orders/%d", (i+k)*7919%1_000_000)
			env.ID, env.Time = uuid.Must(uuid.NewV7()), base.Add(time.Duration(k)*time.Hour)
			e.ObserveUsage(env, u)
		}
	}
	ids = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := e.Stats()
	runtime.KeepAlive(e)
	if st.Tokens != memoryTokens {
		return nil, fmt.Errorf("engine holds %d tokens, want %d", st.Tokens, memoryTokens)
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / memoryTokens
	holderPer, err := benchHolderMemory()
	if err != nil {
		return nil, err
	}
	return []Figure{
		{Name: fmt.Sprintf("auditor memory per active token (%d tokens of %d holders, live heap, holder and tenant state included)", memoryTokens, st.Holders),
			Value: per, Unit: "bytes", Target: fmt.Sprintf("≤ %d", auditorMemoryBudget), OK: per <= auditorMemoryBudget},
		{Name: "  fixed state per token (excluding id and index)", Value: float64(st.StateBytes), Unit: "bytes", OK: true},
		{Name: fmt.Sprintf("auditor memory per holder (%d holders, live heap)", memoryHolders), Value: holderPer, Unit: "bytes", OK: true},
		{Name: "  fixed state per holder (excluding key and index)", Value: float64(st.HolderStateBytes), Unit: "bytes", OK: true},
	}, nil
}

// memoryHolders is how many holders benchHolderMemory fills.
const memoryHolders = 100_000

// benchHolderMemory reports the live heap one holder costs: the same
// number of tokens, one use each, spread over memoryHolders holders and
// over 100, the difference divided by the extra holders.
func benchHolderMemory() (float64, error) {
	fill := func(holders int) (uint64, error) {
		cfg := detect.DefaultConfig()
		cfg.MaxTokens, cfg.MaxHolders = memoryHolders, memoryHolders
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := detect.New(cfg)
		if err != nil {
			return 0, err
		}
		base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
		u := &events.UsageDecided{Tenant: "acme", Enforcer: "edge-1", Service: "orders", Method: "GET", Route: "/v1/orders/{id}", Resource: "1",
			Scope: "orders:read", Client: "orders-client/4", Decision: events.DecisionAllow, Reason: events.ReasonOK}
		env := events.Envelope{Type: events.TypeUsageDecided, Source: "bench", Version: events.SchemaVersion, Data: u}
		for i := 0; i < memoryHolders; i++ {
			u.TokenID = fmt.Sprintf("019cabd9-%04x-7%03x-8%03x-%012x", i>>24&0xffff, i>>12&0xfff, i&0xfff, i)
			u.Holder = fmt.Sprintf("holder-%d", i%holders)
			u.SourceIP = fmt.Sprintf("10.%d.%d.5", i>>16&0xff, i>>8&0xff)
			env.ID, env.Time = uuid.Must(uuid.NewV7()), base.Add(time.Duration(i)*time.Millisecond)
			e.ObserveUsage(env, u)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := e.Stats(); st.Holders != holders {
			return 0, fmt.Errorf("engine holds %d holders, want %d", st.Holders, holders)
		}
		runtime.KeepAlive(e)
		return after.HeapAlloc - before.HeapAlloc, nil
	}
	few, err := fill(100)
	if err != nil {
		return 0, err
	}
	many, err := fill(memoryHolders)
	if err != nil {
		return 0, err
	}
	return (float64(many) - float64(few)) / float64(memoryHolders-100), nil
}
