package enforce

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// usageEvent is one decision read back from USAGE, from a usage batch or
// a single JSON event.
type usageEvent struct {
	subject string // the stored subject of its message
	msgID   string // its message's Nats-Msg-Id
	data    []byte // its message's data
	header  string // its message's headers, flattened
	batch   bool   // from a usage batch
	env     events.Envelope
	u       events.UsageDecided
}

// usageFilters are the subjects enforcer id's usage is stored under: its
// batches (partitioned or not) and its single events.
func usageFilters(id string) []string {
	return []string{
		events.SubjectUsagePrefix + "*." + id,
		events.SubjectUsagePrefix + "*." + id + ".*",
		events.SubjectUsagePartPrefix + "*.*." + id + ".*",
	}
}

// decodeUsage decodes one USAGE message into the decisions it carries.
func decodeUsage(m jetstream.Msg) ([]usageEvent, error) {
	base := usageEvent{subject: m.Subject(), msgID: m.Headers().Get(jetstream.MsgIDHeader), data: m.Data(), header: headerText(m)}
	if strings.Count(m.Subject(), ".") == 3 {
		env, u, err := events.DecodeAs[*events.UsageDecided](m.Data())
		if err != nil {
			return nil, fmt.Errorf("event on %s: %w", m.Subject(), err)
		}
		base.env, base.u = env, *u
		base.env.Data = &base.u
		return []usageEvent{base}, nil
	}
	var ub events.UsageBatch
	if err := events.DecodeUsageBatch(m.Subject(), m.Data(), &ub); err != nil {
		return nil, fmt.Errorf("batch on %s: %w", m.Subject(), err)
	}
	if base.msgID != ub.ID.String() {
		return nil, fmt.Errorf("batch on %s: message id %q, want the batch id %s", m.Subject(), base.msgID, ub.ID)
	}
	var out []usageEvent
	var env events.Envelope
	var u events.UsageDecided
	for ub.Next(&env, &u) {
		ev := base
		ev.batch = true
		ev.env, ev.u = env, u
		out = append(out, ev)
	}
	for i := range out {
		out[i].env.Data = &out[i].u
	}
	return out, nil
}

// fetchUsage reads the usage of enforcer id from USAGE: all of its
// messages, which must carry want decisions (any number if want < 0).
func fetchUsage(ctx context.Context, js jetstream.JetStream, id string, want int) ([]usageEvent, error) {
	st, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.SubjectUsagePrefix+">"))
	if err != nil {
		return nil, err
	}
	msgs := 0
	for subject, n := range info.State.Subjects {
		for _, f := range usageFilters(id) {
			if subjectMatches(f, subject) {
				msgs += int(n)
			}
		}
	}
	var out []usageEvent
	if msgs == 0 {
		if want > 0 {
			return nil, fmt.Errorf("no usage of %s stored, want %d events", id, want)
		}
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamUsage, jetstream.OrderedConsumerConfig{FilterSubjects: usageFilters(id)})
	if err != nil {
		return nil, err
	}
	for read := 0; read < msgs; {
		batch, err := cons.Fetch(msgs-read, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			evs, err := decodeUsage(m)
			if err != nil {
				return nil, err
			}
			out = append(out, evs...)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("read %d usage messages of %d", read, msgs)
		}
		read += n
	}
	if want >= 0 && len(out) != want {
		return out, fmt.Errorf("USAGE holds %d usage events of %s, want %d", len(out), id, want)
	}
	return out, nil
}

// subjectMatches reports whether subject matches filter (wildcard "*").
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	if len(f) != len(s) {
		return false
	}
	for i := range f {
		if f[i] != "*" && f[i] != s[i] {
			return false
		}
	}
	return true
}

// readUsage waits until USAGE holds want usage events of enforcer id and
// returns them.
func readUsage(t *testing.T, js jetstream.JetStream, id string, want int) []usageEvent {
	t.Helper()
	var evs []usageEvent
	natstest.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		evs, err = fetchUsage(ctx, js, id, want)
		return err
	})
	return evs
}

// comparable is ev with what legitimately differs between the formats
// taken out: the enforcer id, the event id, and time below microseconds
// (what a batch and ClickHouse keep).
func (ev usageEvent) comparable() usageEvent {
	c := usageEvent{u: ev.u}
	c.u.Enforcer = ""
	c.env.Time = ev.env.Time.Truncate(time.Microsecond).UTC()
	c.env.Type, c.env.Version = ev.env.Type, ev.env.Version
	return c
}

