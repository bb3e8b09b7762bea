package follow

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
)

// bench is a reader on a stream of its own, recording what it applied.
type bench struct {
	t   *testing.T
	env *natstest.Env
	r   *Reader

	mu  sync.Mutex
	got []uint64 // sequences applied, in order
}

const testStream, testSubject = "FOLLOWTEST", "follow.test.>"

func newBench(t *testing.T) *bench {
	t.Helper()
	env := natstest.Run(t)
	if _, err := env.JS.CreateStream(context.Background(), jetstream.StreamConfig{Name: testStream, Subjects: []string{testSubject}}); err != nil {
		t.Fatal(err)
	}
	return &bench{t: t, env: env}
}

func (b *bench) start(o Options) {
	b.t.Helper()
	o.JS, o.Stream = b.env.JS, testStream
	o.Apply = func(seq uint64, _ string, _ []byte) {
		b.mu.Lock()
		b.got = append(b.got, seq)
		b.mu.Unlock()
	}
	r, err := Start(context.Background(), o)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(r.Close)
	b.r = r
}

func (b *bench) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	b.t.Cleanup(cancel)
	return ctx
}

// publish adds n messages and returns the last one's sequence.
func (b *bench) publish(n int) uint64 {
	b.t.Helper()
	var last uint64
	for i := range n {
		ack, err := b.env.JS.Publish(b.ctx(), fmt.Sprintf("follow.test.%d", i), []byte("m"))
		if err != nil {
			b.t.Fatal(err)
		}
		last = ack.Sequence
	}
	return last
}

// assertExactly checks that every sequence from first to last was applied
// once, in order, and nothing else.
func (b *bench) assertExactly(first, last uint64) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var want []uint64
	for s := first; s <= last; s++ {
		want = append(want, s)
	}
	if !slices.Equal(b.got, want) {
		b.t.Fatalf("applied %v, want each of %d..%d once, in order", b.got, first, last)
	}
}

// TestReaderResumesAfterLastApplied: a re-created consumer starts at the
// last applied sequence + 1, and the reader applies each message once.
func TestReaderResumesAfterLastApplied(t *testing.T) {
	b := newBench(t)
	b.publish(5)
	b.start(Options{CheckInterval: -1})
	if err := b.r.Sync(b.ctx()); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		applied := b.r.Applied()
		if err := b.r.Rewatch(b.ctx(), "test"); err != nil {
			t.Fatal(err)
		}
		cfg := b.r.ConsumerInfo().Config
		if cfg.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cfg.OptStartSeq != applied+1 {
			t.Fatalf("round %d: new consumer starts with %v at %d, want by start sequence at %d", round, cfg.DeliverPolicy, cfg.OptStartSeq, applied+1)
		}
		last := b.publish(4)
		if err := b.r.WaitSeq(b.ctx(), last); err != nil {
			t.Fatal(err)
		}
	}
	b.assertExactly(1, 17)
	if st := b.r.Stats(); st.Rewatches != 3 || st.Applied != 17 {
		t.Fatalf("stats %+v, want 3 rewatches and 17 applied", st)
	}
}

// TestReaderIgnoresLateDeliveries: a replaced consumer that keeps
// delivering — old messages and new ones the current consumer delivers
// too — changes nothing: each sequence is applied once.
func TestReaderIgnoresLateDeliveries(t *testing.T) {
	b := newBench(t)
	b.start(Options{CheckInterval: -1})
	last := b.publish(10)
	if err := b.r.WaitSeq(b.ctx(), last); err != nil {
		t.Fatal(err)
	}
	// A consumer from the start of the stream feeding the reader, as the
	// consumer a rewatch replaced would if it came back to life.
	old, err := b.env.JS.OrderedConsumer(b.ctx(), testStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := old.Consume(b.r.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	last = b.publish(10)
	if err := b.r.WaitSeq(b.ctx(), last); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if d := b.r.Stats().Duplicates; d != 20 {
			return fmt.Errorf("%d duplicate deliveries ignored, want 20 (10 replayed, 10 delivered twice)", d)
		}
		return nil
	})
	b.assertExactly(1, 20)
}

