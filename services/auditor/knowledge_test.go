package auditor_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/services/auditor"
)

// detectPartitioned runs a dataset through the detectors as the auditor
// does: one engine per partition (its share of the bounds), each fed the
// events of its (tenant, holder), sharing one detect.Shared unless share
// is false. It returns "detector/event/severity" of every anomaly, sorted.
func detectPartitioned(t *testing.T, envs []events.Envelope, parts int, share bool) []string {
	t.Helper()
	shared := detect.NewShared(nil)
	engines := make([]*detect.Engine, parts)
	for p := range engines {
		e, err := detect.New(auditor.PartitionBounds(detect.DefaultConfig(), parts))
		if err != nil {
			t.Fatal(err)
		}
		if share {
			e.Share(shared, nil)
		}
		engines[p] = e
	}
	var out []string
	for _, env := range envs {
		tenant, holder, _ := events.PartitionKey(env.Data)
		for _, a := range engines[events.UsagePartition(tenant, holder, parts)].Observe(env) {
			out = append(out, a.Detector+"/"+a.EventID+"/"+a.Severity)
		}
	}
	slices.Sort(out)
	return out
}

// TestPartitionsDetectAsOne: the default scenario's events, split into
// the default partitions whose detectors share what they learn, raise
// exactly the anomalies one detector over all of them raises. Without
// sharing they do not: the usage naming no token lands in one partition,
// which knows only its own holders' networks (a broken client in a
// workload's network looks like someone forging tokens), and a tenant's
// address spaces are split between partitions (a new holder in a known
// space looks foreign). Seed 2 has both.
func TestPartitionsDetectAsOne(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if testing.Short() {
		seeds = []uint64{2}
	}
	for _, seed := range seeds {
		sc := simulate.DefaultScenario()
		sc.Seed = seed
		ds, err := simulate.Generate(sc)
		if err != nil {
			t.Fatal(err)
		}
		one := detectPartitioned(t, ds.Events, 1, false)
		if len(one) < 50 {
			t.Fatalf("seed %d: %d anomalies from one detector: the comparison would prove little", seed, len(one))
		}
		parts := detectPartitioned(t, ds.Events, events.DefaultUsagePartitions, true)
		if d := diff(one, parts); d != "" {
			t.Errorf("seed %d: %d partitions sharing differ from one detector:\n%s", seed, events.DefaultUsagePartitions, d)
		}
		if seed != 2 {
			continue
		}
		alone := detectPartitioned(t, ds.Events, events.DefaultUsagePartitions, false)
		extra := 0
		for _, a := range alone {
			if _, found := slices.BinarySearch(one, a); !found {
				extra++
			}
		}
		if extra == 0 {
			t.Errorf("seed 2: partitions without sharing raised nothing one detector does not: the test cannot tell sharing from none")
		}
	}
}

// diff lists what only a or only b holds (both sorted), "" when equal.
func diff(a, b []string) string {
	var out string
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out += "  only one detector: " + x + "\n"
		}
	}
	for _, x := range b {
		if _, ok := slices.BinarySearch(a, x); !ok {
			out += "  only the partitions: " + x + "\n"
		}
	}
	return out
}

