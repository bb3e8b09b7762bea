package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
)

// Each role test performs what the service does — the same jetstream
// calls — and requires the server to accept all of it (no permission
// violation at all), then tries what the role must not do and requires
// the server to refuse it and the effect to be absent.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// publishAck publishes with a message id and waits for the stream's ack.
func publishAck(ctx context.Context, c *client, subject string) error {
	_, err := c.js.Publish(ctx, subject, []byte(`{"test":true}`), jetstream.WithMsgID(subject+"-"+nats.NewInbox()))
	return err
}

// serve answers subject in a queue group (as the services do) and counts
// the requests it got.
func (c *client) serve(t *testing.T, subject string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := c.nc.QueueSubscribe(subject, "cordon-test", func(m *nats.Msg) {
		n.Add(1)
		_ = m.Respond([]byte(`{"ok":true}`))
	})
	if err != nil {
		t.Fatalf("%s: subscribe %s: %v", c.role, subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// request sends a request and requires a reply.
func (c *client) request(t *testing.T, subject string) {
	t.Helper()
	m, err := c.nc.Request(subject, []byte(`{}`), 5*time.Second)
	if err != nil {
		t.Fatalf("%s: request %s: %v", c.role, subject, err)
	}
	if !strings.Contains(string(m.Data), "ok") {
		t.Fatalf("%s: request %s: reply %q", c.role, subject, m.Data)
	}
}

// watchAll watches a bucket until the initial values are delivered and
// returns how many there were and the watcher (still live).
func watchAll(ctx context.Context, t *testing.T, c *client, bucket string) (int, jetstream.KeyWatcher) {
	t.Helper()
	kv, err := c.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("%s: open %s: %v", c.role, bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("%s: watch %s: %v", c.role, bucket, err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	n := 0
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return n, w
			}
			n++
		case <-ctx.Done():
			t.Fatalf("%s: watch %s: initial values not delivered (%d so far): %v", c.role, bucket, n, ctx.Err())
		}
	}
}

// next waits for the next live update of a watcher.
func next(ctx context.Context, t *testing.T, w jetstream.KeyWatcher) jetstream.KeyValueEntry {
	t.Helper()
	select {
	case e := <-w.Updates():
		if e == nil {
			t.Fatal("watch: unexpected end of initial values")
		}
		return e
	case <-ctx.Done():
		t.Fatalf("watch: no update: %v", ctx.Err())
	}
	return nil
}

// openKV opens a bucket or fails the test.
func openKV(ctx context.Context, t *testing.T, c *client, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := c.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("%s: open bucket %s: %v", c.role, bucket, err)
	}
	return kv
}

// fillDenylist has the revoker write n entries of size bytes, enough for
// a watch replay to need flow control.
func fillDenylist(ctx context.Context, t *testing.T, rev *client, n, size int) {
	t.Helper()
	kv, err := rev.js.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	val := []byte(strings.Repeat("x", size))
	for i := range n {
		if _, err := kv.Put(ctx, fmt.Sprintf("tok.fill%04d", i), val); err != nil {
			t.Fatalf("revoker put: %v", err)
		}
	}
}

func TestEnforcerPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ack_fc_v2=%v", v2), func(t *testing.T) {
			testEnforcer(t, setup{ensure: true, ackV2: v2})
		})
	}
}