// TestReaderRewatchesStalledConsumer: a consumer that stops delivering
// without any error the client could see (paused on the server, as a
// consumer on a dead server looks until heartbeats are missed) is
// replaced by WaitSeq, and by the periodic check when nobody waits.
func TestReaderRewatchesStalledConsumer(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait bool
	}{{"WaitSeq", true}, {"periodic check", false}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBench(t)
			interval := time.Duration(-1)
			if !tc.wait {
				interval = 50 * time.Millisecond
			}
			b.start(Options{CheckInterval: interval})
			var last uint64
			for round := range 3 {
				name := b.r.ConsumerInfo().Name
				if _, err := b.env.JS.PauseConsumer(b.ctx(), testStream, name, time.Now().Add(time.Hour)); err != nil {
					t.Fatalf("pause %s: %v", name, err)
				}
				last = b.publish(3)
				if tc.wait {
					if err := b.r.WaitSeq(b.ctx(), last); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				} else {
					natstest.WaitFor(t, 10*time.Second, func() error {
						if a := b.r.Applied(); a < last {
							return fmt.Errorf("round %d: applied %d of %d", round, a, last)
						}
						return nil
					})
				}
				t.Logf("round %d: %d rewatches so far", round, b.r.Stats().Rewatches)
			}
			// Each round's paused consumer was replaced (or nothing would
			// have been applied). On a loaded machine the client library
			// may replace a consumer itself first (its own reset on missed
			// heartbeats), so not every round is the reader's; three in a
			// row never are.
			if n := b.r.Stats().Rewatches; n == 0 {
				t.Fatal("the reader never replaced a stalled consumer itself")
			}
			b.assertExactly(1, last)
		})
	}
}

// TestReaderStartTime: a reader starting at a time applies nothing
// older, and counts what precedes its start as caught up with.
func TestReaderStartTime(t *testing.T) {
	b := newBench(t)
	b.publish(4)
	st, err := b.env.JS.Stream(b.ctx(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(b.ctx(), 4)
	if err != nil {
		t.Fatal(err)
	}
	start := m.Time.Add(time.Nanosecond) // just after the last old message
	b.start(Options{StartTime: start, CheckInterval: -1})
	if err := b.r.Sync(b.ctx()); err != nil {
		t.Fatalf("sync with nothing after the start: %v", err)
	}
	last := b.publish(3)
	if err := b.r.WaitSeq(b.ctx(), last); err != nil {
		t.Fatal(err)
	}
	b.assertExactly(5, 7)
}

// TestReaderClosed: a closed reader applies nothing more and refuses to
// wait.
func TestReaderClosed(t *testing.T) {
	b := newBench(t)
	b.start(Options{})
	b.r.Close()
	b.r.Close()
	last := b.publish(2)
	if err := b.r.WaitSeq(b.ctx(), last); err != ErrClosed {
		t.Fatalf("wait on a closed reader: %v, want ErrClosed", err)
	}
	b.assertExactly(1, 0)
}

// TestStartRefusesBadOptions names what is missing.
func TestStartRefusesBadOptions(t *testing.T) {
	env := natstest.Run(t)
	apply := func(uint64, string, []byte) {}
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"no JetStream", Options{Stream: "S", Apply: apply}},
		{"no stream", Options{JS: env.JS, Apply: apply}},
		{"no apply", Options{JS: env.JS, Stream: "S"}},
		{"filters without end", Options{JS: env.JS, Stream: "S", Apply: apply, FilterSubjects: []string{"a", "b"}}},
		{"missing stream", Options{JS: env.JS, Stream: "NOPE", Apply: apply}}, // not retried until ctx ends
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			if r, err := Start(ctx, tc.o); err == nil {
				r.Close()
				t.Fatal("started")
			} else {
				t.Log(err)
			}
		})
	}
}