// TestKnowledgeBetweenInstances: what one instance's detectors learn
// reaches another's through the bucket, the earliest time wins whichever
// instance learnt it, a restarted instance has every fact before it
// returns, and an entry written by something else is skipped, counted and
// does not stop what follows.
func TestKnowledgeBetweenInstances(t *testing.T) {
	env := natstest.Run(t)
	ctx := context.Background()
	a, err := auditor.OpenKnowledge(ctx, env.JS, auditor.KnowledgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := auditor.OpenKnowledge(ctx, env.JS, auditor.KnowledgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	net := detect.Fact{Kind: detect.FactWorkNetwork, Key: 0xabc, Time: 5000}
	space := detect.Fact{Kind: detect.FactTenantSpace, Tenant: detect.TenantHash("globex"), Key: 0xfd000b00 << 32, V6: true, Time: 6000}
	learnt := detect.Fact{Kind: detect.FactTenantLearnt, Tenant: detect.TenantHash("globex"), Time: 7000}
	a.Shared().Learn(net)
	a.Shared().Learn(space)
	b.Shared().Learn(learnt)
	holds := func(k *auditor.Knowledge, want ...detect.Fact) func() error {
		return func() error {
			got := k.Shared().Facts()
			for _, w := range want {
				if !slices.Contains(got, w) {
					return fmt.Errorf("holds %+v, not %+v", got, w)
				}
			}
			return nil
		}
	}
	natstest.WaitFor(t, 30*time.Second, holds(b, net, space, learnt))
	natstest.WaitFor(t, 30*time.Second, holds(a, net, space, learnt))

	// b learns the network earlier than a did: the bucket and a take it;
	// a learning it later again changes nothing.
	earlier := with(net, 4000)
	b.Shared().Learn(earlier)
	natstest.WaitFor(t, 30*time.Second, holds(a, earlier))
	a.Shared().Learn(with(net, 4500))
	kv, err := env.JS.KeyValue(ctx, events.BucketAuditorKnowledge)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		if st := a.Stats(); st.Written < 2 {
			return fmt.Errorf("a wrote %d", st.Written)
		}
		e, err := kv.Get(ctx, auditor.FactKey(net))
		if err != nil {
			return err
		}
		if string(e.Value()) != "4000" {
			return fmt.Errorf("bucket holds %s", e.Value())
		}
		return nil
	})

	// Entries no instance writes: skipped and counted; a fact after them
	// still arrives.
	bad := map[string]string{
		"net.xyz":                 "100",
		"net.123":                 "-5",
		"net.124":                 "soon",
		"net.10000000000000000":   "100", // 17 hex digits
		"space.1.5.2":             "100",
		"space.1.4":               "100",
		"learnt.1.2":              "100",
		"other.1":                 "100",
		"net.abc.def":             "100",
		"space.1.4.2":             "100 ",
		"learnt.ffffffffffffffff": "99999999999999999999",
	}
	before := b.Stats().Invalid
	for k, v := range bad {
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	after := detect.Fact{Kind: detect.FactWorkNetwork, Key: 0xdef, Time: 9000}
	a.Shared().Learn(after)
	natstest.WaitFor(t, 30*time.Second, holds(b, after))
	if got := b.Stats().Invalid - before; got != uint64(len(bad)) {
		t.Errorf("%d entries counted invalid, want %d", got, len(bad))
	}

	// A new instance holds every fact once OpenKnowledge returns.
	c, err := auditor.OpenKnowledge(ctx, env.JS, auditor.KnowledgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := holds(c, earlier, space, learnt, after)(); err != nil {
		t.Fatalf("just opened: %v", err)
	}
}

func with(f detect.Fact, t int64) detect.Fact { f.Time = t; return f }

// TestFactKeys: every fact survives its key and value; keys are valid KV
// keys.
func TestFactKeys(t *testing.T) {
	for _, f := range []detect.Fact{
		{Kind: detect.FactWorkNetwork, Key: 0, Time: 1},
		{Kind: detect.FactWorkNetwork, Key: ^uint64(0), Time: 1 << 40},
		{Kind: detect.FactTenantSpace, Tenant: detect.TenantHash(""), Key: 0x0a000000, Time: 17},
		{Kind: detect.FactTenantSpace, Tenant: detect.TenantHash("a.b>c*"), Key: ^uint64(0), V6: true, Time: 17},
		{Kind: detect.FactTenantLearnt, Tenant: ^uint64(0), Time: 3},
	} {
		key := auditor.FactKey(f)
		for _, r := range key {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.') {
				t.Fatalf("%+v: key %q has %q", f, key, r)
			}
		}
		got, err := auditor.ParseFact(key, fmt.Appendf(nil, "%d", f.Time))
		if err != nil || got != f {
			t.Fatalf("%+v: read back %+v, %v", f, got, err)
		}
	}
}

// TestKnowledgePermissions: the auditor's NATS identity creates, follows
// and writes the knowledge bucket; an enforcer's (which a stolen host
// may hold) can neither read nor poison it — a fact written there
// silences detection.
func TestKnowledgePermissions(t *testing.T) {
	s := natstest.RunSecured(t)
	ctx := context.Background()
	_, js := s.Connect(t, natsauth.RoleAuditor)
	k, err := auditor.OpenKnowledge(ctx, js, auditor.KnowledgeOptions{})
	if err != nil {
		t.Fatalf("auditor: %v", err)
	}
	defer k.Close()
	f := detect.Fact{Kind: detect.FactWorkNetwork, Key: 1, Time: 10}
	k.Shared().Learn(f)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if st := k.Stats(); st.Written != 1 {
			return fmt.Errorf("written %d", st.Written)
		}
		return nil
	})
	if v := s.Violations(); len(v) > 0 {
		t.Fatalf("the auditor was refused: %v", v)
	}
	// The issuer and the revoker, the other services' identities.
	for _, r := range []natsauth.Role{natsauth.RoleIssuer, natsauth.RoleRevoker} {
		_, other := s.Connect(t, r)
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := other.KeyValue(cctx, events.BucketAuditorKnowledge)
		if err == nil {
			t.Errorf("%s opened the knowledge bucket", r)
		}
		// Writing needs no bucket handle: a plain publish on the key's
		// subject, as JetStream stores KV entries.
		_, err = other.Publish(cctx, "$KV."+events.BucketAuditorKnowledge+"."+auditor.FactKey(detect.Fact{Kind: detect.FactWorkNetwork, Key: 2, Time: 1}), []byte("1"))
		cancel()
		if err == nil {
			t.Errorf("%s wrote a fact to the knowledge bucket", r)
		}
	}
	if facts := k.Shared().Facts(); len(facts) != 1 {
		t.Errorf("facts %+v after the refused writes", facts)
	}
}

