package natscluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
)

// acked records what JetStream acknowledged.
type acked struct {
	mu    sync.Mutex
	usage map[string]bool   // usage event ids
	deny  map[string]string // denylist key -> value
}

func (a *acked) counts() (int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.usage), len(a.deny)
}

// TestAcknowledgedWritesSurviveNodeCrash publishes usage events and
// denylist entries, with acknowledgements, to a three-node cluster whose
// streams are replicated three ways; kills the node that leads USAGE (and
// that the client is connected to) with SIGKILL while writing; keeps
// writing through the outage; restarts the node on its data directory;
// and then requires every acknowledged write to be present — in the
// stream and in each node's own replica.
func TestAcknowledgedWritesSurviveNodeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process nats-server cluster; skipped with -short")
	}
	start := time.Now()
	c := natscluster.Start(t, natscluster.Options{})
	t.Logf("cluster up with replicated streams in %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	_, admin := c.Connect(t)
	usage, err := admin.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	info, err := usage.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("USAGE: %d replicas configured, cluster %+v; want 3", info.Config.Replicas, info.Cluster)
	}
	victim := c.NodeIndex(info.Cluster.Leader)
	if victim < 0 {
		t.Fatalf("USAGE leader %q is not a node", info.Cluster.Leader)
	}

	var reconnects atomic.Int32
	nc, js := c.ConnectTo(t, victim, nats.ReconnectHandler(func(*nats.Conn) { reconnects.Add(1) }))
	deny, err := js.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}

	a := &acked{usage: map[string]bool{}, deny: map[string]string{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var usageRetries, denyRetries atomic.Int64
	wg.Add(2)
	go func() { // usage events, each retried with its id until acknowledged
		defer wg.Done()
		for i := 0; ; i++ {
			env, err := events.New("test", time.Now(), &events.UsageDecided{
				TokenID: fmt.Sprintf("tok-%d", i), Tenant: "acme", Enforcer: "edge-1", Service: "invoices",
				SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices", Decision: events.DecisionAllow, Reason: "ok",
			})
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := events.Encode(env)
			for {
				select {
				case <-stop:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, events.Subject(env), b, jetstream.WithMsgID(env.MsgID()))
				pcancel()
				if err == nil {
					a.mu.Lock()
					a.usage[env.MsgID()] = true
					a.mu.Unlock()
					break
				}
				usageRetries.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	go func() { // denylist entries, each retried until acknowledged
		defer wg.Done()
		for i := 0; ; i++ {
			key, val := fmt.Sprintf("tok.t%05d", i), strconv.Itoa(i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := deny.Put(pctx, key, []byte(val))
				pcancel()
				if err == nil {
					a.mu.Lock()
					a.deny[key] = val
					a.mu.Unlock()
					break
				}
				denyRetries.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer halt()
	progress := func(du, dd int) {
		t.Helper()
		u0, d0 := a.counts()
		natscluster.WaitFor(t, 30*time.Second, func() error {
			u, d := a.counts()
			if u < u0+du || d < d0+dd {
				return fmt.Errorf("acknowledged %d usage events and %d denylist entries, want %d and %d", u, d, u0+du, d0+dd)
			}
			return nil
		})
	}

	progress(200, 50)
	u0, d0 := a.counts()
	t.Logf("killing %s (USAGE leader, client's server) after %d usage events and %d denylist entries", c.Nodes[victim].Name, u0, d0)
	c.Kill(victim)
	killed := time.Now()
	progress(200, 50) // writes go on through the outage
	t.Logf("writing again %v after the crash; client now on %s", time.Since(killed).Round(time.Millisecond), nc.ConnectedServerName())
	if reconnects.Load() == 0 || nc.ConnectedServerName() == c.Nodes[victim].Name {
		t.Fatalf("client did not move to a surviving node (reconnects %d, on %s)", reconnects.Load(), nc.ConnectedServerName())
	}

	c.Restart(victim)
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted and healthy %v after the crash", c.Nodes[victim].Name, time.Since(killed).Round(time.Millisecond))
	progress(100, 20)
	halt()
	u, d := a.counts()
	t.Logf("acknowledged: %d usage events, %d denylist entries (%d and %d retries)", u, d, usageRetries.Load(), denyRetries.Load())

	// Every acknowledged usage event is in the stream.
	stored := map[string]int{}
	info, err = usage.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := usage.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// Right after a crash the stream may still be settling its leader:
	// "no responders" and timeouts are retried until the deadline.
	transient := func(err error) bool {
		return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded)
	}
	readDeadline := time.Now().Add(60 * time.Second)
	for n := uint64(0); n < info.State.Msgs; {
		if time.Now().After(readDeadline) {
			t.Fatalf("read %d of %d usage messages within 60s", n, info.State.Msgs)
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if transient(err) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			stored[m.Headers().Get(jetstream.MsgIDHeader)]++
			n++
		}
		if err := batch.Error(); err != nil && !transient(err) {
			t.Fatal(err)
		}
	}
	lost := 0
	for id := range a.usage {
		if stored[id] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged usage events are missing", lost, len(a.usage))
	}
	dups := 0
	for _, n := range stored {
		dups += n - 1
	}
	t.Logf("USAGE holds %d messages, %d distinct ids (%d duplicates)", info.State.Msgs, len(stored), dups)

	// Every acknowledged denylist entry reads back with its value.
	for key, want := range a.deny {
		e, err := deny.Get(ctx, key)
		for try := 0; err != nil && transient(err) && try < 100; try++ {
			time.Sleep(100 * time.Millisecond)
			e, err = deny.Get(ctx, key)
		}
		if err != nil {
			t.Errorf("denylist %s: %v", key, err)
			continue
		}
		if string(e.Value()) != want {
			t.Errorf("denylist %s = %q, want %q", key, e.Value(), want)
		}
	}

	// Each node's own replica, the crashed one included, caught up.
	for _, stream := range []string{events.StreamUsage, "KV_" + events.BucketDenylist} {
		st, err := admin.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		si, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			natscluster.WaitFor(t, 20*time.Second, func() error {
				rs, err := c.StreamState(n, stream)
				if err != nil {
					return err
				}
				if rs.Msgs != si.State.Msgs || rs.LastSeq != si.State.LastSeq {
					return fmt.Errorf("%s replica of %s: %d messages up to %d, stream has %d up to %d",
						n.Name, stream, rs.Msgs, rs.LastSeq, si.State.Msgs, si.State.LastSeq)
				}
				return nil
			})
		}
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// TestHelpers covers the helper's own contract: a killed node is reported
// down, a restart brings it back at the same address, StopAll is safe
// twice.
func TestHelpers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process nats-server cluster; skipped with -short")
	}
	c := natscluster.Start(t, natscluster.Options{NoStreams: true})
	if _, err := c.WaitMetaLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.Kill(2)
	if c.Nodes[2].Running() {
		t.Fatal("killed node reported running")
	}
	if err := c.Healthy(c.Nodes[2]); !errors.Is(err, natscluster.ErrNotRunning) {
		t.Fatalf("healthy(killed): %v, want ErrNotRunning", err)
	}
	if _, err := c.WaitMetaLeader(20 * time.Second); err != nil {
		t.Fatalf("two of three nodes keep a meta leader: %v", err)
	}
	c.Restart(2)
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.Nodes[2].URL())
	if err != nil {
		t.Fatalf("restarted node at its old address: %v", err)
	}
	nc.Close()
	c.StopAll()
	c.StopAll()
	for _, n := range c.Nodes {
		if n.Running() {
			t.Errorf("%s still running after StopAll", n.Name)
		}
	}
}

// TestClusterWithCordonCredentials runs the cluster the way deploy/compose
// does — every node including the generated auth.conf — and checks that
// the admin can create the replicated streams, an enforcer can publish
// usage and read the denylist, and cannot write the ledger.
func TestClusterWithCordonCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process nats-server cluster; skipped with -short")
	}
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	c := natscluster.Start(t, natscluster.Options{
		AuthConf:      natsauth.AuthConfPath(dir),
		ClientOptions: []nats.Option{natsauth.ConnectOption(natsauth.SeedFile(dir, natsauth.RoleAdmin))},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := nats.Connect(c.URLs()[0], nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v, want authorization violation", err)
	}
	violations := make(chan string, 8)
	_, enf := c.Connect(t, natsauth.ConnectOption(natsauth.EnforcerSeedFile(dir, "edge-1")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations <- err.Error()
			}
		}))
	if _, err := enf.Publish(ctx, events.UsageSubject("acme", "edge-1"), []byte(`{}`)); err != nil {
		t.Fatalf("enforcer publishes usage: %v", err)
	}
	kv, err := enf.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("enforcer watches the denylist: %v", err)
	}
	defer w.Stop()
	select {
	case e := <-w.Updates():
		if e != nil {
			t.Fatalf("empty denylist sent %q", e.Key())
		}
	case <-ctx.Done():
		t.Fatal("denylist watch: no initial marker")
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err = enf.Publish(pctx, "cordon.token.revoked.acme.t1", []byte(`{}`))
	pcancel()
	if err == nil {
		t.Fatal("enforcer published a revocation")
	}
	select {
	case v := <-violations:
		if !strings.Contains(v, "cordon.token.revoked.acme.t1") {
			t.Fatalf("unexpected violation %s", v)
		}
	case <-ctx.Done():
		t.Fatal("no permission violation reported for the revocation")
	}
}
