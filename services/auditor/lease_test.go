package auditor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/services/auditor"
)

// leaseTTL is the lease TTL of the tests: short, so takeovers come soon,
// and long enough for a loaded machine to renew in time.
const leaseTTL = 2 * time.Second

// takeover bounds a takeover: the victim's leases expire within a TTL of
// its last renewal, the others see the markers and create; the slack is
// for a loaded machine.
const takeover = 3*leaseTTL + 10*time.Second

// leaseWorld is a set of lease owners on one lease bucket, with a watch of
// the bucket's whole history and a sampler of every owner's Valid.
type leaseWorld struct {
	t          *testing.T
	partitions int
	// connect returns a new connection for a member.
	connect  func(name string) (*nats.Conn, jetstream.JetStream)
	replicas int

	mu      sync.Mutex
	members []*leaseMember
	// history is every entry of the bucket, in order.
	history []string
	// doubles are instants at which two members held Valid for one
	// partition.
	doubles []string
}

// leaseMember is one auditor instance's owner, with a fake runner that
// hands a partition back as soon as it leaves the owned set.
type leaseMember struct {
	name   string
	owner  *auditor.LeaseOwner
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error

	// crashed: its connection was closed under it, so Run may end with
	// an error.
	crashed bool

	mu    sync.Mutex
	owned []int
	sets  int
}

func (m *leaseMember) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.owned)
}

func newLeaseWorld(t *testing.T, partitions, replicas int, admin jetstream.JetStream, connect func(string) (*nats.Conn, jetstream.JetStream)) *leaseWorld {
	t.Helper()
	w := &leaseWorld{t: t, partitions: partitions, connect: connect, replicas: replicas}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The bucket keeps 64 revisions per key here (the owners only ever
	// read and compare the last one): a history watch that falls behind
	// still finds every revision, so it sees every delete and expiry
	// marker between two owners.
	cfg := auditor.LeaseBucketConfig(leaseTTL, replicas)
	cfg.History = 64
	if _, err := admin.CreateKeyValue(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := auditor.OpenLeaseBucket(ctx, admin, leaseTTL, replicas)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for e := range watch.Updates() {
			if e == nil || !strings.HasPrefix(e.Key(), "p.") {
				continue
			}
			w.mu.Lock()
			w.history = append(w.history, fmt.Sprintf("%s %s %q rev %d", e.Key(), e.Operation(), e.Value(), e.Revision()))
			w.mu.Unlock()
		}
	}()
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			w.mu.Lock()
			ms := slices.Clone(w.members)
			w.mu.Unlock()
			for p := range partitions {
				var valid []string
				for _, m := range ms {
					if m.owner.Valid(p) {
						valid = append(valid, m.name)
					}
				}
				if len(valid) > 1 {
					w.mu.Lock()
					w.doubles = append(w.doubles, fmt.Sprintf("partition %d valid for %v", p, valid))
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

// start runs a member.
func (w *leaseWorld) start(name string) *leaseMember {
	w.t.Helper()
	nc, js := w.connect(name)
	o, err := auditor.NewLeaseOwner(auditor.LeaseOptions{JS: js, Instance: name, TTL: leaseTTL, Replicas: w.replicas,
		Log: zerolog.New(zerolog.NewTestWriter(w.t)).With().Str("member", name).Logger()})
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &leaseMember{name: name, owner: o, nc: nc, cancel: cancel, done: make(chan error, 1)}
	owned := make(chan []int)
	go func() { m.done <- o.Run(ctx, w.partitions, owned) }()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case set := <-owned:
				m.mu.Lock()
				gone := slices.DeleteFunc(slices.Clone(m.owned), func(p int) bool { return slices.Contains(set, p) })
				m.owned, m.sets = set, m.sets+1
				m.mu.Unlock()
				// The runners of the partitions that left stop at once.
				for _, p := range gone {
					o.Released(p)
				}
			}
		}
	}()
	w.t.Cleanup(func() { m.stop(w.t) })
	w.mu.Lock()
	w.members = append(w.members, m)
	w.mu.Unlock()
	return m
}

// stop ends a member's Run gracefully.
func (m *leaseMember) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil && !m.crashed {
			t.Errorf("%s: Run: %v", m.name, err)
		}
		m.done <- nil
	case <-time.After(30 * time.Second):
		t.Errorf("%s: Run did not return after its context ended", m.name)
	}
}