// TestGate: a partition's gate holds its judgement while another
// partition has read neither a day of event time before it nor up to its
// message, lets it go as soon as one holds (reading this instance's
// progress or, through the bucket, another instance's), gives up on a
// partition that does not move, and waits for it again once it moves.
func TestGate(t *testing.T) {
	env := natstest.Run(t)
	ctx := context.Background()
	day := int64(detect.ShareDelay / time.Second)
	const t0 = int64(1_700_000_000) // 2023: usage replayed, not live
	open := func(wait time.Duration) *auditor.Knowledge {
		k, err := auditor.OpenKnowledge(ctx, env.JS, auditor.KnowledgeOptions{Wait: wait})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		return k
	}
	// waitAsync runs g.Wait(at) and reports when it returned.
	waitAsync := func(g detect.Gate, at int64) chan struct{} {
		done := make(chan struct{})
		go func() { g.Wait(at); close(done) }()
		return done
	}
	blocked := func(what string, done chan struct{}) {
		t.Helper()
		select {
		case <-done:
			t.Fatalf("%s: the gate let the judgement go", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
	released := func(what string, done chan struct{}) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the gate still holds", what)
		}
	}

	k := open(time.Hour)
	running := make(chan struct{})
	defer close(running)
	k.Reading(0, running)
	k.Reading(1, running)
	g := k.Gate(0, 2)
	k.Judging(0, 100)
	k.Read(1, t0)
	released("partition 1 read the day before", waitAsync(g, t0+day))
	w := waitAsync(g, t0+day+3600)
	blocked("partition 1 an hour short", w)
	k.Read(1, t0+3600)
	released("partition 1 read the hour", w)
	w = waitAsync(g, t0+5*day)
	blocked("partition 1 days behind", w)
	k.Judging(1, 101) // it judged every message of its own before 101
	released("partition 1 past the message judged", w)
	if st := k.Stats(); st.Waits != 2 || st.GaveUp != 0 {
		t.Errorf("stats %+v, want 2 waits", st)
	}

	// Another instance runs partition 1: its progress arrives through
	// the bucket.
	a, b := open(time.Hour), open(time.Hour)
	a.Reading(0, running)
	b.Reading(1, running)
	ga := a.Gate(0, 2)
	b.Gate(1, 2)
	a.Judging(0, 500)
	w = waitAsync(ga, t0+day)
	blocked("the other instance has not read", w)
	b.Read(1, t0)
	released("the other instance read the day before", w)
	w = waitAsync(ga, t0+10*day)
	blocked("the other instance days behind", w)
	b.CaughtUp(1, 600)
	released("the other instance caught up past the message", w)

	// A partition that does not move is given up on after the wait, and
	// not waited for again until it moves. (A bucket of its own: the
	// marks above are in the first.)
	env = natstest.Run(t)
	c := open(300 * time.Millisecond)
	c.Reading(0, running)
	c.Reading(1, running)
	gc := c.Gate(0, 2)
	c.Judging(0, 100)
	released("a partition that never moves", waitAsync(gc, t0+day))
	released("the same, given up on", waitAsync(gc, t0+2*day))
	if st := c.Stats(); st.Waits != 1 || st.GaveUp != 1 {
		t.Errorf("stats %+v, want 1 wait given up", st)
	}
	c.Read(1, t0-day) // moves, still behind
	w = waitAsync(gc, t0+3*day)
	released("a partition that moved and stopped again", w)
	if st := c.Stats(); st.Waits != 2 || st.GaveUp != 2 {
		t.Errorf("stats %+v, want a second wait given up", st)
	}

	// The runner's end ends a wait.
	env = natstest.Run(t)
	d := open(time.Hour)
	stop := make(chan struct{})
	d.Reading(0, stop)
	gd := d.Gate(0, 2)
	d.Judging(0, 100)
	// Live usage: a partition nobody ran yet learnt nothing a day ago.
	released("live, a partition never run", waitAsync(gd, time.Now().Unix()))
	w = waitAsync(gd, t0+day)
	blocked("replayed, a partition never run", w)
	close(stop)
	released("the runner stopped", w)
}