func testEnforcer(t *testing.T, o setup) {
	f := secured(t, o)
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	rev := f.connect(t, natsauth.RoleRevoker)
	iss := f.connect(t, natsauth.RoleIssuer)
	enf := f.connectEnforcer(t, edge1)

	// 700 entries of 4 KB: the watch replay exceeds the consumer's
	// flow-control window, so the enforcer must answer $JS.FC.
	fillDenylist(ctx, t, rev, 700, 4000)
	keys, err := iss.js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, "k1", []byte(`{"public_key":"x"}`)); err != nil {
		t.Fatalf("issuer puts key: %v", err)
	}

	t.Run("allowed", func(t *testing.T) {
		t.Run("publish usage", func(t *testing.T) {
			fut, err := enf.js.PublishAsync(events.UsageSubject("acme", "edge-1"), []byte(`{}`), jetstream.WithMsgID("u1"))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-fut.Ok():
			case err := <-fut.Err():
				t.Fatalf("usage ack: %v", err)
			case <-ctx.Done():
				t.Fatal("usage ack: timeout")
			}
			if n := count(t, admin, events.StreamUsage, "cordon.usage.acme.edge-1"); n != 1 {
				t.Fatalf("usage events stored: %d, want 1", n)
			}
		})
		t.Run("watch denylist", func(t *testing.T) {
			n, w := watchAll(ctx, t, enf, events.BucketDenylist)
			if n != 700 {
				t.Fatalf("initial denylist entries: %d, want 700", n)
			}
			kv := openKV(ctx, t, rev, events.BucketDenylist)
			if _, err := kv.Create(ctx, "tok.live", []byte(`{}`), jetstream.KeyTTL(time.Hour)); err != nil {
				t.Fatalf("revoker creates entry: %v", err)
			}
			if e := next(ctx, t, w); e.Key() != "tok.live" {
				t.Fatalf("live update %q, want tok.live", e.Key())
			}
		})
		t.Run("get denylist entry and probe its revision", func(t *testing.T) {
			kv, err := enf.js.KeyValue(ctx, events.BucketDenylist)
			if err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, "tok.live")
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			st, err := enf.js.Stream(ctx, "KV_"+events.BucketDenylist)
			if err != nil {
				t.Fatal(err)
			}
			m, err := st.GetLastMsgForSubject(ctx, "$KV."+events.BucketDenylist+".>")
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if m.Sequence != e.Revision() {
				t.Fatalf("probe says revision %d, last entry has %d", m.Sequence, e.Revision())
			}
		})
		t.Run("watch keys", func(t *testing.T) {
			n, w := watchAll(ctx, t, enf, events.BucketKeys)
			if n != 1 {
				t.Fatalf("initial keys: %d, want 1", n)
			}
			if _, err := keys.Put(ctx, "k2", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if e := next(ctx, t, w); e.Key() != "k2" {
				t.Fatalf("live key %q, want k2", e.Key())
			}
		})
		enf.noViolations(t)
	})

	t.Run("refused", func(t *testing.T) {
		// Each enforcer reports usage only as itself: edge-1's credential
		// cannot publish in edge-2's name, in any tenant, nor on a subject
		// that merely starts with its own id.
		for _, subj := range []string{
			events.UsageSubject("acme", edge2), events.UsageSubject("_", edge2), events.UsageSubject("acme", "edge-1x"),
			events.UsageSubject("acme", edge1) + ".x.y", "cordon.usage." + edge1,
			events.UsageBatchSubject("acme", edge2, "billing"), "cordon.usage.part.3.acme." + edge1 + ".billing",
		} {
			t.Run("publish usage on "+subj, func(t *testing.T) {
				enf.refused(t, "Publish", subj, func(ctx context.Context) error { return publishAck(ctx, enf, subj) })
				if n := count(t, admin, events.StreamUsage, subj); n != 0 {
					t.Fatalf("forged usage stored on %s: %d", subj, n)
				}
			})
		}
		revoked := "cordon.token.revoked.acme.0190f5a2-0000-7000-8000-000000000001"
		issued := "cordon.token.issued.acme.0190f5a2-0000-7000-8000-000000000002"
		t.Run("publish a revocation", func(t *testing.T) {
			enf.refused(t, "Publish", revoked, func(ctx context.Context) error { return publishAck(ctx, enf, revoked) })
			if n := count(t, admin, events.StreamTokens, revoked); n != 0 {
				t.Fatalf("forged revocation stored: %d", n)
			}
		})
		t.Run("publish an issuance", func(t *testing.T) {
			enf.refused(t, "Publish", issued, func(ctx context.Context) error { return publishAck(ctx, enf, issued) })
			if n := count(t, admin, events.StreamTokens, issued); n != 0 {
				t.Fatalf("forged issuance stored: %d", n)
			}
		})
		t.Run("put a denylist entry", func(t *testing.T) {
			kv, err := enf.js.KeyValue(ctx, events.BucketDenylist)
			if err != nil {
				t.Fatal(err)
			}
			enf.refused(t, "Publish", "$KV.denylist.tok.forged", func(ctx context.Context) error {
				_, err := kv.Put(ctx, "tok.forged", []byte(`{}`))
				return err
			})
			rkv := openKV(ctx, t, rev, events.BucketDenylist)
			if _, err := rkv.Get(ctx, "tok.forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("forged denylist entry: get says %v, want not found", err)
			}
		})
		t.Run("delete a denylist entry", func(t *testing.T) {
			kv := openKV(ctx, t, enf, events.BucketDenylist)
			enf.refused(t, "Publish", "$KV.denylist.tok.live", func(ctx context.Context) error { return kv.Delete(ctx, "tok.live") })
		})
		t.Run("put a signing key", func(t *testing.T) {
			kv := openKV(ctx, t, enf, events.BucketKeys)
			enf.refused(t, "Publish", "$KV.keys.evil", func(ctx context.Context) error {
				_, err := kv.Put(ctx, "evil", []byte(`{}`))
				return err
			})
		})
		t.Run("send cordon.cmd.revoke", func(t *testing.T) {
			got := rev.serve(t, events.SubjectCmdRevoke)
			enf.refused(t, "Publish", events.SubjectCmdRevoke, func(ctx context.Context) error {
				_, err := enf.nc.RequestWithContext(ctx, events.SubjectCmdRevoke, []byte(`{}`))
				return err
			})
			admin.request(t, events.SubjectCmdRevoke) // the responder is live
			if n := got.Load(); n != 1 {
				t.Fatalf("revoker got %d requests, want only the admin's", n)
			}
		})
		t.Run("read other usage", func(t *testing.T) {
			subj := "$JS.API.CONSUMER.CREATE.USAGE.spy.cordon.usage.>"
			enf.refused(t, "Publish", subj, func(ctx context.Context) error {
				_, err := enf.js.CreateOrUpdateConsumer(ctx, events.StreamUsage, jetstream.ConsumerConfig{Durable: "spy", FilterSubject: "cordon.usage.>"})
				return err
			})
		})
		t.Run("delete a stream", func(t *testing.T) {
			enf.refused(t, "Publish", "$JS.API.STREAM.DELETE.KV_denylist", func(ctx context.Context) error {
				return enf.js.DeleteKeyValue(ctx, events.BucketDenylist)
			})
		})
		t.Run("read the ledger", func(t *testing.T) {
			enf.refused(t, "Publish", "$JS.API.CONSUMER.CREATE.TOKENS.spy.cordon.token.>", func(ctx context.Context) error {
				_, err := enf.js.CreateOrUpdateConsumer(ctx, events.StreamTokens, jetstream.ConsumerConfig{Durable: "spy", FilterSubject: "cordon.token.>"})
				return err
			})
		})
		t.Run("purge usage", func(t *testing.T) {
			enf.refused(t, "Publish", "$JS.API.STREAM.PURGE.USAGE", func(ctx context.Context) error {
				_, err := enf.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.USAGE", nil)
				return err
			})
			if n := count(t, admin, events.StreamUsage, events.UsageSubject("acme", edge1)); n != 1 {
				t.Fatalf("usage after a refused purge: %d events, want 1", n)
			}
		})
		for _, subj := range []string{"_INBOX.>", "cordon.token.>", "cordon.cmd.revoke", "cordon.cmd.sql", "cordon.cmd.>", "cordon.usage.>",
			natsauth.InboxPrefix(pub(t, f, natsauth.RoleAdmin)) + ".>"} {
			t.Run("subscribe "+subj, func(t *testing.T) {
				enf.refused(t, "Subscription", subj, func(ctx context.Context) error {
					sub, err := enf.nc.SubscribeSync(subj)
					if err != nil {
						return err
					}
					defer sub.Unsubscribe()
					_, err = sub.NextMsgWithContext(ctx)
					return err
				})
			})
		}
	})
}