// TestUsageFormatsAgree: the same decisions, enqueued at the same times to
// an enforcer publishing batches and to one publishing single events, give
// the same usage events field by field (times at microseconds), every one
// valid; the batches land under the partition subject of their (tenant,
// holder).
func TestUsageFormatsAgree(t *testing.T) {
	f := newFixture(t)
	src := local(t, f.signer, func(o *Options) { o.Routes = f.routes; o.Service = "" })
	type tenantHolder struct{ tenant, holder string }
	var toks []string
	for _, th := range []tenantHolder{{"acme", "billing-worker"}, {"acme", "reports"}, {"globex", "billing-worker"}, {"globex", "sync_2"}} {
		tok, _ := mint(t, f.signer, func(c *token.Claims) { c.Tenant, c.Holder = th.tenant, th.holder })
		toks = append(toks, tok)
	}
	narrow, _ := mint(t, f.signer, func(c *token.Claims) { c.Scopes = []string{"invoices:list"} })
	forged := toks[0][:len(toks[0])-3] + "xyz"
	agents := []string{"cordon-test/1", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0", "curl/8.5.0 " + toks[1], ""}
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("::ffff:198.51.100.3"), {}}

	type input struct {
		req     *Request
		d       Decision
		at      time.Time
		latency time.Duration
	}
	base := time.Date(2026, 12, 3, 12, 0, 0, 123456789, time.UTC)
	var ins []input
	const n = 600
	for i := range n {
		tok := toks[i%len(toks)]
		switch i % 10 {
		case 7:
			tok = narrow
		case 9:
			tok = forged // token-less denials: folded, count > 1
		}
		req := &Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", Resource: strconv.Itoa(i),
			UserAgent: agents[i%len(agents)], RemoteAddr: addrs[i%len(addrs)]}
		if i%13 == 0 {
			req.Resource = "\xff" + strconv.Itoa(i) // not UTF-8
		}
		if i%17 == 0 {
			req.Device = strings.Repeat("0f", 32)
		}
		d := src.Check(req)
		ins = append(ins, input{req, d, base.Add(time.Duration(i) * 1700 * time.Nanosecond), time.Duration(1000 + i)})
	}
	mod := func(format string) func(*Options) {
		return func(o *Options) { o.UsageFormat = format; o.UsageBatch = 64; o.UsageLinger = time.Hour }
	}
	eb := f.enforcer(t, "edge-fmt-batch", mod(UsageFormatBatch))
	ee := f.enforcer(t, "edge-fmt-event", mod(UsageFormatEvent))
	for _, e := range []*Enforcer{eb, ee} {
		for _, in := range ins {
			e.usage.enqueue(in.req, &in.d, in.at, in.latency)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if eb.Stats().UsagePublished != ee.Stats().UsagePublished {
		t.Fatalf("published %d events in batches and %d single", eb.Stats().UsagePublished, ee.Stats().UsagePublished)
	}
	want := int(ee.Stats().UsagePublished)
	batched := readUsage(t, f.env.JS, "edge-fmt-batch", want)
	single := readUsage(t, f.env.JS, "edge-fmt-event", want)

	key := func(ev usageEvent) string {
		return ev.u.Resource + "|" + ev.u.Reason + "|" + ev.u.SourceIP + "|" + ev.u.KeyID
	}
	bySingle := make(map[string]usageEvent, want)
	for _, ev := range single {
		if ev.batch {
			t.Fatalf("a batch from the event format: %s", ev.subject)
		}
		if _, dup := bySingle[key(ev)]; dup {
			t.Fatalf("two single events keyed %s", key(ev))
		}
		bySingle[key(ev)] = ev
	}
	ids := make(map[string]bool, want)
	msgs := make(map[string]int)
	var folded int64
	for _, ev := range batched {
		if !ev.batch {
			t.Fatalf("a single event from the batch format: %s", ev.subject)
		}
		if err := ev.env.Validate(); err != nil {
			t.Fatalf("batched event %s: %v", key(ev), err)
		}
		p := events.UsagePartition(ev.u.Tenant, ev.u.Holder, events.DefaultUsagePartitions)
		if want := fmt.Sprintf("cordon.usage.part.%d.%s.edge-fmt-batch.%s", p, events.SubjectToken(ev.u.Tenant), events.SubjectToken(ev.u.Holder)); ev.subject != want {
			t.Fatalf("batch stored under %s, want %s", ev.subject, want)
		}
		if ids[ev.env.MsgID()] {
			t.Fatalf("event id %s twice", ev.env.ID)
		}
		ids[ev.env.MsgID()] = true
		msgs[ev.msgID]++
		s, ok := bySingle[key(ev)]
		if !ok {
			t.Fatalf("batched event %s has no single twin", key(ev))
		}
		delete(bySingle, key(ev))
		if got, want := ev.comparable(), s.comparable(); !reflect.DeepEqual(got.u, want.u) || !got.env.Time.Equal(want.env.Time) {
			t.Fatalf("event %s:\n batch  %+v at %v\n single %+v at %v", key(ev), got.u, got.env.Time, want.u, want.env.Time)
		}
		if ev.u.Count > 1 {
			folded += ev.u.Count
		}
	}
	if len(bySingle) != 0 {
		t.Fatalf("%d single events have no batched twin", len(bySingle))
	}
	for id, k := range msgs {
		if k > 64 {
			t.Fatalf("batch %s carries %d records, UsageBatch is 64", id, k)
		}
	}
	if folded == 0 || len(msgs) < 2 {
		t.Fatalf("%d folded denials, %d batches: the test exercises neither", folded, len(msgs))
	}
	if st := eb.Stats(); st.UsageBatches != uint64(len(msgs)) || st.UsageFailed != 0 || st.UsageDropped != 0 {
		t.Fatalf("batch stats %+v, want %d batches", st, len(msgs))
	}
	t.Logf("%d decisions, %d events, %d batches", n, want, len(msgs))
}

// usageStored is the number of usage messages and events of enforcer id
// in USAGE.
func usageStored(t *testing.T, f *fixture, id string) (msgs, evs int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := fetchUsage(ctx, f.env.JS, id, -1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range got {
		seen[ev.msgID] = true
	}
	return len(seen), len(got)
}

// TestUsageBatchFlush: a batch goes out when it has UsageBatch records,
// when it nears UsageBatchBytes, and when UsageLinger has passed, without
// a Flush; a Flush sends what is left.
func TestUsageBatchFlush(t *testing.T) {
	f := newFixture(t)
	tok, _ := mint(t, f.signer, nil)
	long := strings.Repeat("r", events.MaxResourceLen-8)

	t.Run("records", func(t *testing.T) {
		e := f.enforcer(t, "edge-flush-count", func(o *Options) { o.UsageBatch = 10; o.UsageLinger = time.Hour })
		for i := range 25 {
			e.Check(spoolReq(tok, i))
		}
		// Full batches are sent at once; their acknowledgements are awaited
		// when the window ends (here the Flush).
		natstest.WaitFor(t, 30*time.Second, func() error {
			if msgs, evs := usageStored(t, f, "edge-flush-count"); msgs != 2 || evs != 20 {
				return fmt.Errorf("USAGE holds %d events in %d batches before the Flush, want 20 in 2", evs, msgs)
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		readUsage(t, f.env.JS, "edge-flush-count", 25)
		if msgs, _ := usageStored(t, f, "edge-flush-count"); msgs != 3 {
			t.Fatalf("%d batches after the Flush, want 3", msgs)
		}
		if st := e.Stats(); st.UsagePublished != 25 || st.UsageBatches != 3 {
			t.Fatalf("published %d events in %d batches, want 25 in 3", st.UsagePublished, st.UsageBatches)
		}
	})

	t.Run("bytes", func(t *testing.T) {
		const limit = 4 << 10
		e := f.enforcer(t, "edge-flush-bytes", func(o *Options) { o.UsageBatchBytes = limit; o.UsageLinger = time.Hour })
		const n = 40
		for i := range n {
			r := spoolReq(tok, i)
			r.Resource = long + strconv.Itoa(1000+i) // distinct: one dictionary entry each
			e.Check(r)
		}
		natstest.WaitFor(t, 30*time.Second, func() error {
			if msgs, evs := usageStored(t, f, "edge-flush-bytes"); msgs < 2 {
				return fmt.Errorf("USAGE holds %d events in %d batches before the Flush, want batches cut at %d bytes", evs, msgs, limit)
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		evs := readUsage(t, f.env.JS, "edge-flush-bytes", n)
		sizes := map[string]int{}
		for _, ev := range evs {
			if len(ev.data) > limit {
				t.Fatalf("batch %s is %d bytes, UsageBatchBytes is %d", ev.msgID, len(ev.data), limit)
			}
			sizes[ev.msgID] = len(ev.data)
		}
		if len(sizes) < n*events.MaxResourceLen/limit {
			t.Fatalf("%d batches of %v bytes for %d records of about %d bytes", len(sizes), sizes, n, events.MaxResourceLen)
		}
	})

	t.Run("linger", func(t *testing.T) {
		e := f.enforcer(t, "edge-flush-linger", func(o *Options) { o.UsageLinger = 200 * time.Millisecond })
		for i := range 5 {
			e.Check(spoolReq(tok, i))
		}
		natstest.WaitFor(t, 30*time.Second, func() error {
			if st := e.Stats(); st.UsagePublished != 5 || st.UsageBatches != 1 {
				return fmt.Errorf("published %d events in %d batches, want 5 in 1", st.UsagePublished, st.UsageBatches)
			}
			return nil
		})
		readUsage(t, f.env.JS, "edge-flush-linger", 5)
	})
}

// TestUsageBatchSpoolJetStreamOff: JetStream switched off and on again
// while batched decisions keep coming: the batches it does not
// acknowledge are spooled and republished under their batch ids, and
// USAGE ends up with every decision exactly once (no event lost, no event
// id twice).
func TestUsageBatchSpoolJetStreamOff(t *testing.T) {
	natstest.SkipJetStreamToggleUnderRace(t)
	f := newFixture(t)
	const id, n = "edge-batch-off", 4000
	e := f.enforcer(t, id, func(o *Options) { o.SpoolDir = t.TempDir(); o.UsageBatch = 100 })
	tok, _ := mint(t, f.signer, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkPaced(e, tok, 0, n)
	}()
	waitStats(t, e, "some batches published", func(s Stats) bool { return s.UsageBatches > 0 })
	if err := f.env.Server.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	waitStats(t, e, "some events spooled", func(s Stats) bool { return s.UsageSpooled > 0 })
	if err := f.env.Server.EnableJetStream(&server.JetStreamConfig{StoreDir: f.env.Dir}); err != nil {
		t.Fatal(err)
	}
	<-done
	st := waitStats(t, e, "every event published", func(s Stats) bool {
		return s.UsageQueued == 0 && s.UsageSpoolPending == 0 && s.UsagePublished >= n
	})
	if st.UsageDropped != 0 || st.UsageFailed != 0 {
		t.Fatalf("after the outage: %+v", st)
	}
	got := usageOnce(t, f.env.JS, id, n)
	seen := make(map[string]bool, n)
	for _, r := range got {
		seen[r] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct decisions in USAGE, want %d", len(seen), n)
	}
	t.Logf("%d events spooled during the outage, %d batches published", st.UsageSpooled, st.UsageBatches)
}

// TestUsageOptions: the usage format and batch bounds are validated with
// an error that names the value, and a spool's segment bounds a batch.
func TestUsageOptions(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(*Options)
		err    string // empty: valid
		format string
		batch  int
		bytes  int
	}{
		{name: "defaults", format: UsageFormatBatch, batch: DefaultUsageBatch, bytes: events.UsageBatchMaxBytes},
		{name: "event format", mod: func(o *Options) { o.UsageFormat = "event"; o.UsageBatch = 10000 }, format: UsageFormatEvent, batch: 10000, bytes: events.UsageBatchMaxBytes},
		{name: "unknown format", mod: func(o *Options) { o.UsageFormat = "json" }, err: `usage format "json"`},
		{name: "batch too large", mod: func(o *Options) { o.UsageBatch = events.UsageBatchMaxRecords + 1 }, err: "usage batch 4097"},
		{name: "bytes too small", mod: func(o *Options) { o.UsageBatchBytes = 100 }, err: "usage batch bytes 100"},
		{name: "bytes too large", mod: func(o *Options) { o.UsageBatchBytes = 1 << 20 }, err: "usage batch bytes 1048576"},
		{name: "small spool", mod: func(o *Options) { o.SpoolDir = "/nonexistent"; o.SpoolMaxBytes = 64 << 10 }, format: UsageFormatBatch, batch: DefaultUsageBatch, bytes: 4<<10 - 512},
		{name: "large spool", mod: func(o *Options) { o.SpoolDir = "/nonexistent"; o.SpoolMaxBytes = 1 << 30 }, format: UsageFormatBatch, batch: DefaultUsageBatch, bytes: events.UsageBatchMaxBytes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ID: "edge-opts", Service: "invoices"}
			if tc.mod != nil {
				tc.mod(&o)
			}
			got, err := o.withDefaults()
			if tc.err != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want ErrConfig naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.UsageFormat != tc.format || got.UsageBatch != tc.batch || got.UsageBatchBytes != tc.bytes {
				t.Fatalf("format %q batch %d bytes %d, want %q %d %d", got.UsageFormat, got.UsageBatch, got.UsageBatchBytes, tc.format, tc.batch, tc.bytes)
			}
		})
	}
}