// waitSplit waits until the members' owned sets are disjoint, cover every
// partition and have the wanted sizes, each partition Valid for its owner.
func (w *leaseWorld) waitSplit(timeout time.Duration, want map[*leaseMember]int) {
	w.t.Helper()
	natstest.WaitFor(w.t, timeout, func() error {
		seen := map[int]string{}
		for m, n := range want {
			set := m.Owned()
			if len(set) != n {
				return fmt.Errorf("%s owns %v, want %d partitions", m.name, set, n)
			}
			for _, p := range set {
				if o, dup := seen[p]; dup {
					return fmt.Errorf("partition %d owned by %s and %s", p, o, m.name)
				}
				seen[p] = m.name
				if !m.owner.Valid(p) {
					return fmt.Errorf("%s: partition %d not valid yet", m.name, p)
				}
			}
		}
		if len(seen) != w.partitions {
			return fmt.Errorf("%d of %d partitions owned", len(seen), w.partitions)
		}
		return nil
	})
}

// check fails the test when two members owned one partition: in a KV
// revision (a put by another instance without a delete or expiry of the
// previous owner's lease in between) or by Valid at one instant.
func (w *leaseWorld) check() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	owner := map[string]string{}
	puts := 0
	for _, h := range w.history {
		var key, op, val string
		var rev uint64
		if _, err := fmt.Sscanf(h, "%s %s %q rev %d", &key, &op, &val, &rev); err != nil {
			w.t.Fatalf("history %q: %v", h, err)
		}
		if op != jetstream.KeyValuePut.String() {
			owner[key] = ""
			continue
		}
		puts++
		if cur := owner[key]; cur != "" && cur != val {
			w.t.Errorf("two owners: %s held by %s and written by %s at revision %d (history %v)", key, cur, val, rev, w.history)
		}
		owner[key] = val
	}
	if puts == 0 {
		w.t.Error("the history watch saw no lease")
	}
	for _, d := range w.doubles {
		w.t.Error("two valid owners: " + d)
	}
}

// localLeaseWorld runs the members on an in-process server.
func localLeaseWorld(t *testing.T, partitions int) (*leaseWorld, *natstest.Env) {
	env := natstest.Run(t)
	return newLeaseWorld(t, partitions, 1, env.JS, func(name string) (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(env.Server.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}), env
}

// TestLeaseRebalance: one member owns every partition; a second one joins
// and half of them move to it (the first gives them up before the second
// takes them); it leaves and they come back.
func TestLeaseRebalance(t *testing.T) {
	w, _ := localLeaseWorld(t, 8)
	a := w.start("a")
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	b := w.start("b")
	w.waitSplit(takeover, map[*leaseMember]int{a: 4, b: 4})
	if got := b.Owned(); !slices.Equal(got, []int{4, 5, 6, 7}) {
		t.Errorf("b took %v, want the 4 that a gave up: [4 5 6 7]", got)
	}
	if st := a.owner.Stats(); st.HandedOff != 4 || st.Lost != 0 {
		t.Errorf("a: %+v, want 4 handed off, 0 lost", st)
	}
	b.stop(t)
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	w.check()
}

// TestLeaseTakeoverAfterConnectionLoss: a member whose connection dies
// (no goodbye: its leases stay until they expire) loses Valid for every
// partition, and the survivors take its partitions over once its leases
// expire.
func TestLeaseTakeoverAfterConnectionLoss(t *testing.T) {
	w, _ := localLeaseWorld(t, 8)
	a, b := w.start("a"), w.start("b")
	w.waitSplit(takeover, map[*leaseMember]int{a: 4, b: 4})
	victim := b.Owned()
	c := w.start("c")
	natstest.WaitFor(t, takeover, func() error {
		if n := len(a.Owned()) + len(b.Owned()) + len(c.Owned()); n != 8 || len(c.Owned()) == 0 {
			return fmt.Errorf("a %v, b %v, c %v", a.Owned(), b.Owned(), c.Owned())
		}
		return nil
	})
	victim = b.Owned()
	b.crashed = true
	b.nc.Close()
	natstest.WaitFor(t, takeover, func() error {
		for _, p := range victim {
			if b.owner.Valid(p) {
				return fmt.Errorf("the cut-off member still holds partition %d valid", p)
			}
		}
		return nil
	})
	w.waitSplit(takeover, map[*leaseMember]int{a: 4, c: 4})
	w.check()
}

// TestLeaseStaleRenewalRefused: a lease whose key was taken over (its
// expiry simulated by a delete) cannot be renewed by the former owner: the
// CAS on its old revision fails, Valid turns false and it counts a loss;
// the new owner's epoch is larger.
func TestLeaseStaleRenewalRefused(t *testing.T) {
	w, env := localLeaseWorld(t, 1)
	a := w.start("a")
	w.waitSplit(takeover, map[*leaseMember]int{a: 1})
	oldEpoch, ok := a.owner.Epoch(0)
	if !ok {
		t.Fatal("a holds partition 0 without an epoch")
	}
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, events.BucketAuditorLeases)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, auditor.LeaseKey(0))
	if err != nil {
		t.Fatal(err)
	}
	// A stale CAS is refused.
	if _, err := kv.Update(ctx, auditor.LeaseKey(0), []byte("zombie"), e.Revision()-1); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("update on a stale revision: %v, want ErrKeyRevisionMismatch", err)
	}
	// Another owner takes the key between two of a's renewals (its
	// expiry and the new owner's Create collapsed into one write, so that
	// a cannot take the key back in between).
	var newEpoch uint64
	natstest.WaitFor(t, takeover, func() error {
		e, err := kv.Get(ctx, auditor.LeaseKey(0))
		if err != nil {
			return err
		}
		newEpoch, err = kv.Update(ctx, auditor.LeaseKey(0), []byte("usurper"), e.Revision())
		return err
	})
	natstest.WaitFor(t, takeover, func() error {
		if a.owner.Valid(0) || a.owner.Stats().Lost != 1 {
			return fmt.Errorf("a: valid %v, %+v", a.owner.Valid(0), a.owner.Stats())
		}
		return nil
	})
	if newEpoch <= oldEpoch {
		t.Errorf("new epoch %d, old %d: want it larger", newEpoch, oldEpoch)
	}
	if got, err := kv.Get(ctx, auditor.LeaseKey(0)); err != nil || string(got.Value()) != "usurper" {
		t.Fatalf("the former owner overwrote the new one: %v %v", got, err)
	}
}

