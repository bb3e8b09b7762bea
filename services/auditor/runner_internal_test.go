package auditor

import (
	"sync"
	"testing"
	"time"
)

// TestIdleProbePacing: a quiet runner probes on its first quiet tick and
// then backs off, doubling up to a second, with its timer set to the next
// probe (no ticks in between); a message brings the ticks back to
// probeTick; a nudge makes a quiet runner probe and start over, and a busy
// one ignore it.
func TestIdleProbePacing(t *testing.T) {
	p := newIdleProbe()
	defer p.t.Stop()
	type step struct {
		do          string // tick, busy, nudge
		probe       bool
		nextBackoff time.Duration
	}
	steps := []step{
		{"tick", true, 2 * probeTick},
		{"tick", true, 4 * probeTick},
		{"tick", true, 8 * probeTick},
		{"tick", true, 16 * probeTick},
		{"tick", true, 32 * probeTick},
		{"tick", true, time.Second},
		{"tick", true, time.Second},
		{"busy", false, probeTick},
		{"busy", false, probeTick},
		{"nudge", false, probeTick}, // busy: its own messages advance it
		{"tick", false, probeTick},  // the tick after messages does not probe
		{"tick", true, 2 * probeTick},
		{"tick", true, 4 * probeTick},
		{"nudge", true, probeTick},
		{"tick", true, 2 * probeTick},
	}
	for i, s := range steps {
		var probe bool
		switch s.do {
		case "tick":
			probe = p.tick()
		case "busy":
			p.busy()
		case "nudge":
			probe = p.nudged()
		}
		if probe != s.probe || p.backoff != s.nextBackoff {
			t.Fatalf("step %d (%s): probe %v, backoff %v; want %v, %v", i, s.do, probe, p.backoff, s.probe, s.nextBackoff)
		}
	}
}

// TestIdleProbeRead: a runner that read messages signals its caught-up once
// (probe clears read), and reading again re-arms it.
func TestIdleProbeRead(t *testing.T) {
	p := newIdleProbe()
	defer p.t.Stop()
	if p.read {
		t.Fatal("a new probe has read nothing")
	}
	p.busy()
	p.busy()
	if !p.read {
		t.Fatal("busy did not record the read")
	}
	p.tick()
	if !p.read {
		t.Fatal("a tick cleared the read: only a caught-up probe does")
	}
}

// TestCaughtUpSignal: signalling closes the current generation once, names
// the partition that caught up, and installs an open one; concurrent
// signals never close a channel twice.
func TestCaughtUpSignal(t *testing.T) {
	a := &Auditor{}
	g := a.caughtUpSignal()
	if g != a.caughtUpSignal() {
		t.Fatal("the generation changed without a signal")
	}
	a.signalCaughtUp(3)
	select {
	case <-g.ch:
	default:
		t.Fatal("the signalled generation is still open")
	}
	next := a.caughtUpSignal()
	if g.by != 3 || g.next != next {
		t.Fatalf("signalled by %d, next %p; want 3, %p", g.by, g.next, next)
	}
	if next == g {
		t.Fatal("no new generation after a signal")
	}
	select {
	case <-next.ch:
		t.Fatal("the new generation is closed")
	default:
	}

	var wg sync.WaitGroup
	for p := range 16 {
		wg.Go(func() {
			for range 100 {
				a.signalCaughtUp(p)
			}
		})
	}
	wg.Wait()
	select {
	case <-a.caughtUpSignal().ch:
		t.Fatal("the current generation is closed")
	default:
	}
}