// pub is the public key of role in the fixture.
func pub(t *testing.T, f *fixture, r natsauth.Role) string {
	t.Helper()
	p, err := natsauth.PublicKeyOf(natsauth.SeedFile(f.dir, r))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIssuerPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{ensure: true})
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	iss := f.connect(t, natsauth.RoleIssuer)

	t.Run("allowed", func(t *testing.T) {
		ledger := []string{
			"cordon.token.issued.acme.t1", "cordon.token.rotated.acme.t1", "cordon.token.revoked.acme.t1",
			"cordon.token.expired.acme.t2", "cordon.key.published.k1", "cordon.key.retired.k0", events.SubjectPolicyChanged,
		}
		for _, s := range ledger {
			if _, err := iss.js.Publish(ctx, s, []byte(`{}`), jetstream.WithMsgID(s), jetstream.WithExpectStream(events.StreamTokens)); err != nil {
				t.Fatalf("issuer publishes %s: %v", s, err)
			}
		}
		// The registry follows the whole ledger with an ordered consumer.
		st, err := iss.js.Stream(ctx, events.StreamTokens)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("ordered consumer: %v", err)
		}
		var seen atomic.Uint64
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if md, err := m.Metadata(); err == nil {
				seen.Store(md.Sequence.Stream)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Stop()
		natstest.WaitFor(t, 10*time.Second, func() error {
			if seen.Load() < info.State.LastSeq || info.State.LastSeq != uint64(len(ledger)) {
				return fmt.Errorf("registry at %d of %d", seen.Load(), info.State.LastSeq)
			}
			return nil
		})
		// Signing keys: put, get, delete, watch.
		kv, err := iss.js.KeyValue(ctx, events.BucketKeys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "k1", []byte(`{}`)); err != nil {
			t.Fatalf("put key: %v", err)
		}
		if _, err := kv.Get(ctx, "k1"); err != nil {
			t.Fatalf("get key: %v", err)
		}
		if err := kv.Delete(ctx, "k0"); err != nil {
			t.Fatalf("delete key: %v", err)
		}
		if n, _ := watchAll(ctx, t, iss, events.BucketKeys); n != 2 {
			t.Fatalf("watched %d key entries, want 2 (k1, deleted k0)", n)
		}
		for _, s := range []string{events.SubjectCmdIssue, events.SubjectCmdRotate, events.SubjectCmdList, events.SubjectCmdInspect} {
			iss.serve(t, s)
			admin.request(t, s)
		}
		iss.noViolations(t)
	})

	t.Run("refused", func(t *testing.T) {
		t.Run("put a denylist entry", func(t *testing.T) {
			iss.refused(t, "Publish", "$KV.denylist.tok.x", func(ctx context.Context) error { return publishAck(ctx, iss, "$KV.denylist.tok.x") })
		})
		t.Run("publish usage", func(t *testing.T) {
			s := events.UsageSubject("acme", "forged")
			iss.refused(t, "Publish", s, func(ctx context.Context) error { return publishAck(ctx, iss, s) })
		})
		t.Run("take revocation requests", func(t *testing.T) {
			iss.refused(t, "Subscription", events.SubjectCmdRevoke, func(ctx context.Context) error {
				sub, err := iss.nc.QueueSubscribeSync(events.SubjectCmdRevoke, "cordon-revoker")
				if err != nil {
					return err
				}
				defer sub.Unsubscribe()
				_, err = sub.NextMsgWithContext(ctx)
				return err
			})
		})
		t.Run("delete the ledger", func(t *testing.T) {
			iss.refused(t, "Publish", "$JS.API.STREAM.DELETE.TOKENS", func(ctx context.Context) error {
				return iss.js.DeleteStream(ctx, events.StreamTokens)
			})
		})
		for _, d := range []string{events.RevokerTokensDurable(events.DurableRevoker).Name, events.AuditorLedgerDurable(events.DurableAuditor).Name} {
			t.Run("delete durable "+d, func(t *testing.T) {
				subj := "$JS.API.CONSUMER.DELETE.TOKENS." + d
				iss.refused(t, "Publish", subj, func(ctx context.Context) error {
					_, err := iss.nc.RequestWithContext(ctx, subj, nil)
					return err
				})
			})
		}
	})
}

func TestRevokerPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{ensure: true})
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	iss := f.connect(t, natsauth.RoleIssuer)
	aud := f.connect(t, natsauth.RoleAuditor)
	rev := f.connect(t, natsauth.RoleRevoker)

	for _, s := range []string{"cordon.token.issued.acme.t1", "cordon.token.issued.acme.t2"} {
		if err := publishAck(ctx, iss, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := publishAck(ctx, aud, "cordon.anomaly.high.acme.t1"); err != nil {
		t.Fatal(err)
	}
	keys := openKV(ctx, t, iss, events.BucketKeys)
	if _, err := keys.Put(ctx, "k1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	t.Run("allowed", func(t *testing.T) {
		// Signing keys mirrored from the keys bucket.
		if n, _ := watchAll(ctx, t, rev, events.BucketKeys); n != 1 {
			t.Fatalf("keys: %d, want 1", n)
		}
		// The token index: an ordered consumer from a start time, and the
		// ledger's last message to know when the replay is done.
		from := time.Now().Add(-time.Hour)
		idx, err := rev.js.OrderedConsumer(ctx, events.StreamTokens, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.SubjectTokenPrefix + ">"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
		})
		if err != nil {
			t.Fatalf("index consumer: %v", err)
		}
		var indexed atomic.Int64
		icc, err := idx.Consume(func(jetstream.Msg) { indexed.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		defer icc.Stop()
		st, err := rev.js.Stream(ctx, events.StreamTokens)
		if err != nil {
			t.Fatal(err)
		}
		last, err := st.GetLastMsgForSubject(ctx, events.SubjectTokenPrefix+">")
		if err != nil {
			t.Fatalf("last ledger message: %v", err)
		}
		if last.Sequence != 2 {
			t.Fatalf("last ledger sequence %d, want 2", last.Sequence)
		}
		// Durable consumers, explicitly acknowledged.
		for _, d := range []struct{ stream, name, filter string }{
			{events.StreamTokens, events.RevokerTokensDurable(events.DurableRevoker).Name, events.SubjectTokenPrefix + ">"},
			{events.StreamAnomalies, events.RevokerAnomaliesDurable(events.DurableRevoker).Name, events.SubjectAnomalyPrefix + ">"},
		} {
			c, err := rev.js.CreateOrUpdateConsumer(ctx, d.stream, jetstream.ConsumerConfig{
				Durable: d.name, FilterSubject: d.filter, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			})
			if err != nil {
				t.Fatalf("durable %s: %v", d.name, err)
			}
			cc, err := c.Consume(func(m jetstream.Msg) { _ = m.Ack() })
			if err != nil {
				t.Fatal(err)
			}
			natstest.WaitFor(t, 10*time.Second, func() error {
				info, err := c.Info(ctx)
				if err != nil {
					return err
				}
				if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream == 0 {
					return fmt.Errorf("%s: ack floor %d, %d pending, %d unacknowledged", d.name, info.AckFloor.Stream, info.NumPending, info.NumAckPending)
				}
				return nil
			})
			cc.Stop()
		}
		natstest.WaitFor(t, 10*time.Second, func() error {
			if indexed.Load() != 2 {
				return fmt.Errorf("indexed %d of 2", indexed.Load())
			}
			return nil
		})
		// The revocation on the ledger, then the denylist entry with a TTL
		// and a compare-and-set update with a TTL, as services/revoker does.
		if _, err := rev.js.Publish(ctx, "cordon.token.revoked.acme.t1", []byte(`{}`), jetstream.WithMsgID("r1")); err != nil {
			t.Fatalf("publish revocation: %v", err)
		}
		deny, err := rev.js.KeyValue(ctx, events.BucketDenylist)
		if err != nil {
			t.Fatal(err)
		}
		rev1, err := deny.Create(ctx, "tok.t1", []byte(`{"v":1}`), jetstream.KeyTTL(time.Hour))
		if err != nil {
			t.Fatalf("create deny entry: %v", err)
		}
		m := nats.NewMsg("$KV." + events.BucketDenylist + ".tok.t1")
		m.Data = []byte(`{"v":2}`)
		if _, err := rev.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev1), jetstream.WithMsgTTL(time.Hour)); err != nil {
			t.Fatalf("update deny entry: %v", err)
		}
		e, err := deny.Get(ctx, "tok.t1")
		if err != nil || string(e.Value()) != `{"v":2}` {
			t.Fatalf("deny entry: %v %q", err, e.Value())
		}
		dl := nats.NewMsg(events.DeadLetterSubject(events.DeadLetterRevoker))
		dl.Data = []byte("poison")
		dl.Header.Set(events.HeaderDeadReason, "test")
		if _, err := rev.js.PublishMsg(ctx, dl, jetstream.WithMsgID("dl1")); err != nil {
			t.Fatalf("dead letter: %v", err)
		}
		rev.serve(t, events.SubjectCmdRevoke)
		admin.request(t, events.SubjectCmdRevoke)
		rev.noViolations(t)
	})

	t.Run("refused", func(t *testing.T) {
		for _, s := range []string{"cordon.token.issued.acme.t9", "cordon.token.expired.acme.t9", "cordon.key.published.evil"} {
			t.Run("publish "+s, func(t *testing.T) {
				rev.refused(t, "Publish", s, func(ctx context.Context) error { return publishAck(ctx, rev, s) })
			})
		}
		t.Run("put a signing key", func(t *testing.T) {
			kv := openKV(ctx, t, rev, events.BucketKeys)
			rev.refused(t, "Publish", "$KV.keys.evil", func(ctx context.Context) error {
				_, err := kv.Put(ctx, "evil", []byte(`{}`))
				return err
			})
		})
		t.Run("send cordon.cmd.issue", func(t *testing.T) {
			rev.refused(t, "Publish", events.SubjectCmdIssue, func(ctx context.Context) error {
				_, err := rev.nc.RequestWithContext(ctx, events.SubjectCmdIssue, []byte(`{}`))
				return err
			})
		})
		t.Run("squat the auditor's ledger durable", func(t *testing.T) {
			subj := "$JS.API.CONSUMER.CREATE.TOKENS.auditor-ledger"
			body := `{"stream_name":"TOKENS","config":{"durable_name":"auditor-ledger","filter_subject":"cordon.token.>","ack_policy":"none","deliver_policy":"new"}}`
			rev.refused(t, "Publish", subj, func(ctx context.Context) error {
				_, err := rev.nc.RequestWithContext(ctx, subj, []byte(body))
				return err
			})
		})
		t.Run("read usage", func(t *testing.T) {
			subj := "$JS.API.CONSUMER.CREATE.USAGE.auditor-usage.cordon.usage.>"
			rev.refused(t, "Publish", subj, func(ctx context.Context) error {
				_, err := rev.js.CreateOrUpdateConsumer(ctx, events.StreamUsage, jetstream.ConsumerConfig{Durable: "auditor-usage", FilterSubject: "cordon.usage.>"})
				return err
			})
		})
	})
}

func TestAuditorPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ack_fc_v2=%v", v2), func(t *testing.T) {
			testAuditor(t, setup{ensure: true, ackV2: v2})
		})
	}
}

func testAuditor(t *testing.T, o setup) {
	f := secured(t, o)
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	iss := f.connect(t, natsauth.RoleIssuer)
	enf := f.connectEnforcer(t, edge1)
	aud := f.connect(t, natsauth.RoleAuditor)
	for i := range 50 {
		if _, err := enf.js.PublishAsync(events.UsageSubject("acme", edge1), []byte(`{}`), jetstream.WithMsgID(fmt.Sprint("u", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-enf.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("usage acks")
	}
	if err := publishAck(ctx, iss, "cordon.token.issued.acme.t1"); err != nil {
		t.Fatal(err)
	}

	t.Run("allowed", func(t *testing.T) {
		// Durable pull consumers, AckAll on the last message of a batch,
		// as services/auditor does.
		for _, d := range []struct {
			stream, name, filter string
			want                 uint64
		}{
			{events.StreamTokens, events.AuditorLedgerDurable(events.DurableAuditor).Name, events.SubjectTokenPrefix + ">", 1},
		} {
			c, err := aud.js.CreateOrUpdateConsumer(ctx, d.stream, jetstream.ConsumerConfig{
				Durable: d.name, FilterSubject: d.filter, AckPolicy: jetstream.AckAllPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			})
			if err != nil {
				t.Fatalf("durable %s: %v", d.name, err)
			}
			it, err := c.Messages(jetstream.PullMaxMessages(100))
			if err != nil {
				t.Fatal(err)
			}
			var last jetstream.Msg
			for range d.want {
				if last, err = it.Next(); err != nil {
					t.Fatalf("%s: next: %v", d.name, err)
				}
			}
			if err := last.DoubleAck(ctx); err != nil {
				t.Fatalf("%s: ack: %v", d.name, err)
			}
			it.Stop()
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.AckFloor.Stream != d.want || info.NumAckPending != 0 {
				t.Fatalf("%s: ack floor %d (want %d), %d unacknowledged", d.name, info.AckFloor.Stream, d.want, info.NumAckPending)
			}
		}
		// The detectors read both streams in order with ordered consumers
		// filtered on one subject each, from a checkpoint's sequence, as
		// services/auditor detection.go does.
		for _, d := range []struct {
			stream, filter string
			from           uint64
			want           int
		}{
			{events.StreamUsage, events.SubjectUsagePrefix + ">", 0, 50},
			{events.StreamUsage, events.SubjectUsagePrefix + ">", 41, 10},
			{events.StreamTokens, events.SubjectTokenPrefix + ">", 0, 1},
		} {
			cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{d.filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
			if d.from > 0 {
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, d.from
			}
			c, err := aud.js.OrderedConsumer(ctx, d.stream, cfg)
			if err != nil {
				t.Fatalf("ordered consumer on %s: %v", d.stream, err)
			}
			it, err := c.Messages()
			if err != nil {
				t.Fatalf("ordered consumer on %s: %v", d.stream, err)
			}
			for i := range d.want {
				if _, err := it.Next(); err != nil {
					t.Fatalf("ordered consumer on %s: message %d: %v", d.stream, i, err)
				}
			}
			it.Stop()
		}
		fut, err := aud.js.PublishAsync("cordon.anomaly.high.acme.t1", []byte(`{}`), jetstream.WithMsgID("a1"))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			t.Fatalf("anomaly: %v", err)
		}
		dl := nats.NewMsg(events.DeadLetterSubject(events.DeadLetterAuditor))
		dl.Data = []byte("poison")
		if _, err := aud.js.PublishMsg(ctx, dl); err != nil {
			t.Fatalf("dead letter: %v", err)
		}
		aud.serve(t, events.SubjectCmdSQL)
		admin.request(t, events.SubjectCmdSQL)
		aud.noViolations(t)
	})

	t.Run("refused", func(t *testing.T) {
		for _, s := range []string{"cordon.token.revoked.acme.t1", events.UsageSubject("acme", "forged")} {
			t.Run("publish "+s, func(t *testing.T) {
				aud.refused(t, "Publish", s, func(ctx context.Context) error { return publishAck(ctx, aud, s) })
			})
		}
		t.Run("put a denylist entry", func(t *testing.T) {
			aud.refused(t, "Publish", "$KV.denylist.tok.x", func(ctx context.Context) error { return publishAck(ctx, aud, "$KV.denylist.tok.x") })
		})
		t.Run("read signing-key events in order", func(t *testing.T) {
			aud.refusedWhere(t, "Publish", "$JS.API.CONSUMER.CREATE.TOKENS.", func(ctx context.Context) error {
				c, err := aud.js.OrderedConsumer(ctx, events.StreamTokens, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectKeyPrefix + ">"}})
				if err != nil {
					return err
				}
				_, err = c.Fetch(1, jetstream.FetchMaxWait(4*time.Second))
				return err
			})
		})
		// The body of a create carries the configuration: by name alone,
		// a create, pull or delete could squat, drain or reset another
		// service's durable. Each is refused by name.
		squat := `{"stream_name":"TOKENS","config":{"durable_name":"revoker-tokens","filter_subject":"cordon.token.>","ack_policy":"none","deliver_policy":"new"}}`
		for _, r := range []struct{ what, subject, body string }{
			{"squat the revoker's durable", "$JS.API.CONSUMER.CREATE.TOKENS.revoker-tokens", squat},
			{"pull from the revoker's durable", "$JS.API.CONSUMER.MSG.NEXT.TOKENS.revoker-tokens", `{"batch":1}`},
			{"delete the revoker's durable", "$JS.API.CONSUMER.DELETE.TOKENS.revoker-tokens", ``},
		} {
			t.Run(r.what, func(t *testing.T) {
				aud.refused(t, "Publish", r.subject, func(ctx context.Context) error {
					_, err := aud.nc.RequestWithContext(ctx, r.subject, []byte(r.body))
					return err
				})
			})
		}
		t.Run("use the revoker's consumer", func(t *testing.T) {
			subj := "$JS.API.CONSUMER.CREATE.TOKENS.revoker-tokens.cordon.token.>"
			aud.refused(t, "Publish", subj, func(ctx context.Context) error {
				_, err := aud.js.CreateOrUpdateConsumer(ctx, events.StreamTokens, jetstream.ConsumerConfig{Durable: "revoker-tokens", FilterSubject: "cordon.token.>"})
				return err
			})
		})
		t.Run("send cordon.cmd.revoke", func(t *testing.T) {
			aud.refused(t, "Publish", events.SubjectCmdRevoke, func(ctx context.Context) error {
				_, err := aud.nc.RequestWithContext(ctx, events.SubjectCmdRevoke, []byte(`{}`))
				return err
			})
		})
	})
}

func TestAdminPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{ensure: true}) // the admin created the streams
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	rev := f.connect(t, natsauth.RoleRevoker)

	t.Run("allowed", func(t *testing.T) {
		rev.serve(t, events.SubjectCmdRevoke)
		admin.request(t, events.SubjectCmdRevoke)
		// The admin watches the ledger and the anomalies as they are
		// published (the leak drill does).
		aud := f.connect(t, natsauth.RoleAuditor)
		for _, s := range []struct {
			watch, subject string
			by             *client
		}{
			{events.SubjectTokenPrefix + ">", "cordon.token.revoked.acme.t1", rev},
			{events.SubjectAnomalyPrefix + ">", "cordon.anomaly.high.acme.t1", aud},
		} {
			sub, err := admin.nc.SubscribeSync(s.watch)
			if err != nil {
				t.Fatal(err)
			}
			if err := admin.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := publishAck(ctx, s.by, s.subject); err != nil {
				t.Fatalf("%s publishes %s: %v", s.by.role, s.subject, err)
			}
			if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != s.subject {
				t.Fatalf("watch %s: %v", s.watch, err)
			}
			_ = sub.Unsubscribe()
		}
		names := admin.js.StreamNames(ctx)
		n := 0
		for range names.Name() {
			n++
		}
		if names.Err() != nil || n != 6 {
			t.Fatalf("stream names: %d (%v), want 6", n, names.Err())
		}
		admin.noViolations(t)
	})
	t.Run("refused", func(t *testing.T) {
		t.Run("publish a revocation directly", func(t *testing.T) {
			s := "cordon.token.revoked.acme.t1"
			admin.refused(t, "Publish", s, func(ctx context.Context) error { return publishAck(ctx, admin, s) })
		})
		t.Run("put a denylist entry directly", func(t *testing.T) {
			admin.refused(t, "Publish", "$KV.denylist.tok.x", func(ctx context.Context) error { return publishAck(ctx, admin, "$KV.denylist.tok.x") })
		})
		t.Run("delete the ledger", func(t *testing.T) {
			admin.refused(t, "Publish", "$JS.API.STREAM.DELETE.TOKENS", func(ctx context.Context) error {
				return admin.js.DeleteStream(ctx, events.StreamTokens)
			})
		})
		t.Run("shorten the ledger's retention", func(t *testing.T) {
			cfg := events.Streams(events.StreamOptions{})[0]
			cfg.MaxAge = time.Second
			admin.refused(t, "Publish", "$JS.API.STREAM.UPDATE.TOKENS", func(ctx context.Context) error {
				_, err := admin.js.UpdateStream(ctx, cfg)
				return err
			})
		})
		for _, subj := range []string{"cordon.cmd.>", "cordon.cmd.sql", "cordon.usage.>", "_INBOX.>"} {
			t.Run("subscribe "+subj, func(t *testing.T) {
				admin.refused(t, "Subscription", subj, func(ctx context.Context) error {
					sub, err := admin.nc.SubscribeSync(subj)
					if err != nil {
						return err
					}
					defer sub.Unsubscribe()
					_, err = sub.NextMsgWithContext(ctx)
					return err
				})
			})
		}
		t.Run("publish usage", func(t *testing.T) {
			s := events.UsageSubject("acme", edge1)
			admin.refused(t, "Publish", s, func(ctx context.Context) error { return publishAck(ctx, admin, s) })
		})
		t.Run("purge usage", func(t *testing.T) {
			st, err := admin.js.Stream(ctx, events.StreamUsage)
			if err != nil {
				t.Fatal(err)
			}
			admin.refused(t, "Publish", "$JS.API.STREAM.PURGE.USAGE", func(ctx context.Context) error { return st.Purge(ctx) })
		})
	})
}