// TestLeaseHeartbeatReplyLost: a heartbeat the server applied but whose
// reply never arrived (a timeout while the cluster settles) leaves the
// member's revision behind the key. Simulated by writing the member's own
// value at a later revision, as the server does with such a request. The
// member carries on from that revision: its heartbeat never expires (the
// others' targets never shrink) and it keeps every lease.
func TestLeaseHeartbeatReplyLost(t *testing.T) {
	w, env := localLeaseWorld(t, 4)
	a := w.start("a")
	w.waitSplit(takeover, map[*leaseMember]int{a: 4})
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, events.BucketAuditorLeases)
	if err != nil {
		t.Fatal(err)
	}
	key := auditor.MemberKey("a")
	watch, err := kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	var mu sync.Mutex
	var gone []string
	go func() {
		for e := range watch.Updates() {
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				mu.Lock()
				gone = append(gone, fmt.Sprintf("%s at revision %d", e.Operation(), e.Revision()))
				mu.Unlock()
			}
		}
	}()
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, key, e.Value(), e.Revision()); err != nil {
		t.Fatal(err)
	}
	// Three TTLs: a heartbeat left behind expires after one.
	time.Sleep(3 * leaseTTL)
	mu.Lock()
	defer mu.Unlock()
	if len(gone) > 0 {
		t.Errorf("the member's heartbeat left the bucket: %v", gone)
	}
	if got := a.Owned(); len(got) != 4 {
		t.Errorf("a owns %v, want all 4", got)
	}
	if st := a.owner.Stats(); st.Lost != 0 {
		t.Errorf("a: %+v, want no lease lost", st)
	}
	w.check()
}

