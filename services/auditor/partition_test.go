package auditor_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/faults"
	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// publishBatches publishes usage the way a batching enforcer does: one
// CUB1 batch per (tenant, enforcer, holder), up to per records, with the
// batch id as message id. It returns the stream sequence of the last one
// and the ids of the events (derived from their batch).
func publishBatches(t *testing.T, js jetstream.JetStream, envs []events.Envelope, per int) (last uint64, ids []string) {
	t.Helper()
	type key struct{ tenant, enforcer, holder string }
	builders := map[key]*events.UsageBatchBuilder{}
	var order []key
	var futures []jetstream.PubAckFuture
	flush := func(k key) {
		b := builders[k]
		if b.Len() == 0 {
			return
		}
		subject, id, data, err := b.Finish(nil)
		if err != nil {
			t.Fatal(err)
		}
		var ub events.UsageBatch
		if err := events.DecodeUsageBatch(subject, data, &ub); err != nil {
			t.Fatal(err)
		}
		var e events.Envelope
		var u events.UsageDecided
		for ub.Next(&e, &u) {
			ids = append(ids, e.ID.String())
		}
		f, err := js.PublishAsync(subject, data, jetstream.WithMsgID(id.String()))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
		if err := b.Reset("enforcer/"+k.enforcer, k.tenant, k.enforcer, k.holder); err != nil {
			t.Fatal(err)
		}
		if len(futures) >= 500 {
			wait(t, js, futures, &last)
			futures = futures[:0]
		}
	}
	for _, e := range envs {
		u := e.Data.(*events.UsageDecided)
		k := key{u.Tenant, u.Enforcer, u.Holder}
		b, ok := builders[k]
		if !ok {
			b = &events.UsageBatchBuilder{}
			if err := b.Reset("enforcer/"+k.enforcer, k.tenant, k.enforcer, k.holder); err != nil {
				t.Fatal(err)
			}
			builders[k] = b
			order = append(order, k)
		}
		if err := b.Add(e.Time, u); err != nil {
			t.Fatal(err)
		}
		if b.Len() >= per || b.Full() {
			flush(k)
		}
	}
	for _, k := range order {
		flush(k)
	}
	wait(t, js, futures, &last)
	return last, ids
}

// wait waits for the publications and raises last to their sequences.
func wait(t *testing.T, js jetstream.JetStream, fs []jetstream.PubAckFuture, last *uint64) {
	t.Helper()
	for _, f := range fs {
		select {
		case ack := <-f.Ok():
			*last = max(*last, ack.Sequence)
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(60 * time.Second):
			t.Fatal("publish not acknowledged")
		}
	}
}

// partitioned is the options of an auditor with one detector per
// partition.
func partitioned(t *testing.T, js jetstream.JetStream, s *store.Store, stateDir string, own []int, durable string, anomalies *idSet) auditor.Options {
	return auditor.Options{JS: js, Store: s, StateDir: stateDir, Owner: auditor.StaticOwner{Own: own}, Durable: durable,
		BatchSize: 700, BatchWait: 20 * time.Millisecond, CheckpointEvery: 100 * time.Millisecond, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		NewDetector: func(p, parts int) (auditor.Detector, error) {
			return detect.New(auditor.PartitionBounds(detect.DefaultConfig(), parts))
		},
		OnAnomaly: anomalies.add}
}

// idSet collects anomaly ids from OnAnomaly.
type idSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *idSet) add(e events.Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	s.ids[e.ID.String()] = true
}

func (s *idSet) sorted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.ids))
	for id := range s.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// waitWritten waits until each auditor runs n partitions and wrote them
// up to seq.
func waitWritten(t *testing.T, seq uint64, n int, as ...*auditor.Auditor) {
	t.Helper()
	natstest.WaitFor(t, 120*time.Second, func() error {
		for i, a := range as {
			if st := a.Stats(); st.LastUsageSeq < seq || len(st.Partitions) != n {
				return fmt.Errorf("auditor %d written up to %d of %d (%d partitions, want %d)", i, st.LastUsageSeq, seq, len(st.Partitions), n)
			}
		}
		return nil
	})
}