// TestBootstrap: the issuer, revoker and auditor each create Cordon's
// streams and buckets when they are missing (as the CLI's
// ensureMissingStreams does); the enforcer cannot.
func TestBootstrap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	for _, r := range []natsauth.Role{natsauth.RoleIssuer, natsauth.RoleRevoker, natsauth.RoleAuditor} {
		t.Run(string(r), func(t *testing.T) {
			f := secured(t, setup{})
			ctx := ctxT(t)
			c := f.connect(t, r)
			o := events.StreamOptions{}
			for _, cfg := range events.Streams(o) {
				if _, err := c.js.Stream(ctx, cfg.Name); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Fatalf("stream %s before bootstrap: %v", cfg.Name, err)
				}
				if _, err := c.js.CreateStream(ctx, cfg); err != nil {
					t.Fatalf("create %s: %v", cfg.Name, err)
				}
			}
			for _, cfg := range events.Buckets(o) {
				if _, err := c.js.KeyValue(ctx, cfg.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
					t.Fatalf("bucket %s before bootstrap: %v", cfg.Bucket, err)
				}
				if _, err := c.js.CreateKeyValue(ctx, cfg); err != nil {
					t.Fatalf("create bucket %s: %v", cfg.Bucket, err)
				}
			}
			// A create never reconfigures what exists.
			cfg := events.Streams(o)[1]
			cfg.MaxAge = 48 * time.Hour
			if _, err := c.js.CreateStream(ctx, cfg); !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				t.Fatalf("create over an existing stream with another config: %v, want %v", err, jetstream.ErrStreamNameAlreadyInUse)
			}
			c.noViolations(t)
		})
	}
	t.Run(string(natsauth.RoleEnforcer), func(t *testing.T) {
		f := secured(t, setup{})
		enf := f.connectEnforcer(t, edge1)
		enf.refused(t, "Publish", "$JS.API.STREAM.CREATE.USAGE", func(ctx context.Context) error {
			_, err := enf.js.CreateStream(ctx, events.Streams(events.StreamOptions{})[1])
			return err
		})
	})
}

