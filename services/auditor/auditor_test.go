package auditor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/services/auditor"
)

// chdbPath is shared by every test in this binary: chDB keeps one
// session per process, so tests are isolated by database name.
var chdbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "auditor-chdb-")
	if err != nil {
		panic(err)
	}
	chdbPath = dir
	release := chdbstore.Hold(dir) // the session stays open throughout
	code := m.Run()
	release()
	os.RemoveAll(dir)
	os.Exit(code)
}

func openStore(t *testing.T, db string) *store.Store {
	t.Helper()
	s, _ := openStoreBackend(t, db)
	return s
}

// openStoreBackend is openStore with the store's chDB backend, for SQL the
// store does not run.
func openStoreBackend(t *testing.T, db string) (*store.Store, *chdbstore.Backend) {
	t.Helper()
	ctx := context.Background()
	// A fresh database per call, so that -count=N runs do not pile rows
	// onto the previous run's.
	db = fmt.Sprintf("%s_%d", db, dbSeq.Add(1))
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
	if err != nil {
		t.Fatalf("open chdb: %v", err)
	}
	s, err := store.Open(ctx, b, store.Options{})
	if err != nil {
		b.Close()
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, b
}

var base = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC) // a Monday

// dbSeq numbers the databases openStore creates in the shared session.
var dbSeq atomic.Int64

func usageEvent(t *testing.T, i int, tokenID, ip string, at time.Time) []byte {
	t.Helper()
	u := &events.UsageDecided{
		TokenID: tokenID, Tenant: "acme", Holder: "billing-api", KeyID: "k1",
		Enforcer: "edge-1", Service: "payments", SourceIP: ip, Method: "GET",
		Route: "GET /invoices/{id}", Scope: "invoices:read", Decision: events.DecisionAllow, Reason: "ok", LatencyNS: int64(1000 + i),
	}
	e, err := events.New("test", at, u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publish(t *testing.T, js jetstream.JetStream, subject string, payloads [][]byte) {
	t.Helper()
	// In chunks well under the client's limit of outstanding async
	// publishes (4,000 by default): past it PublishAsync gives up after a
	// short stall, which a loaded machine reaches.
	const chunk = 1000
	for start := 0; start < len(payloads); start += chunk {
		for _, p := range payloads[start:min(start+chunk, len(payloads))] {
			if _, err := js.PublishAsync(subject, p); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			t.Fatal("publish timed out")
		}
	}
}

func run(t *testing.T, o auditor.Options) (*auditor.Auditor, context.CancelFunc, <-chan error) {
	t.Helper()
	a, err := auditor.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan error, 1)
	go func() { err := a.Run(ctx); done <- err; stopped <- err }()
	t.Cleanup(func() { cancel(); <-stopped })
	return a, cancel, done
}

// TestExactlyOnceAcrossCrashBetweenWriteAndAck: per-event (legacy) usage,
// an auditor without detectors that dies right after its second insert,
// before anything records it: the next one, on the same state, rebuilds
// that insert from its intent and every event is in ClickHouse once.
func TestExactlyOnceAcrossCrashBetweenWriteAndAck(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "exactly_once")
	const n = 5000
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = usageEvent(t, i, fmt.Sprintf("tok-%d", i%50), "10.0.0.1", base.Add(time.Duration(i)*time.Second))
	}
	publish(t, env.JS, events.UsageSubject("acme", "edge-1"), payloads)
	o := auditor.Options{JS: env.JS, Store: s, StateDir: t.TempDir(), BatchSize: 1000, Log: zerolog.Nop()}

	// First run: dies right after its second insert.
	ctx, cancel := context.WithCancel(context.Background())
	a1, err := auditor.New(o)
	if err != nil {
		t.Fatal(err)
	}
	var inserts atomic.Int32
	auditor.SetCrash(a1, func(step string, _ int) error {
		if step == "after-insert" && inserts.Add(1) == 2 {
			cancel()
		}
		if inserts.Load() >= 2 {
			return context.Canceled
		}
		return nil
	})
	if err := a1.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if inserts.Load() < 2 {
		t.Fatalf("crash did not happen: %d inserts", inserts.Load())
	}

	// Second run: the crashed insert is rebuilt from its intent. Its rows
	// may all be in ClickHouse already (the crash came after the insert),
	// so the count can be complete before the replayed insert is: wait
	// until the auditor has written everything it read, then count.
	a2, _, _ := run(t, o)
	var replayed uint64
	natstest.WaitFor(t, 30*time.Second, func() error {
		c, err := s.CountUsage(context.Background())
		if err != nil {
			return err
		}
		if c != n {
			return fmt.Errorf("rows = %d, want %d", c, n)
		}
		if st := a2.Stats(); st.LastUsageSeq < n {
			return fmt.Errorf("auditor wrote up to sequence %d of %d", st.LastUsageSeq, n)
		}
		replayed = 0
		for _, p := range a2.Stats().Partitions {
			replayed += p.Replayed
		}
		if replayed == 0 {
			return errors.New("no insert group replayed yet")
		}
		return nil
	})
	if replayed != 1 {
		t.Fatalf("%d insert groups replayed, want the crashed one", replayed)
	}
	res, err := s.Query(context.Background(), "SELECT count() AS c, uniqExact(event_id) AS u FROM usage_events")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Rows[0][0]) != fmt.Sprint(n) || fmt.Sprint(res.Rows[0][1]) != fmt.Sprint(n) {
		t.Fatalf("rows/unique = %v, want %d", res.Rows[0], n)
	}
}

