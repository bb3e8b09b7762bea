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

// TestGroupWait: a group stays open from half to 1.5 × BatchWait, and
// closes on its partition's beat: BatchWait apart, shifted by p/parts of
// it. A group opened as the one before closed on the beat stays open
// BatchWait exactly. Partitions opening groups at the same instant close
// them one after another, in turn across one BatchWait, not all at once.
func TestGroupWait(t *testing.T) {
	cases := []struct {
		wait  time.Duration
		parts int
	}{
		{time.Second, 8},
		{time.Second, 1},
		{50 * time.Millisecond, 3},
		{7 * time.Millisecond, 64},
	}
	base := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range cases {
		a := &Auditor{o: Options{BatchWait: tc.wait}, parts: tc.parts}
		for _, offset := range []time.Duration{0, 1, tc.wait / 3, tc.wait - 1, 17*tc.wait + 12345} {
			now := base.Add(offset)
			ends := map[time.Duration]int{}
			for p := 0; p < tc.parts; p++ {
				r := &runner{a: a, p: p}
				w := r.groupWait(now)
				if w < tc.wait/2 || w >= tc.wait*3/2 {
					t.Fatalf("BatchWait %v, %d partitions, partition %d at +%v: wait %v, want [%v, %v)", tc.wait, tc.parts, p, offset, w, tc.wait/2, tc.wait*3/2)
				}
				// The next group, opened at this one's close (or just
				// after), lasts BatchWait: the partition keeps its beat.
				for _, late := range []time.Duration{0, time.Nanosecond, tc.wait / 4} {
					if next := r.groupWait(now.Add(w + late)); next != tc.wait-late {
						t.Fatalf("BatchWait %v, partition %d: a group opened %v after a close on the beat stays open %v, want %v", tc.wait, p, late, next, tc.wait-late)
					}
				}
				end := time.Duration(now.Add(w).UnixNano())
				phase := tc.wait * time.Duration(p) / time.Duration(tc.parts)
				if (end-phase)%tc.wait != 0 {
					t.Errorf("partition %d closes at %v, not on its grid (phase %v of %v)", p, end, phase, tc.wait)
				}
				ends[end]++
			}
			if len(ends) != tc.parts {
				t.Errorf("BatchWait %v, %d partitions at +%v: %d distinct closing instants", tc.wait, tc.parts, offset, len(ends))
			}
		}
		// A first group is BatchWait long on average over the instants it
		// can open at: the beat costs no insert.
		r := &runner{a: a, p: tc.parts - 1}
		const n = 1000
		var sum time.Duration
		for i := range n {
			sum += r.groupWait(base.Add(tc.wait * time.Duration(i) / n))
		}
		if mean := sum / n; mean < tc.wait*99/100 || mean > tc.wait*101/100 {
			t.Errorf("BatchWait %v: a first group lasts %v on average", tc.wait, mean)
		}
	}
}
