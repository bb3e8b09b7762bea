package auditor_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// stalledStore holds its first usage insert until released.
type stalledStore struct {
	*store.Store
	calls    atomic.Int32
	entered  chan struct{}
	release  chan struct{}
	enterOne sync.Once
}

func (s *stalledStore) InsertUsageOnce(ctx context.Context, token string, evs []events.Envelope) error {
	if s.calls.Add(1) == 1 {
		s.enterOne.Do(func() { close(s.entered) })
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.InsertUsageOnce(ctx, token, evs)
}

// TestDetectionDoesNotWaitOnWrites: while a partition's insert group is
// being written (a slow store), the partition goes on analysing what
// arrives — an attack after the next group's wait ran out is flagged
// before the first write ends — and every row is written once after.
// Detection used to wait for the write in flight whenever a group closed.
func TestDetectionDoesNotWaitOnWrites(t *testing.T) {
	env := natstest.Run(t)
	s := &stalledStore{Store: openStore(t, "nowait"), entered: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	}()
	det, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var fl flagged
	const wait = 20 * time.Millisecond
	run(t, auditor.Options{JS: env.JS, Store: s, Detector: det, StateDir: t.TempDir(), BatchWait: wait,
		Log:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OnAnomaly: fl.add})
	subject := events.UsageSubject("acme", "edge-1")
	// The first group's write stalls.
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-first", "edge-1")})
	select {
	case <-s.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first group was never written")
	}
	// A second group opens, and its wait runs out while the first is
	// still being written.
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-second", "edge-1")})
	natstest.WaitFor(t, 20*time.Second, fl.has("tok-second"))
	time.Sleep(10 * wait) // not a bound: lets the second group's wait run out
	// What arrives now is analysed at once, the write still stalled.
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-third", "edge-1")})
	natstest.WaitFor(t, 20*time.Second, fl.has("tok-third"))
	if n := s.calls.Load(); n != 1 {
		t.Fatalf("%d usage inserts began while the first was stalled, want 1 (one group in flight)", n)
	}
	close(s.release)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if n, err := s.CountUsage(context.Background()); err != nil || n != 3 {
			return fmt.Errorf("%d rows (%v), want 3", n, err)
		}
		return nil
	})
}

// stalledState holds the first checkpoint save until released, and
// records for each save the usage sequence it covers and the rows the
// store held then.
type stalledState struct {
	auditor.DirState
	st       *store.Store
	entered  chan struct{}
	release  chan struct{}
	enterOne sync.Once
	mu       sync.Mutex
	saves    [][2]uint64 // usage sequence covered, rows stored
}

func (s *stalledState) SaveCheckpoint(ctx context.Context, p int, data []byte) error {
	// A version 2 checkpoint: magic, then uvarints partition, partition
	// count and the usage sequence covered.
	r := bytes.NewReader(data[len("CORDONDS2"):])
	var seq uint64
	for range 3 {
		v, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("checkpoint header: %w", err)
		}
		seq = v
	}
	rows, err := s.st.CountUsage(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.saves = append(s.saves, [2]uint64{seq, rows})
	s.mu.Unlock()
	first := false
	s.enterOne.Do(func() { first = true; close(s.entered) })
	if first {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.DirState.SaveCheckpoint(ctx, p, data)
}

// TestDetectionDoesNotWaitOnCheckpoints: while a partition's checkpoint
// is being saved (a slow disk or bucket), the partition goes on analysing
// what arrives; and a checkpoint is saved only once every row it covers
// is written. The checkpoint used to be made in the partition's loop,
// waiting for writes, anomalies and the save's fsyncs.
func TestDetectionDoesNotWaitOnCheckpoints(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "nowait_ckpt")
	state := &stalledState{DirState: auditor.DirState{Dir: t.TempDir()}, st: s, entered: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-state.release:
		default:
			close(state.release)
		}
	}()
	det, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var fl flagged
	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Detector: det, State: state, BatchWait: 20 * time.Millisecond, CheckpointEvery: 20 * time.Millisecond,
		Log:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OnAnomaly: fl.add})
	subject := events.UsageSubject("acme", "edge-1")
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-first", "edge-1")})
	select {
	case <-state.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no checkpoint was ever saved")
	}
	// The save is stalled: what arrives now is analysed and written.
	for i := range 3 {
		tok := fmt.Sprintf("tok-during-%d", i)
		publish(t, env.JS, subject, [][]byte{revokedUseBy(t, tok, "edge-1")})
		natstest.WaitFor(t, 20*time.Second, fl.has(tok))
	}
	natstest.WaitFor(t, 20*time.Second, func() error {
		if n, err := s.CountUsage(context.Background()); err != nil || n != 4 {
			return fmt.Errorf("%d rows (%v), want 4", n, err)
		}
		return nil
	})
	close(state.release)
	// The next checkpoints cover everything; each covered only rows
	// already written when it was saved.
	natstest.WaitFor(t, 20*time.Second, func() error {
		state.mu.Lock()
		defer state.mu.Unlock()
		if last := state.saves[len(state.saves)-1]; last[0] != 4 {
			return fmt.Errorf("last checkpoint covers usage sequence %d, want 4", last[0])
		}
		return nil
	})
	state.mu.Lock()
	for _, sv := range state.saves {
		if sv[1] < sv[0] { // one message, one row: sequence n needs n rows
			t.Errorf("a checkpoint covering usage sequence %d was saved with %d rows written", sv[0], sv[1])
		}
	}
	state.mu.Unlock()
	if st := a.Stats(); st.LastUsageSeq != 4 {
		t.Fatalf("stats: %+v", st)
	}
}