// rowIDs are the usage event ids in s, sorted, and the raw row count.
func rowIDs(t *testing.T, s *store.Store) (ids []string, rows uint64) {
	t.Helper()
	res, err := s.Query(context.Background(), "SELECT toString(event_id) AS id FROM usage_events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Rows {
		ids = append(ids, fmt.Sprint(r[0]))
	}
	// Raw rows: the view de-duplicates by event id (FINAL).
	res, err = s.Query(context.Background(), "SELECT count() FROM usage_events_raw")
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	fmt.Sscan(fmt.Sprint(res.Rows[0][0]), &n)
	return ids, n
}

// wantRowsOnce fails t unless s holds exactly the usage events of ids
// (sorted here), each in one raw row.
func wantRowsOnce(t *testing.T, s *store.Store, ids []string) {
	t.Helper()
	slices.Sort(ids)
	got, rows := rowIDs(t, s)
	if !slices.Equal(got, ids) || rows != uint64(len(ids)) {
		t.Fatalf("rows %d (distinct %d), want %d", rows, len(got), len(ids))
	}
}

// storedAnomalies are the anomaly ids in s, sorted.
func storedAnomalies(t *testing.T, s *store.Store) []string {
	t.Helper()
	got, err := s.Anomalies(context.Background(), time.Time{}, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range got {
		out = append(out, a.AnomalyID)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// simulated is n events of the simulation scenario, attacks included.
func simulated(t *testing.T, n int) []events.Envelope {
	t.Helper()
	envs, err := faults.SimulatedUsage(12, n)
	if err != nil {
		t.Fatal(err)
	}
	return envs
}

// TestPartitionsSplitAcrossAuditors: on a stream of 8 partitions, one
// auditor running them all and two running 0–3 and 4–7 leave the same
// row ids and raise the same anomaly ids (per-partition state makes
// detection independent of who runs a partition), and every event is
// written once.
func TestPartitionsSplitAcrossAuditors(t *testing.T) {
	env := natstest.Run(t)
	last, ids := publishBatches(t, env.JS, simulated(t, 12_000), 200)
	slices.Sort(ids)

	var oneAn, twoAn idSet
	one := openStore(t, "part_one")
	a, _, _ := run(t, partitioned(t, env.JS, one, t.TempDir(), nil, "one", &oneAn))
	two := openStore(t, "part_two")
	b1, _, _ := run(t, partitioned(t, env.JS, two, t.TempDir(), []int{0, 1, 2, 3}, "two", &twoAn))
	b2, _, _ := run(t, partitioned(t, env.JS, two, t.TempDir(), []int{4, 5, 6, 7}, "two", &twoAn))
	waitWritten(t, last, 8, a)
	waitWritten(t, last, 4, b1, b2)

	if st := a.Stats(); st.PartitionCount != 8 || len(st.Partitions) != 8 {
		t.Fatalf("one auditor: %d partitions of %d, want 8 of 8", len(st.Partitions), st.PartitionCount)
	}
	for i, b := range []*auditor.Auditor{b1, b2} {
		st := b.Stats()
		if len(st.Partitions) != 4 || st.Usage == 0 {
			t.Fatalf("auditor %d of two: %d partitions, %d rows; want 4 and some rows", i, len(st.Partitions), st.Usage)
		}
	}
	gotOne, rowsOne := rowIDs(t, one)
	gotTwo, rowsTwo := rowIDs(t, two)
	if !slices.Equal(gotOne, ids) || !slices.Equal(gotTwo, ids) {
		t.Fatalf("row ids: one auditor %d, two auditors %d, published %d", len(gotOne), len(gotTwo), len(ids))
	}
	if rowsOne != uint64(len(ids)) || rowsTwo != uint64(len(ids)) {
		t.Fatalf("raw rows: one auditor %d, two %d, want %d", rowsOne, rowsTwo, len(ids))
	}
	// The anomalies are durable once the partitions are written.
	if len(oneAn.sorted()) == 0 {
		t.Fatal("the scenario's attacks raised no anomaly")
	}
	if !slices.Equal(oneAn.sorted(), twoAn.sorted()) {
		t.Fatalf("anomaly ids differ: one auditor %d, two %d", len(oneAn.sorted()), len(twoAn.sorted()))
	}
	if s1, s2 := storedAnomalies(t, one), storedAnomalies(t, two); !slices.Equal(s1, oneAn.sorted()) || !slices.Equal(s2, twoAn.sorted()) {
		t.Fatalf("stored anomalies: %d and %d, raised %d", len(s1), len(s2), len(oneAn.sorted()))
	}

	// The metrics count per partition: the first auditor's rows add up.
	reg := prometheus.NewRegistry()
	if err := reg.Register(b1.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var rowsMetric float64
	parts := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "cordon_auditor_partition_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			parts[labels["partition"]] = true
			if labels["kind"] == "rows" {
				rowsMetric += m.GetCounter().GetValue()
			}
		}
	}
	if len(parts) != 4 || rowsMetric != float64(b1.Stats().Usage) {
		t.Fatalf("partition metrics: partitions %v, rows %v, want 4 partitions and %d rows", parts, rowsMetric, b1.Stats().Usage)
	}
}

// errCrash is the injected crash.
var errCrash = errors.New("injected crash")

// TestCrashAtEachWriteStep: an auditor crashes at one step of a
// partition's write — before the intent, between the intent and the
// insert, between the insert and the checkpoint, before a checkpoint —
// and another starts on the same state: every event lands exactly once
// (raw rows and distinct ids) and the anomalies are those of an
// uninterrupted run. With combined inserts (the default) and separate ones.
func TestCrashAtEachWriteStep(t *testing.T) {
	env := natstest.Run(t)
	last, ids := publishBatches(t, env.JS, simulated(t, 8000), 150)
	slices.Sort(ids)
	var refAn idSet
	ref := openStore(t, "crash_ref")
	r, _, _ := run(t, partitioned(t, env.JS, ref, t.TempDir(), nil, "ref", &refAn))
	waitWritten(t, last, 8, r)
	want := refAn.sorted()

	for _, tc := range []struct {
		step     string
		separate bool
	}{
		{"before-intent", false}, {"after-intent", false}, {"after-insert", false}, {"before-checkpoint", false},
		{"before-intent", true}, {"after-intent", true}, {"after-insert", true}, {"before-checkpoint", true},
	} {
		step := tc.step
		t.Run(fmt.Sprintf("%s/separate=%v", step, tc.separate), func(t *testing.T) {
			s := openStore(t, "crash")
			dir := filepath.Join(t.TempDir(), "state")
			var an idSet
			durable := fmt.Sprintf("crash-%s-%v", step, tc.separate)
			// The third time partition 3 reaches the step, the process dies:
			// from then on it writes nothing more (no intent, row or
			// checkpoint of any partition).
			var seen atomic.Int32
			var crashed atomic.Bool
			o := partitioned(t, env.JS, s, dir, nil, durable, &an)
			o.BatchSize, o.SeparateInserts = 100, tc.separate
			// Partition 3 must reach the step three times with work left:
			// checkpoints are taken often, and each insert is slowed so that
			// the usage is not all analysed and written between two of them
			// (a checkpoint is taken only when something new is durable).
			o.CheckpointEvery = 10 * time.Millisecond
			a1, err := auditor.New(o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			auditor.SetCrash(a1, func(at string, p int) error {
				if crashed.Load() {
					return errCrash
				}
				if at == step && p == 3 && seen.Add(1) == 3 {
					crashed.Store(true)
					cancel()
					return errCrash
				}
				if at == "after-insert" {
					time.Sleep(20 * time.Millisecond)
				}
				return nil
			})
			if err := a1.Run(ctx); err != nil && !errors.Is(err, errCrash) {
				t.Fatalf("first run: %v", err)
			}
			if !crashed.Load() {
				t.Fatalf("partition 3 never reached %s three times", step)
			}
			a2, _, _ := run(t, o)
			waitWritten(t, last, 8, a2)
			var replayed uint64
			for _, p := range a2.Stats().Partitions {
				replayed += p.Replayed
			}
			if (step == "after-intent" || step == "after-insert") && replayed == 0 {
				t.Fatalf("no insert group was replayed from its intent")
			}
			got, rows := rowIDs(t, s)
			if !slices.Equal(slices.Compact(got), ids) {
				t.Fatalf("distinct row ids %d, want %d", len(slices.Compact(got)), len(ids))
			}
			if rows != uint64(len(ids)) {
				t.Fatalf("raw rows %d, want %d: a group was written twice", rows, len(ids))
			}
			if got := an.sorted(); !slices.Equal(got, want) {
				t.Fatalf("anomalies after the crash %d, uninterrupted %d", len(got), len(want))
			}
			if got := storedAnomalies(t, s); !slices.Equal(got, want) {
				t.Fatalf("stored anomalies after the crash %d, uninterrupted %d", len(got), len(want))
			}
		})
	}
}

// TestLegacyAndBatchMix: per-event (legacy) messages and batches of the
// same keys are both written and analysed by their partition; a malformed
// batch, a forged one and a per-event message on a batch subject are
// dead-lettered and the partition goes on; a batch published again
// (after JetStream's duplicate window: another message id) is skipped.
func TestLegacyAndBatchMix(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "mix")
	envs := simulated(t, 3000)
	_, ids := publishBatches(t, env.JS, envs[:1000], 100)
	var legacyIDs []string
	var legacy [][]byte
	subjects := map[string][]int{}
	for i, e := range envs[1000:2000] {
		data, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		legacy = append(legacy, data)
		legacyIDs = append(legacyIDs, e.ID.String())
		subjects[events.Subject(e)] = append(subjects[events.Subject(e)], i)
	}
	for subj, is := range subjects {
		var ps [][]byte
		for _, i := range is {
			ps = append(ps, legacy[i])
		}
		publish(t, env.JS, subj, ps)
	}
	// The bad ones, on the subject of a real key.
	u := envs[0].Data.(*events.UsageDecided)
	subj := events.UsageBatchSubject(u.Tenant, u.Enforcer, u.Holder)
	var b events.UsageBatchBuilder
	if err := b.Reset("enforcer/other", u.Tenant, "other", u.Holder); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(envs[0].Time, &events.UsageDecided{TokenID: u.TokenID, Tenant: u.Tenant, Holder: u.Holder, Enforcer: "other", Service: "s",
		SourceIP: "10.0.0.1", Method: "GET", Route: "/x", Decision: events.DecisionAllow, Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	_, _, forged, err := b.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	legacyOnBatch, _ := events.Encode(envs[0])
	for _, bad := range [][]byte{[]byte("CUB1 garbage"), forged, legacyOnBatch} {
		if _, err := env.JS.Publish(context.Background(), subj, bad); err != nil {
			t.Fatal(err)
		}
	}
	// More good batches after the bad ones, and one batch again.
	last, more := publishBatches(t, env.JS, envs[2000:], 100)
	var again events.UsageBatchBuilder
	if err := again.Reset("enforcer/"+u.Enforcer, u.Tenant, u.Enforcer, u.Holder); err != nil {
		t.Fatal(err)
	}
	if err := again.Add(envs[0].Time, u); err != nil {
		t.Fatal(err)
	}
	asubj, aid, adata, err := again.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, msgID := range []string{aid.String(), "republished-after-the-window"} {
		ack, err := env.JS.PublishMsg(context.Background(), &nats.Msg{Subject: asubj, Data: adata, Header: nats.Header{jetstream.MsgIDHeader: []string{msgID}}})
		if err != nil {
			t.Fatal(err)
		}
		last = max(last, ack.Sequence)
	}
	var an idSet
	a, _, _ := run(t, partitioned(t, env.JS, s, t.TempDir(), nil, "mix", &an))
	waitWritten(t, last, 8, a)
	want := slices.Concat(ids, legacyIDs, more)
	var ub events.UsageBatch
	if err := events.DecodeUsageBatch(asubj, adata, &ub); err != nil {
		t.Fatal(err)
	}
	var e events.Envelope
	var ud events.UsageDecided
	for ub.Next(&e, &ud) {
		want = append(want, e.ID.String())
	}
	wantRowsOnce(t, s, want)
	st := a.Stats()
	if st.Dead != 3 {
		t.Fatalf("dead letters %d, want 3", st.Dead)
	}
	var dups uint64
	for _, p := range st.Partitions {
		dups += p.Duplicates
	}
	if dups != 1 {
		t.Fatalf("duplicate batches skipped %d, want 1", dups)
	}
}

// switchOwner is an Owner the test moves partitions with; a partition it
// takes away stays valid until released (a graceful hand-off).
type switchOwner struct {
	mu       sync.Mutex
	set      []int
	released []int
	ch       chan []int
}

func newSwitchOwner(set []int) *switchOwner { return &switchOwner{set: set, ch: make(chan []int, 1)} }

func (s *switchOwner) Run(ctx context.Context, _ int, owned chan<- []int) error {
	s.mu.Lock()
	first := slices.Clone(s.set)
	s.mu.Unlock()
	next := first
	for {
		select {
		case owned <- next:
		case <-ctx.Done():
			return nil
		}
		select {
		case next = <-s.ch:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *switchOwner) Valid(p int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.set, p) && !slices.Contains(s.released, p)
}

func (s *switchOwner) Released(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, p)
}

func (s *switchOwner) move(set []int) { s.ch <- set }

// forgetReleased makes the released partitions valid again, as a lease
// renewed late would (stopping a partition releases it: Releaser).
func (s *switchOwner) forgetReleased() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = nil
}

// TestPartitionsMoveBetweenAuditors: an auditor that loses partitions
// stops them (final checkpoint), and another that gains them resumes at
// that checkpoint on the shared state: nothing is read or written twice.
func TestPartitionsMoveBetweenAuditors(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "move")
	dir := t.TempDir()
	envs := simulated(t, 6000)
	last, ids := publishBatches(t, env.JS, envs[:3000], 100)
	var an idSet
	owner := newSwitchOwner([]int{0, 1, 2, 3, 4, 5, 6, 7})
	oa := partitioned(t, env.JS, s, dir, nil, "move", &an)
	oa.Owner = owner
	a, _, _ := run(t, oa)
	waitWritten(t, last, 8, a)

	// More for the first auditor to analyse before it hands 4-7 over:
	// its final checkpoints must cover them.
	last, mid := publishBatches(t, env.JS, envs[3000:4000], 100)
	ids = append(ids, mid...)
	owner.move([]int{0, 1, 2, 3})
	natstest.WaitFor(t, 60*time.Second, func() error {
		owner.mu.Lock()
		released := len(owner.released)
		owner.mu.Unlock()
		if n := len(a.Stats().Partitions); n != 4 || released != 4 {
			return fmt.Errorf("the first auditor runs %d partitions and released %d, want 4 and 4", n, released)
		}
		return nil
	})
	b, _, _ := run(t, partitioned(t, env.JS, s, dir, []int{4, 5, 6, 7}, "move", &an))
	last, more := publishBatches(t, env.JS, envs[4000:], 100)
	waitWritten(t, last, 4, a, b)

	want := slices.Concat(ids, more)
	wantRowsOnce(t, s, want)
	// Each event analysed by one of them, once: the second resumed at the
	// first's final checkpoints.
	if oa, ob := a.Stats().Observed, b.Stats().Observed; oa+ob != uint64(len(envs)) || ob == 0 {
		t.Fatalf("analysed %d + %d events, want %d in all", oa, ob, len(envs))
	}
}

// TestLostPartitionStopsWriting: a partition whose ownership is lost
// (Valid turns false without a hand-off, as a lease that expired) writes
// nothing more — no row, intent or checkpoint — and stops; valid again
// while the owner's set never changed (a renewal that came late), it
// resumes from its last checkpoint and every event is written once.
func TestLostPartitionStopsWriting(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "lost")
	envs := simulated(t, 4000)
	last, ids := publishBatches(t, env.JS, envs[:2000], 100)
	var an idSet
	owner := newSwitchOwner([]int{0, 1, 2, 3, 4, 5, 6, 7})
	o := partitioned(t, env.JS, s, t.TempDir(), nil, "lost", &an)
	o.Owner = owner
	a, _, _ := run(t, o)
	waitWritten(t, last, 8, a)

	// The partition with the most events is lost.
	count := map[int]int{}
	for _, e := range envs[2000:] {
		u := e.Data.(*events.UsageDecided)
		count[events.UsagePartition(u.Tenant, u.Holder, 8)]++
	}
	lost := 0
	for p, n := range count {
		if n > count[lost] {
			lost = p
		}
	}
	owner.Released(lost) // Valid(lost) is false from now on
	before := a.Stats().Usage
	last, more := publishBatches(t, env.JS, envs[2000:], 100)
	natstest.WaitFor(t, 60*time.Second, func() error {
		st := a.Stats()
		if len(st.Partitions) != 7 {
			return fmt.Errorf("%d partitions run, want 7 once %d is lost", len(st.Partitions), lost)
		}
		for _, p := range st.Partitions {
			if p.Written < last {
				return fmt.Errorf("partition %d written up to %d of %d", p.Partition, p.Written, last)
			}
		}
		return nil
	})
	if got := a.Stats().Usage - before; got != uint64(len(more)-count[lost]) {
		t.Fatalf("%d rows written after the loss, want %d: the lost partition wrote %d", got, len(more)-count[lost], int(got)-(len(more)-count[lost]))
	}

	// Valid again with no new set (a lease renewed late, never lost): it
	// resumes at its checkpoint.
	owner.forgetReleased()
	waitWritten(t, last, 8, a)
	want := slices.Concat(ids, more)
	wantRowsOnce(t, s, want)
}

// TestStreamWithoutPartitions: a USAGE stream created before batches (no
// subject transform) stores batches under the subject they were published
// on; the auditor runs it as partition 0 of 1, reading every usage
// subject, batches and per-event messages alike.
func TestStreamWithoutPartitions(t *testing.T) {
	env := natstest.Run(t)
	ctx := context.Background()
	st, err := env.JS.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.SubjectTransform = nil
	if _, err := env.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	envs := simulated(t, 2000)
	_, ids := publishBatches(t, env.JS, envs[:1000], 100)
	var legacyIDs []string
	for _, e := range envs[1000:] {
		data, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, env.JS, events.Subject(e), [][]byte{data})
		legacyIDs = append(legacyIDs, e.ID.String())
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, "unpartitioned")
	var an idSet
	a, _, _ := run(t, partitioned(t, env.JS, s, t.TempDir(), nil, "flat", &an))
	waitWritten(t, info.State.LastSeq, 1, a)
	if st := a.Stats(); st.PartitionCount != 1 || st.Partitions[0].Partition != 0 {
		t.Fatalf("partitions %d, %+v; want partition 0 of 1", st.PartitionCount, st.Partitions)
	}
	want := slices.Concat(ids, legacyIDs)
	wantRowsOnce(t, s, want)
}
