package auditor_test

import (
	"context"
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
	var mu sync.Mutex
	raised := map[string]bool{}
	const wait = 20 * time.Millisecond
	run(t, auditor.Options{JS: env.JS, Store: s, Detector: det, StateDir: t.TempDir(), BatchWait: wait,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OnAnomaly: func(e events.Envelope) {
			mu.Lock()
			raised[e.Data.(*events.AnomalyDetected).TokenID] = true
			mu.Unlock()
		}})
	subject := events.UsageSubject("acme", "edge-1")
	flagged := func(tok string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if !raised[tok] {
				return fmt.Errorf("%s not flagged yet", tok)
			}
			return nil
		}
	}
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
	natstest.WaitFor(t, 20*time.Second, flagged("tok-second"))
	time.Sleep(10 * wait) // not a bound: lets the second group's wait run out
	// What arrives now is analysed at once, the write still stalled.
	publish(t, env.JS, subject, [][]byte{revokedUseBy(t, "tok-third", "edge-1")})
	natstest.WaitFor(t, 20*time.Second, flagged("tok-third"))
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
