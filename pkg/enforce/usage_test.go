package enforce

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// usageMsgs reads every usage event of enforcer id from the USAGE stream.
func usageMsgs(t *testing.T, js jetstream.JetStream, id string, want int) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamUsage, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectUsagePrefix + "*." + id}})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for len(msgs) < want {
		batch, err := cons.Fetch(want-len(msgs), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			n++
		}
		if n == 0 {
			t.Fatalf("got %d usage events, want %d", len(msgs), want)
		}
	}
	return msgs
}

func TestUsageEvents(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-usage", nil)
	srv := f.proxy(t, e)

	good, c := mint(t, f.signer, nil)
	narrow, nc := mint(t, f.signer, func(c *token.Claims) { c.Scopes = []string{"invoices:list"} })
	bad := good[:len(good)-3] + "xyz" // checksum mismatch

	do(t, nil, "GET", srv.URL+"/invoices/42", good, nil)   // allow
	do(t, nil, "GET", srv.URL+"/invoices/42", narrow, nil) // scope_missing
	do(t, nil, "GET", srv.URL+"/invoices/42", bad, nil)    // malformed: folded, published at the interval's end (Flush)
	do(t, nil, "GET", srv.URL+"/nowhere", good, nil)       // no_route
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := usageMsgs(t, f.env.JS, "edge-usage", 4)

	type want struct {
		subject, tokenID, tenant, holder, kid, route, scope, decision, reason string
	}
	wants := []want{
		{"cordon.usage.acme.edge-usage", c.ID, "acme", "billing-worker", f.signer.KeyID, "/invoices/{id}", "invoices:read", "allow", "ok"},
		{"cordon.usage.acme.edge-usage", nc.ID, "acme", "billing-worker", f.signer.KeyID, "/invoices/{id}", "invoices:read", "deny", "scope_missing"},
		{"cordon.usage.acme.edge-usage", c.ID, "acme", "billing-worker", f.signer.KeyID, "/nowhere", "", "deny", "no_route"},
		{"cordon.usage._.edge-usage", "", "", "", "", "/invoices/{id}", "invoices:read", "deny", "malformed"},
	}
	for i, m := range msgs {
		w := wants[i]
		env, u, err := events.DecodeAs[*events.UsageDecided](m.Data())
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		for _, secret := range []string{good, narrow, bad, good[:40]} {
			if bytes.Contains(m.Data(), []byte(secret)) || strings.Contains(headerText(m), secret) {
				t.Fatalf("event %d carries a token string", i)
			}
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got != env.MsgID() {
			t.Errorf("event %d: message id %q, want the event id %q", i, got, env.MsgID())
		}
		got := want{m.Subject(), u.TokenID, u.Tenant, u.Holder, u.KeyID, u.Route, u.Scope, u.Decision, u.Reason}
		if got != w {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got, w)
		}
		if u.Enforcer != "edge-usage" || u.Service != "invoices" || u.SourceIP != "127.0.0.1" ||
			u.Method != "GET" || u.UserAgent != "cordon-test/1" || u.LatencyNS <= 0 || env.Source != "enforcer/edge-usage" {
			t.Errorf("event %d: %+v (source %s)", i, u, env.Source)
		}
	}
	st := e.Stats()
	if st.UsagePublished != 4 || st.UsageDropped != 0 || st.UsageFailed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func headerText(m jetstream.Msg) string {
	var b strings.Builder
	for k, vs := range m.Headers() {
		b.WriteString(k)
		for _, v := range vs {
			b.WriteString(v)
		}
	}
	return b.String()
}

// TestUsageDropsInsteadOfBlocking fills the usage buffer of an enforcer
// whose publisher cannot keep up (never started, then NATS gone): decisions
// keep coming at full speed and the drops are counted.
func TestUsageDropsInsteadOfBlocking(t *testing.T) {
	f := newFixture(t)
	tok, _ := mint(t, f.signer, nil)
	req := &Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("127.0.0.1")}

	run := func(t *testing.T, e *Enforcer, n int) time.Duration {
		t.Helper()
		done := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			for range n {
				e.Check(req)
			}
			done <- time.Since(start)
		}()
		select {
		case d := <-done:
			return d
		case <-time.After(5 * time.Second):
			t.Fatal("Check blocked on a full usage buffer")
			return 0
		}
	}

	t.Run("publisher not running", func(t *testing.T) {
		e, err := New(Options{ID: "edge-drop", Routes: f.routes, UsageBuffer: 8})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if err := e.AddKey(f.signer.KeyID, f.signer.Public()); err != nil {
			t.Fatal(err)
		}
		run(t, e, 1000)
		if got := e.UsageDropped(); got != 1000-8 {
			t.Fatalf("dropped %d, want %d", got, 1000-8)
		}
		if st := e.Stats(); st.UsageQueued != 8 || st.UsageCapacity != 8 {
			t.Fatalf("stats %+v", st)
		}
	})

	t.Run("nats gone", func(t *testing.T) {
		e := f.enforcer(t, "edge-gone", func(o *Options) { o.UsageBuffer = 16; o.UsageBatch = 4 })
		e.usage.ackWait = 200 * time.Millisecond
		if d := e.Check(req); !d.Allow {
			t.Fatalf("got %v", d)
		}
		natstest.WaitFor(t, 5*time.Second, func() error {
			if e.Stats().UsagePublished < 1 {
				return errorf("first event not published")
			}
			return nil
		})
		f.env.Stop()
		took := run(t, e, 20000)
		if e.UsageDropped() == 0 {
			t.Fatal("no drops counted with NATS gone and a full buffer")
		}
		t.Logf("20000 decisions with NATS gone in %v, %d usage events dropped", took, e.UsageDropped())
	})
}