// TestLeaseOptions: malformed options and a bucket made with another TTL
// are refused with a clear error.
func TestLeaseOptions(t *testing.T) {
	env := natstest.Run(t)
	tests := []struct {
		name string
		o    auditor.LeaseOptions
		want string
	}{
		{"no JetStream", auditor.LeaseOptions{Instance: "a"}, "no JetStream"},
		{"short TTL", auditor.LeaseOptions{JS: env.JS, Instance: "a", TTL: 500 * time.Millisecond}, "at least 1s"},
		{"fractional TTL", auditor.LeaseOptions{JS: env.JS, Instance: "a", TTL: 1500 * time.Millisecond}, "whole seconds"},
		{"bad instance", auditor.LeaseOptions{JS: env.JS, Instance: "a.b"}, `instance "a.b"`},
		{"replicas", auditor.LeaseOptions{JS: env.JS, Instance: "a", Replicas: 7}, "replicas 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auditor.NewLeaseOwner(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	o, err := auditor.NewLeaseOwner(auditor.LeaseOptions{JS: env.JS, Instance: "a", TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []int{0, auditor.MaxPartitions + 1} {
		if err := o.Run(ctx, p, make(chan []int, 1)); err == nil || !strings.Contains(err.Error(), "partitions") {
			t.Errorf("Run with %d partitions: %v, want an error", p, err)
		}
	}
	if _, err := auditor.OpenLeaseBucket(ctx, env.JS, leaseTTL, 1); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(ctx, 8, make(chan []int, 1)); !errors.Is(err, auditor.ErrLeaseBucket) {
		t.Errorf("Run on a bucket with another TTL: %v, want ErrLeaseBucket", err)
	}
}

// TestLeaseClusterNodeLoss runs the leases on a three-node cluster of
// nats-server processes (bucket R3): members join and rebalance; the node
// one member is connected to (and only that one) is killed with SIGKILL,
// which cuts the member off; the others take its partitions over once its
// leases expire; the last but one leaves and the last one owns every
// partition; a stale compare-and-set is refused; and at no revision did
// two members own a partition.
func TestLeaseClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes")
	}
	c := natscluster.Start(t, natscluster.Options{})
	_, admin := c.Connect(t)
	w := newLeaseWorld(t, 8, 3, admin, func(name string) (*nats.Conn, jetstream.JetStream) {
		i := map[string]int{"a": 0, "b": 1, "c": 2}[name]
		// The victim reaches its node only, so that killing it cuts the
		// member off.
		url := strings.Join(c.URLsFrom(i), ",")
		opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.DontRandomize()}
		if name == "b" {
			url = c.Nodes[i].URL()
			opts = append(opts, nats.IgnoreDiscoveredServers())
		}
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	})
	a := w.start("a")
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	b := w.start("b")
	w.waitSplit(takeover, map[*leaseMember]int{a: 4, b: 4})
	cm := w.start("c")
	natstest.WaitFor(t, takeover, func() error {
		if len(cm.Owned()) == 0 || len(a.Owned())+len(b.Owned())+len(cm.Owned()) != 8 {
			return fmt.Errorf("a %v, b %v, c %v", a.Owned(), b.Owned(), cm.Owned())
		}
		return nil
	})
	victim := b.Owned()
	c.Kill(1)
	natstest.WaitFor(t, takeover, func() error {
		for _, p := range victim {
			if b.owner.Valid(p) {
				return fmt.Errorf("the cut-off member still holds partition %d valid", p)
			}
		}
		return nil
	})
	w.waitSplit(2*takeover, map[*leaseMember]int{a: 4, cm: 4})
	// A member leaves: its partitions come back to the last one.
	cm.stop(t)
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	// A stale compare-and-set is refused on the replicated bucket too.
	ctx := context.Background()
	kv, err := admin.KeyValue(ctx, events.BucketAuditorLeases)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, auditor.LeaseKey(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, auditor.LeaseKey(0), []byte("zombie"), e.Revision()-1); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("update on a stale revision: %v, want ErrKeyRevisionMismatch", err)
	}
	if _, err := kv.Create(ctx, auditor.LeaseKey(0), []byte("zombie")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("create of a held lease: %v, want ErrKeyExists", err)
	}
	w.check()
}