// TestReaderReadsDirectlyWhileNoConsumerCanBeCreated: a reader whose
// consumer went silent and that cannot get a new one (here the stream
// allows one consumer; after a node loss, no meta leader) keeps up by
// reading the messages it waits for one by one — only those its filter
// delivers, each once, in order.
func TestReaderReadsDirectlyWhileNoConsumerCanBeCreated(t *testing.T) {
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: testStream, Subjects: []string{testSubject}, MaxConsumers: 1}); err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []uint64
	)
	r, err := Start(ctx, Options{JS: env.JS, Stream: testStream, FilterSubjects: []string{"follow.test.keep.*"}, DirectReads: true,
		CheckInterval: -1, Apply: func(seq uint64, subject string, _ []byte) {
			mu.Lock()
			got = append(got, seq)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var want []uint64
	publish := func(n int) uint64 {
		var last uint64
		for i := range n {
			subject := "follow.test.skip.x"
			if i%2 == 0 {
				subject = "follow.test.keep.x"
			}
			ack, err := env.JS.Publish(ctx, subject, []byte("m"))
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				want = append(want, ack.Sequence)
				last = ack.Sequence
			}
		}
		return last
	}
	if err := r.WaitSeq(ctx, publish(4)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.PauseConsumer(ctx, testStream, r.ConsumerInfo().Name, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		if err := r.WaitSeq(ctx, publish(6)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	if st := r.Stats(); st.DirectReads != 9 || st.Rewatches != 0 {
		t.Fatalf("stats %+v, want the 9 messages after the pause read directly and no new consumer", st)
	}
}

func TestSubjectMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"cordon.token.issued.cordon.>", "cordon.token.issued.cordon.x", true},
		{"cordon.token.issued.cordon.>", "cordon.token.issued.acme.x", false},
		{"*.b", "a.b", true},
		{"a.b.c", "a.b", false},
	} {
		if got := subjectMatch(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatch(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}

// TestRewatchAfterDirectReads: a rewatch asked for by a waiter whose
// consumer went silent still replaces the consumer when the waiter's
// direct reads applied what it waited for before the rewatch ran (the
// rewatcher runs late on a loaded machine); one asked for while the
// consumer went on delivering does not.
func TestRewatchAfterDirectReads(t *testing.T) {
	b := newBench(t)
	b.start(Options{CheckInterval: -1, DirectReads: true})
	if err := b.r.WaitSeq(b.ctx(), b.publish(2)); err != nil {
		t.Fatal(err)
	}
	old := b.r.ConsumerInfo().Name
	if _, err := b.env.JS.PauseConsumer(b.ctx(), testStream, old, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// What a waiter records as it starts to wait, then its direct reads.
	gen, delivered := b.r.gen.Load(), b.r.delivered.Load()
	last := b.publish(3)
	if err := b.r.catchUp(b.ctx(), last); err != nil {
		t.Fatal(err)
	}
	if a := b.r.Applied(); a != last {
		t.Fatalf("direct reads applied up to %d, want %d", a, last)
	}
	before := b.r.Stats().Rewatches
	if err := b.r.rewatch(b.ctx(), "test", delivered, gen); err != nil {
		t.Fatal(err)
	}
	if n := b.r.Stats().Rewatches; n != before+1 {
		t.Fatalf("rewatches %d after the late rewatch, want %d: the silent consumer was kept", n, before+1)
	}
	if name := b.r.ConsumerInfo().Name; name == old {
		t.Fatalf("still on consumer %s", name)
	}
	// The new consumer delivers: a rewatch asked for before that is
	// dropped.
	gen, delivered = b.r.gen.Load(), b.r.delivered.Load()
	last = b.publish(2)
	natstest.WaitFor(t, 10*time.Second, func() error {
		if d := b.r.delivered.Load(); d == delivered {
			return fmt.Errorf("the new consumer delivered nothing yet (applied %d of %d)", b.r.Applied(), last)
		}
		return nil
	})
	if err := b.r.rewatch(b.ctx(), "test", delivered, gen); err != nil {
		t.Fatal(err)
	}
	if n := b.r.Stats().Rewatches; n != before+1 {
		t.Fatalf("rewatches %d: a consumer that delivered was replaced", n)
	}
	if err := b.r.WaitSeq(b.ctx(), last); err != nil {
		t.Fatal(err)
	}
	b.assertExactly(1, last)
}
