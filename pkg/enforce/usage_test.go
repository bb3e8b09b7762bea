package enforce

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/spool"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestUsageEvents: the decisions of a proxy reach USAGE with every field,
// no token string, under the right subject and message id, in both usage
// formats; a batch lands under its partition's subject, and token-less
// denials under the partition of (_, _).
func TestUsageEvents(t *testing.T) {
	for _, format := range []string{UsageFormatBatch, UsageFormatEvent} {
		t.Run(format, func(t *testing.T) {
			f := newFixture(t)
			id := "edge-usage-" + format
			e := f.enforcer(t, id, func(o *Options) {
				o.UsageFormat = format
				if format == UsageFormatBatch {
					o.UsageLinger = time.Hour // the Flush below ends the window: one batch per (tenant, holder)
				}
			})
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
			evs := readUsage(t, f.env.JS, id, 4)

			acme, tokenless := "cordon.usage.acme."+id, "cordon.usage._."+id
			if format == UsageFormatBatch {
				p := events.UsagePartition("acme", "billing-worker", events.DefaultUsagePartitions)
				acme = fmt.Sprintf("cordon.usage.part.%d.acme.%s.billing-worker", p, id)
				p = events.UsagePartition("", "", events.DefaultUsagePartitions)
				tokenless = fmt.Sprintf("cordon.usage.part.%d._.%s._", p, id)
			}
			type want struct {
				subject, tokenID, tenant, holder, kid, route, scope, decision, reason string
			}
			wants := []want{
				{tokenless, "", "", "", "", "/invoices/{id}", "invoices:read", "deny", "malformed"},
				{acme, c.ID, "acme", "billing-worker", f.signer.KeyID, "/nowhere", "", "deny", "no_route"},
				{acme, c.ID, "acme", "billing-worker", f.signer.KeyID, "/invoices/{id}", "invoices:read", "allow", "ok"},
				{acme, nc.ID, "acme", "billing-worker", f.signer.KeyID, "/invoices/{id}", "invoices:read", "deny", "scope_missing"},
			}
			slices.SortFunc(evs, func(a, b usageEvent) int { return cmp.Compare(a.u.Reason, b.u.Reason) })
			for i, ev := range evs {
				w, u, env := wants[i], &ev.u, &ev.env
				for _, secret := range []string{good, narrow, bad, good[:40]} {
					if bytes.Contains(ev.data, []byte(secret)) || strings.Contains(ev.header, secret) {
						t.Fatalf("event %d carries a token string", i)
					}
				}
				if ev.batch != (format == UsageFormatBatch) {
					t.Errorf("event %d: from a batch %v in format %s", i, ev.batch, format)
				}
				if !ev.batch && ev.msgID != env.MsgID() {
					t.Errorf("event %d: message id %q, want the event id %q", i, ev.msgID, env.MsgID())
				}
				if err := env.Validate(); err != nil {
					t.Errorf("event %d: %v", i, err)
				}
				got := want{ev.subject, u.TokenID, u.Tenant, u.Holder, u.KeyID, u.Route, u.Scope, u.Decision, u.Reason}
				if got != w {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, got, w)
				}
				if u.Enforcer != id || u.Service != "invoices" || u.SourceIP != "127.0.0.1" ||
					u.Method != "GET" || u.UserAgent != "cordon-test/1" || u.LatencyNS <= 0 || env.Source != "enforcer/"+id {
					t.Errorf("event %d: %+v (source %s)", i, u, env.Source)
				}
			}
			st := e.Stats()
			wantMsgs := uint64(4)
			if format == UsageFormatBatch {
				wantMsgs = 2
			}
			if st.UsagePublished != 4 || st.UsageBatches != wantMsgs || st.UsageDropped != 0 || st.UsageFailed != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
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

// spoolReq is an allowed request whose usage event names i as resource.
func spoolReq(tok string, i int) *Request {
	return &Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Resource: strconv.Itoa(i), Scope: "invoices:read",
		RemoteAddr: netip.MustParseAddr("127.0.0.1")}
}

// checkPaced makes n decisions at most about 5,000 a second (50, then a
// 10ms pause): faster than a publisher waiting seconds for an
// acknowledgement can afford with a small buffer, slow enough for one
// that keeps relieving it.
func checkPaced(e *Enforcer, tok string, from, n int) {
	for i := from; i < from+n; i++ {
		if d := e.Check(spoolReq(tok, i)); !d.Allow {
			panic(fmt.Sprintf("decision %d: %v", i, d.Reason))
		}
		if i%50 == 49 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// usageOnce checks that USAGE holds exactly want usage events of
// enforcer id (any number if want is negative), each once (by event id)
// under its original message id (the event's, or its batch's), and
// returns their resources.
func usageOnce(t *testing.T, js jetstream.JetStream, id string, want int) []string {
	t.Helper()
	var evs []usageEvent
	natstest.WaitFor(t, 30*time.Second, func() error { // a cluster may still be electing
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		evs, err = fetchUsage(ctx, js, id, want)
		return err
	})
	seen := make(map[string]bool, len(evs))
	var resources []string
	for i, ev := range evs {
		if seen[ev.env.MsgID()] {
			t.Fatalf("event %s stored twice", ev.env.ID)
		}
		seen[ev.env.MsgID()] = true
		if !ev.batch && ev.msgID != ev.env.MsgID() {
			t.Fatalf("event %d: message id %q, want its original id %q", i, ev.msgID, ev.env.MsgID())
		}
		resources = append(resources, ev.u.Resource)
	}
	return resources
}

// stopJetStream stops the fixture's server (its clients keep trying to
// reconnect) and returns what starts it again on the same port and data.
func stopJetStream(t *testing.T, f *fixture) (restart func()) {
	t.Helper()
	port := f.env.Server.Addr().(*net.TCPAddr).Port
	f.env.Server.Stop()
	return func() {
		t.Helper()
		srv, err := natsrun.Start(natsrun.Options{DataDir: f.env.Dir, Port: port})
		if err != nil {
			t.Fatalf("restart nats: %v", err)
		}
		f.env.Server = srv
		natstest.WaitFor(t, 30*time.Second, func() error {
			if !f.env.NC.IsConnected() {
				return errorf("test client not reconnected")
			}
			return nil
		})
	}
}

func waitStats(t *testing.T, e *Enforcer, what string, ok func(s Stats) bool) Stats {
	t.Helper()
	var st Stats
	natstest.WaitFor(t, 60*time.Second, func() error {
		if st = e.Stats(); !ok(st) {
			return fmt.Errorf("%s: %+v", what, st)
		}
		return nil
	})
	return st
}

// TestUsageSpoolLeaderLoss: an enforcer on a three-node cluster whose USAGE
// stream loses its quorum (two nodes killed) gets no acknowledgement
// while decisions keep coming faster than its small buffer could hold
// for the wait: nothing is dropped, every event is spooled; once the nodes
// are back, USAGE holds every event exactly once, under its original id.
func TestUsageSpoolLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes")
	}
	c := natscluster.Start(t, natscluster.Options{})
	_, js := c.ConnectTo(t, 0)
	routes, err := LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	signer := newSigner(t)
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	const id = "edge-election"
	e, err := New(Options{ID: id, Routes: routes, TrustAnchors: token.Anchors{anchor.Public()}, SpoolDir: t.TempDir(),
		UsageBuffer: 2048, UsageBatch: 64, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.AddKey(signer.KeyID, signer.Public()); err != nil {
		t.Fatal(err)
	}
	// A long silence: 3s without an acknowledgement is 15,000 decisions at
	// the pace below, against a buffer of 2,048.
	e.usage.ackWait = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx, js); err != nil {
		t.Fatal(err)
	}
	tok, _ := mint(t, signer, nil)
	checkPaced(e, tok, 0, 1)
	waitStats(t, e, "first event published", func(s Stats) bool { return s.UsagePublished == 1 })

	c.Kill(1)
	c.Kill(2)
	const n = 6000
	checkPaced(e, tok, 1, n)
	st := waitStats(t, e, "every event handled", func(s Stats) bool {
		return s.UsageSpooled+s.UsageDropped+s.UsageFailed == n && s.UsageQueued == 0
	})
	if st.UsageDropped != 0 || st.UsageFailed != 0 || st.UsagePublished != 1 || st.UsageSpooled != n || st.UsageSpoolPending == 0 || st.UsageSpoolDropped != 0 {
		t.Fatalf("with the stream's quorum lost: %+v", st)
	}

	c.Restart(1)
	c.Restart(2)
	waitStats(t, e, "spool republished", func(s Stats) bool { return s.UsageSpoolPending == 0 && s.UsagePublished == n+1 })
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	usageOnce(t, js, id, n+1)
}

// TestUsageSpoolAcrossRestart: an enforcer closed while JetStream is down
// leaves its events in the spool (none dropped); the next enforcer on
// that spool republishes them. A second enforcer cannot open a spool in
// use.
func TestUsageSpoolAcrossRestart(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	const id = "edge-spool-restart"
	e := f.enforcer(t, id, func(o *Options) { o.SpoolDir = dir })

	other, err := New(Options{ID: "edge-other", Routes: f.routes, TrustAnchors: f.env.Anchors(), SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := other.Start(ctx, f.env.JS); !errors.Is(err, spool.ErrBusy) {
		t.Fatalf("a second enforcer on a spool in use: %v, want spool.ErrBusy", err)
	}
	_ = other.Close()

	tok, _ := mint(t, f.signer, nil)
	restart := stopJetStream(t, f)
	const n = 500
	checkPaced(e, tok, 0, n)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if st.UsageSpooled != n || st.UsageSpoolPending == 0 || st.UsageDropped != 0 || st.UsageFailed != 0 || st.UsagePublished != 0 {
		t.Fatalf("closed with JetStream down: %+v, want %d pending in the spool", st, n)
	}

	restart()
	again := f.enforcer(t, id, func(o *Options) { o.SpoolDir = dir })
	waitStats(t, again, "spool republished", func(s Stats) bool { return s.UsageSpoolPending == 0 && s.UsagePublished == n })
	got := usageOnce(t, f.env.JS, id, n)
	slices.SortFunc(got, func(a, b string) int { return cmp.Compare(atoi(a), atoi(b)) })
	for i, r := range got {
		if r != strconv.Itoa(i) {
			t.Fatalf("republished resources %v…, want 0…%d", got[:min(len(got), 10)], n-1)
		}
	}
}

// TestUsageSpoolFull: a spool too small for an outage keeps the newest
// events, drops the oldest and counts them, in both usage formats.
func TestUsageSpoolFull(t *testing.T) {
	for _, format := range []string{UsageFormatBatch, UsageFormatEvent} {
		t.Run(format, func(t *testing.T) {
			f := newFixture(t)
			id := "edge-spool-full-" + format
			e := f.enforcer(t, id, func(o *Options) { o.SpoolDir = t.TempDir(); o.SpoolMaxBytes = 64 << 10; o.UsageFormat = format })
			tok, _ := mint(t, f.signer, nil)
			restart := stopJetStream(t, f)
			n := 2000
			if format == UsageFormatBatch {
				n = 10000 // batches take about 25 bytes an event here
			}
			checkPaced(e, tok, 0, n)
			st := waitStats(t, e, "every event handled", func(s Stats) bool {
				return s.UsageSpooled+s.UsageDropped+s.UsageFailed == uint64(n) && s.UsageQueued == 0
			})
			if st.UsageSpoolDropped == 0 || st.UsageSpoolBytes > 64<<10 || st.UsageDropped != 0 || st.UsageFailed != 0 {
				t.Fatalf("spool of 64 KiB after %d events: %+v", n, st)
			}
			// In the event format a spooled message is an event: the spool
			// says how many it kept.
			kept := -1
			if format == UsageFormatEvent {
				kept = int(st.UsageSpoolPending)
				if kept+int(st.UsageSpoolDropped) != n {
					t.Fatalf("spool of 64 KiB after %d events: %+v", n, st)
				}
			}
			restart()
			// The drainer may have had the oldest events in flight when they were
			// dropped: they then reach USAGE too (below), and count as published.
			waitStats(t, e, "spool republished", func(s Stats) bool { return s.UsageSpoolPending == 0 && s.UsagePublished >= uint64(max(kept, 1)) })
			// The newest events are there, each once. The client's reconnect buffer
			// (the first batch, in flight when JetStream went away) or the drainer
			// may also have delivered some of the oldest, although the spool
			// dropped them: only the oldest may be there beyond the kept ones.
			got := usageOnce(t, f.env.JS, id, -1)
			slices.SortFunc(got, func(a, b string) int { return cmp.Compare(atoi(a), atoi(b)) })
			if len(got) == 0 || len(got) >= n || got[len(got)-1] != strconv.Itoa(n-1) {
				t.Fatalf("USAGE holds %d events after the spool dropped some, want the newest (%d) and fewer than %d", len(got), n-1, n)
			}
			if kept < 0 { // batches: the kept ones are the newest, in one run
				kept = 1
				for kept < len(got) && atoi(got[len(got)-kept-1]) == n-kept-1 {
					kept++
				}
			}
			newest := got[len(got)-kept:]
			for i, r := range newest {
				if r != strconv.Itoa(n-kept+i) {
					t.Fatalf("USAGE's newest events %v…, want %d…%d", newest[:min(10, len(newest))], n-kept, n-1)
				}
			}
			t.Logf("%d events in USAGE, the newest %d in one run", len(got), kept)
		})
	}
}

// TestUsageSpoolCloseBeforeStart: the events queued in an enforcer closed
// before it published anything go to its spool, and the next enforcer on
// that spool publishes them.
func TestUsageSpoolCloseBeforeStart(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	const id, n = "edge-spool-early", 100
	e, err := New(Options{ID: id, Routes: f.routes, TrustAnchors: f.env.Anchors(), SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddKey(f.signer.KeyID, f.signer.Public()); err != nil {
		t.Fatal(err)
	}
	tok, _ := mint(t, f.signer, nil)
	for i := range n {
		e.Check(spoolReq(tok, i))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.UsageSpooled != n || st.UsageSpoolPending == 0 || st.UsageDropped != 0 {
		t.Fatalf("closed before Start: %+v, want %d events in the spool", st, n)
	}
	again := f.enforcer(t, id, func(o *Options) { o.SpoolDir = dir })
	waitStats(t, again, "spool republished", func(s Stats) bool { return s.UsageSpoolPending == 0 && s.UsagePublished == n })
	usageOnce(t, f.env.JS, id, n)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestUsageSpoolRefusedEvent: an event JetStream refuses for what it is
// (here larger than the stream allows) is dropped from the spool, counted
// failed, and does not hold up the events behind it.
func TestUsageSpoolRefusedEvent(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := f.env.JS.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 4096
	if _, err := f.env.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	const id = "edge-spool-refused"
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	subject := events.UsageSubject("acme", id)
	if _, err := sp.Append(
		spool.Record{Subject: subject, ID: "spooled-1", Data: []byte(`{"first":true}`)},
		spool.Record{Subject: subject, ID: "spooled-2", Data: bytes.Repeat([]byte("x"), 8192)},
		spool.Record{Subject: subject, ID: "spooled-3", Data: []byte(`{"third":true}`)},
	); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	e := f.enforcer(t, id, func(o *Options) { o.SpoolDir = dir })
	s := waitStats(t, e, "spool drained", func(s Stats) bool { return s.UsageSpoolPending == 0 && s.UsagePublished+s.UsageFailed == 3 })
	if s.UsagePublished != 2 || s.UsageFailed != 1 {
		t.Fatalf("after the refused event: %+v, want 2 published and 1 failed", s)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("USAGE holds %d of the spooled events, want 2", info.State.Msgs)
	}
}