// TestLeaseAndStatePermissions: with the auditor role's credentials on a
// server that enforces them, the lease owner creates its bucket, acquires
// and renews, and the partition state creates its bucket and object store
// and saves and loads, without a permission violation; another role
// cannot touch the leases.
func TestLeaseAndStatePermissions(t *testing.T) {
	sec := natstest.RunSecured(t)
	_, js := sec.Connect(t, natsauth.RoleAuditor)
	o, err := auditor.NewLeaseOwner(auditor.LeaseOptions{JS: js, Instance: "perm", TTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, 2, make(chan []int, 8)) }()
	natstest.WaitFor(t, takeover, func() error {
		if !o.Valid(0) || !o.Valid(1) || o.Stats().Acquired != 2 {
			return fmt.Errorf("not both partitions yet (%+v)", o.Stats())
		}
		return nil
	})
	s, err := auditor.OpenJSState(context.Background(), auditor.JSStateOptions{JS: js, Fence: o, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Several MiB: many chunks, read with flow control.
	big := bytes.Repeat([]byte("checkpoint "), 400_000)
	for i := range 3 {
		if err := s.SaveCheckpoint(context.Background(), 0, append(big, byte('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.LoadCheckpoint(context.Background(), 0); err != nil || !bytes.Equal(got, append(big, '2')) {
		t.Fatalf("load: %d bytes, %v", len(got), err)
	}
	if err := s.SaveIntent(context.Background(), 1, 1, 9); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := s.LoadIntent(context.Background(), 1); err != nil || !ok {
		t.Fatalf("load intent: %v %v", ok, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A denied request goes unanswered: the issuer's attempt ends with its
	// context.
	_, ijs := sec.Connect(t, natsauth.RoleIssuer)
	ictx, icancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer icancel()
	if kv, err := ijs.KeyValue(ictx, events.BucketAuditorLeases); err == nil {
		if _, err := kv.Put(ictx, auditor.LeaseKey(0), []byte("issuer")); err == nil {
			t.Error("the issuer wrote a lease")
		}
	}
	var own []string
	for _, v := range sec.Violations() {
		if strings.HasPrefix(v, string(natsauth.RoleAuditor)) {
			own = append(own, v)
		}
	}
	if len(own) != 0 {
		t.Fatalf("auditor permission violations: %v", own)
	}
}

// envLeaseHelper makes TestLeaseHelperProcess a lease owner process: the
// NATS URL, the instance name and the partition count, space-separated.
const envLeaseHelper = "CORDON_LEASE_HELPER"

// TestLeaseHelperProcess is the body of the lease owner process that
// TestLeaseOwnerProcessKilled kills; it does nothing in a normal run.
func TestLeaseHelperProcess(t *testing.T) {
	spec := os.Getenv(envLeaseHelper)
	if spec == "" {
		t.Skip("the body of a lease owner process (TestLeaseOwnerProcessKilled)")
	}
	var url, name string
	var partitions int
	if _, err := fmt.Sscan(spec, &url, &name, &partitions); err != nil {
		t.Fatalf("$%s=%q: %v", envLeaseHelper, spec, err)
	}
	nc, err := nats.Connect(url, nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := auditor.NewLeaseOwner(auditor.LeaseOptions{JS: js, Instance: name, TTL: leaseTTL, Log: zerolog.New(os.Stderr)})
	if err != nil {
		t.Fatal(err)
	}
	owned := make(chan []int)
	go func() {
		var cur []int
		for set := range owned {
			for _, p := range cur {
				if !slices.Contains(set, p) {
					o.Released(p)
				}
			}
			cur = set
		}
	}()
	// Runs until the parent kills the process.
	if err := o.Run(context.Background(), partitions, owned); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseOwnerProcessKilled: a lease owner in another process is killed
// with SIGKILL while it holds half the partitions (no goodbye, its
// connection reset); the member in this process takes them over once the
// victim's leases expire, and at no revision did two owners hold one.
func TestLeaseOwnerProcessKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a lease owner process")
	}
	w, env := localLeaseWorld(t, 8)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a := w.start("a")
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	cmd := exec.Command(exe, "-test.run=^TestLeaseHelperProcess$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s child 8", envLeaseHelper, env.Server.ClientURL()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("lease owner process:\n%s", stderr.String())
		}
	})
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, events.BucketAuditorLeases)
	if err != nil {
		t.Fatal(err)
	}
	childHolds := func() ([]int, error) {
		var held []int
		for p := range 8 {
			e, err := kv.Get(ctx, auditor.LeaseKey(p))
			if err == nil && string(e.Value()) == "child" {
				held = append(held, p)
			}
		}
		return held, nil
	}
	natstest.WaitFor(t, takeover, func() error {
		held, _ := childHolds()
		if len(held) != 4 || len(a.Owned()) != 4 {
			return fmt.Errorf("child holds %v, a owns %v", held, a.Owned())
		}
		return nil
	})
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil
	w.waitSplit(takeover, map[*leaseMember]int{a: 8})
	t.Logf("takeover %v after the SIGKILL (lease TTL %v)", time.Since(killed).Round(time.Millisecond), leaseTTL)
	if held, _ := childHolds(); len(held) != 0 {
		t.Fatalf("the killed process still holds %v", held)
	}
	w.check()
}