func TestPoisonMessageGoesToDeadLetters(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "poison")
	good := usageEvent(t, 1, "tok-1", "10.0.0.1", base)
	publish(t, env.JS, events.UsageSubject("acme", "edge-1"), [][]byte{[]byte(`{"not":"an event"}`), good, []byte("garbage")})
	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Log: zerolog.Nop()})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if st := a.Stats(); st.Dead != 2 || st.Usage != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	info, err := env.JS.Stream(context.Background(), events.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := info.Info(context.Background())
	if err != nil || cs.State.Msgs != 2 {
		t.Fatalf("dead letters = %v (%v), want 2", cs.State.Msgs, err)
	}
	m, err := info.GetLastMsgForSubject(context.Background(), events.DeadLetterSubject(events.DeadLetterAuditor))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(events.HeaderDeadReason) == "" || m.Header.Get(events.HeaderDeadSubject) != events.UsageSubject("acme", "edge-1") {
		t.Fatalf("dead letter headers: %v", m.Header)
	}
	if c, _ := s.CountUsage(context.Background()); c != 1 {
		t.Fatalf("rows = %d", c)
	}
}

// TestDetectorStateSurvivesRestart: a learned token replayed from a new
// network raises one anomaly; after a restart from the checkpoint, more
// use from that network raises none (the cooldown and the baseline were
// kept), and the anomaly reached both the stream and ClickHouse.
func TestDetectorStateSurvivesRestart(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "restart")
	stateDir := t.TempDir()
	subject := events.UsageSubject("acme", "edge-1")
	cfg := detect.DefaultConfig()
	newEngine := func() *detect.Engine {
		d, err := detect.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var mu sync.Mutex
	var seen []events.Envelope
	opts := auditor.Options{JS: env.JS, Store: s, StateDir: stateDir, Log: zerolog.New(zerolog.NewTestWriter(t)), BatchWait: 20 * time.Millisecond,
		OnAnomaly: func(e events.Envelope) { mu.Lock(); seen = append(seen, e); mu.Unlock() }}

	// Two weeks of normal use from one address, during office hours.
	var normal [][]byte
	for d := 0; d < 14; d++ {
		for h := 9; h < 17; h++ {
			for k := 0; k < 3; k++ {
				at := base.Add(time.Duration(d)*24*time.Hour + time.Duration(h-9)*time.Hour + time.Duration(k)*7*time.Minute)
				normal = append(normal, usageEvent(t, len(normal), "tok-learned", "10.20.0.5", at))
			}
		}
	}
	publish(t, env.JS, subject, normal)
	opts.Detector = newEngine()
	a1, cancel1, done1 := run(t, opts)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if a1.Stats().Usage != uint64(len(normal)) {
			return fmt.Errorf("processed %d of %d", a1.Stats().Usage, len(normal))
		}
		return nil
	})
	mu.Lock()
	quiet := len(seen)
	mu.Unlock()
	if quiet != 0 {
		t.Fatalf("normal traffic raised %d anomalies", quiet)
	}
	attackAt := base.Add(15*24*time.Hour + 3*time.Hour)
	publish(t, env.JS, subject, [][]byte{usageEvent(t, 0, "tok-learned", "203.0.113.66", attackAt)})
	natstest.WaitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return errors.New("no anomaly for a new network")
		}
		return nil
	})
	cancel1()
	<-done1 // Run writes a final checkpoint
	mu.Lock()
	first := len(seen)
	mu.Unlock()

	opts.Detector = newEngine()
	a2, _, _ := run(t, opts)
	publish(t, env.JS, subject, [][]byte{usageEvent(t, 1, "tok-learned", "203.0.113.66", attackAt.Add(time.Minute))})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if a2.Stats().Usage < 1 {
			return errors.New("restarted auditor has not processed the event")
		}
		return nil
	})
	mu.Lock()
	after := len(seen)
	mu.Unlock()
	if after != first {
		t.Fatalf("restart re-alerted: %d anomalies before, %d after", first, after)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		got, err := s.Anomalies(context.Background(), time.Time{}, 100)
		if err != nil {
			return err
		}
		if len(got) != first {
			return fmt.Errorf("anomalies in clickhouse = %d, want %d", len(got), first)
		}
		return nil
	})
}