// TestEnforcerCannotFeedTheLedgerThroughAConsumer: the enforcer may create
// consumers on the buckets it reads (a KV watch is one), and subject
// permissions cannot restrict the delivery subject in the request body.
// A push consumer aimed at a ledger subject must still not put bucket
// contents into TOKENS: JetStream delivers only where a subscriber is,
// and a stream is not one. The control consumer, delivering to the
// enforcer's own inbox, shows the same consumer delivers at once.
func TestEnforcerCannotFeedTheLedgerThroughAConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{ensure: true})
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	iss := f.connect(t, natsauth.RoleIssuer)
	enf := f.connectEnforcer(t, edge1)
	keys := openKV(ctx, t, iss, events.BucketKeys)
	if _, err := keys.Put(ctx, "k1", []byte(`{"public_key":"x"}`)); err != nil {
		t.Fatal(err)
	}
	create := func(name, deliver string) {
		t.Helper()
		req := fmt.Sprintf(`{"stream_name":"KV_keys","config":{"name":%q,"deliver_subject":%q,"deliver_policy":"all","ack_policy":"none","filter_subject":"$KV.keys.>"}}`, name, deliver)
		m, err := enf.nc.Request("$JS.API.CONSUMER.CREATE.KV_keys."+name+".$KV.keys.>", []byte(req), 5*time.Second)
		if err != nil {
			t.Fatalf("create consumer %s: %v", name, err)
		}
		if strings.Contains(string(m.Data), `"error"`) {
			t.Fatalf("create consumer %s: %s", name, m.Data)
		}
	}
	inbox := enf.nc.NewInbox()
	sub, err := enf.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	create("control", inbox)
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("control delivery: %v", err)
	}
	start := time.Now()
	forged := "cordon.token.revoked.acme.forged"
	create("launder", forged)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if n := count(t, admin, events.StreamTokens, forged); n != 0 {
			t.Fatalf("bucket contents reached the ledger through a consumer (%d messages)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m, err := admin.nc.Request("$JS.API.CONSUMER.INFO.KV_keys.launder", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), `"delivered":{"consumer_seq":0`) {
		t.Fatalf("launder consumer delivered something: %s", m.Data)
	}
	t.Logf("no delivery into the ledger in %v (control delivered at once)", time.Since(start).Round(time.Millisecond))
	enf.noViolations(t)
}