// stalledAnomalies holds the first anomaly insert until released.
type stalledAnomalies struct {
	*store.Store
	entered  chan struct{}
	release  chan struct{}
	enterOne sync.Once
}

func (s *stalledAnomalies) InsertAnomalies(ctx context.Context, evs []events.Envelope) error {
	first := false
	s.enterOne.Do(func() { first = true; close(s.entered) })
	if first {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.InsertAnomalies(ctx, evs)
}

// TestDetectionDoesNotWaitOnAnomalyWrites: while a partition's anomalies
// are being made durable (a slow store), the partition goes on analysing
// what arrives; nothing counts as durable (Stats.LastUsageSeq) before the
// anomalies are. The flush used to run in the partition's loop.
func TestDetectionDoesNotWaitOnAnomalyWrites(t *testing.T) {
	env := natstest.Run(t)
	s := &stalledAnomalies{Store: openStore(t, "nowait_anom"), entered: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	}()
	det, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var fl flagged
	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Detector: det, StateDir: t.TempDir(), BatchWait: 20 * time.Millisecond,
		Log:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OnAnomaly: fl.add})
	subject := events.UsageSubject("acme", "edge-1")
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-first", "edge-1")})
	select {
	case <-s.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first anomaly was never written")
	}
	for i := range 3 {
		tok := fmt.Sprintf("tok-during-%d", i)
		publish(t, env.JS, subject, [][]byte{revokedUseBy(t, tok, "edge-1")})
		natstest.WaitFor(t, 20*time.Second, fl.has(tok))
	}
	if st := a.Stats(); st.LastUsageSeq != 0 {
		t.Fatalf("usage durable up to %d while the first anomaly is not", st.LastUsageSeq)
	}
	close(s.release)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if st := a.Stats(); st.LastUsageSeq != 4 {
			return fmt.Errorf("durable up to %d, want 4", st.LastUsageSeq)
		}
		return nil
	})
	if got := storedAnomalies(t, s.Store); len(got) != 4 {
		t.Fatalf("%d anomalies stored, want 4", len(got))
	}
}

// flagged records the tokens the auditor raised anomalies for (OnAnomaly).
type flagged struct {
	mu     sync.Mutex
	raised map[string]bool
}

func (f *flagged) add(e events.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.raised == nil {
		f.raised = map[string]bool{}
	}
	f.raised[e.Data.(*events.AnomalyDetected).TokenID] = true
}

// has is a natstest.WaitFor condition: tok was flagged.
func (f *flagged) has(tok string) func() error {
	return func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.raised[tok] {
			return fmt.Errorf("%s not flagged yet", tok)
		}
		return nil
	}
}