// TestAuditorStatusPermissions: `cordon auditor status` asks every auditor
// instance at once (no queue group) and gathers their replies in the
// admin's private inbox; it reads the USAGE stream's partition count. The
// admin may do all of it and every auditor may answer. An enforcer may not
// send the request, nor listen on the subject (the request carries an
// admin token).
func TestAuditorStatusPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{ensure: true})
	ctx := ctxT(t)
	admin := f.connect(t, natsauth.RoleAdmin)
	enf := f.connectEnforcer(t, edge1)
	subj := events.SubjectCmdAuditorStatus
	var auditors []*client
	var got []*atomic.Int64
	for i := range 2 {
		aud := f.connect(t, natsauth.RoleAuditor)
		var n atomic.Int64
		sub, err := aud.nc.Subscribe(subj, func(m *nats.Msg) {
			n.Add(1)
			_ = m.Respond([]byte(fmt.Sprintf(`{"ok":true,"instance":{"name":"aud-%d"}}`, i)))
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := aud.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		auditors, got = append(auditors, aud), append(got, &n)
	}

	t.Run("the admin gathers every instance", func(t *testing.T) {
		inbox := admin.nc.NewInbox()
		replies, err := admin.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer replies.Unsubscribe()
		if err := admin.nc.PublishRequest(subj, inbox, []byte(`{"auth":""}`)); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for range 2 {
			m, err := replies.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("replies %v: %v", seen, err)
			}
			seen[string(m.Data)] = true
		}
		if len(seen) != 2 {
			t.Fatalf("replies %v, want one from each instance", seen)
		}
		if _, err := admin.js.Stream(ctx, events.StreamUsage); err != nil {
			t.Fatalf("the admin reads the USAGE stream's partition count: %v", err)
		}
		admin.noViolations(t)
		for _, a := range auditors {
			a.noViolations(t)
		}
	})

	t.Run("an enforcer may not ask", func(t *testing.T) {
		before := got[0].Load() + got[1].Load()
		enf.refused(t, "Publish", subj, func(ctx context.Context) error {
			_, err := enf.nc.RequestWithContext(ctx, subj, []byte(`{}`))
			return err
		})
		if after := got[0].Load() + got[1].Load(); after != before {
			t.Fatalf("the auditors got %d requests from an enforcer", after-before)
		}
	})
	t.Run("an enforcer may not listen", func(t *testing.T) {
		enf.refused(t, "Subscription", subj, func(ctx context.Context) error {
			sub, err := enf.nc.SubscribeSync(subj)
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			if err := enf.nc.Flush(); err != nil {
				return err
			}
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	})
	t.Run("the admin may not listen", func(t *testing.T) {
		admin.refused(t, "Subscription", subj, func(ctx context.Context) error {
			sub, err := admin.nc.SubscribeSync(subj)
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			if err := admin.nc.Flush(); err != nil {
				return err
			}
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	})
}
