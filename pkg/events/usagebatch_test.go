package events_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// batchEvent is a valid decision of tenant acme, holder billing, from
// enforcer edge-1, varied by i.
func batchEvent(i int) events.UsageDecided {
	u := events.UsageDecided{
		TokenID: fmt.Sprintf("tok-%d", i%7), Tenant: "acme", Holder: "billing", KeyID: "k1",
		Enforcer: "edge-1", Service: "invoices", SourceIP: fmt.Sprintf("10.0.%d.%d", i%3, i%250),
		UserAgent: "curl/8.5.0", Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
		Decision: events.DecisionAllow, Reason: "ok", LatencyNS: int64(1000 + i),
		Resource: fmt.Sprint(i), Client: "curl/8",
	}
	if i%5 == 0 {
		u.Decision, u.Reason, u.Scope = events.DecisionDeny, "scope_not_granted", ""
	}
	if i%11 == 0 {
		u.SourceIP = "2001:db8::1"
		u.Device = strings.Repeat("ab", 32)
	}
	return u
}

func build(t *testing.T, n int, at time.Time) (string, uuid.UUID, []byte, []events.UsageDecided, []time.Time) {
	t.Helper()
	var b events.UsageBatchBuilder
	if err := b.Reset("enforcer/edge-1", "acme", "edge-1", "billing"); err != nil {
		t.Fatal(err)
	}
	var want []events.UsageDecided
	var times []time.Time
	for i := range n {
		u := batchEvent(i)
		ts := at.Add(time.Duration(i) * 1500 * time.Microsecond)
		if err := b.Add(ts, &u); err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
		want, times = append(want, u), append(times, ts)
	}
	if b.Len() != n {
		t.Fatalf("Len = %d, want %d", b.Len(), n)
	}
	subject, id, data, err := b.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	if est := b.Size(); est < len(data) || est > len(data)*6/5+64 {
		t.Errorf("Size() = %d for %d encoded bytes", est, len(data))
	}
	return subject, id, data, want, times
}

// TestUsageBatchRoundTrip: what an enforcer adds is what the auditor
// reads, field by field, with stable, valid, distinct event ids.
func TestUsageBatchRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	subject, id, data, want, times := build(t, 500, at)
	if subject != "cordon.usage.acme.edge-1.billing" {
		t.Errorf("subject = %q", subject)
	}
	var got events.UsageBatch
	for _, subj := range []string{subject, "cordon.usage.part.5.acme.edge-1.billing"} {
		if err := events.DecodeUsageBatch(subj, data, &got); err != nil {
			t.Fatalf("decode on %s: %v", subj, err)
		}
		if got.ID != id || got.Len() != len(want) || got.Tenant != "acme" || got.Holder != "billing" || got.Enforcer != "edge-1" || got.Source != "enforcer/edge-1" {
			t.Fatalf("header: %+v", got)
		}
		var e events.Envelope
		var u events.UsageDecided
		ids := map[uuid.UUID]bool{}
		i := 0
		for got.Next(&e, &u) {
			if !reflect.DeepEqual(u, want[i]) {
				t.Fatalf("record %d:\n got %+v\nwant %+v", i, u, want[i])
			}
			if !e.Time.Equal(times[i].Truncate(time.Microsecond)) {
				t.Errorf("record %d time %v, want %v", i, e.Time, times[i])
			}
			if err := e.Validate(); err != nil || e.Data != &u {
				t.Fatalf("record %d envelope: %v", i, err)
			}
			if e.ID != events.UsageEventID(id, times[i], i) || ids[e.ID] {
				t.Fatalf("record %d id %v not derived or repeated", i, e.ID)
			}
			ids[e.ID] = true
			// The JSON form of the same event decodes to the same event.
			js, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			e2, u2, err := events.DecodeUsage(js)
			if err != nil || *u2 != u || e2.ID != e.ID || !e2.Time.Equal(e.Time) {
				t.Fatalf("record %d through JSON: %v", i, err)
			}
			i++
		}
		if i != len(want) {
			t.Fatalf("Next gave %d records, want %d", i, len(want))
		}
	}
	// Another batch of the same events has other ids.
	_, id2, data2, _, _ := build(t, 1, at)
	if id2 == id || bytes.Equal(data, data2) {
		t.Error("two batches share an id")
	}
	if events.UsageEventID(id, at, 0) == events.UsageEventID(id2, at, 0) {
		t.Error("two batches give record 0 one event id")
	}
}

// TestUsageBatchBuilderRefuses: the builder keeps a batch to one
// (tenant, holder, enforcer) and to its bounds.
func TestUsageBatchBuilderRefuses(t *testing.T) {
	var b events.UsageBatchBuilder
	u := batchEvent(1)
	if err := b.Add(time.Now(), &u); err == nil {
		t.Error("Add before Reset accepted")
	}
	for _, bad := range [][4]string{
		{"enforcer/x", "acme", "bad.id", "h"},
		{"", "acme", "edge-1", "h"},
		{"enforcer/x", "ac me", "edge-1", "h"},
	} {
		if err := b.Reset(bad[0], bad[1], bad[2], bad[3]); err == nil {
			t.Errorf("Reset%q accepted", bad)
		}
	}
	if err := b.Reset("enforcer/edge-1", "acme", "edge-1", "billing"); err != nil {
		t.Fatal(err)
	}
	other := batchEvent(2)
	other.Holder = "payroll"
	if err := b.Add(time.Now(), &other); err == nil {
		t.Error("an event of another holder joined the batch")
	}
	invalid := batchEvent(3)
	invalid.SourceIP = "not-an-ip"
	if err := b.Add(time.Now(), &invalid); err == nil {
		t.Error("an invalid event joined the batch")
	}
	if _, _, _, err := b.Finish(nil); err == nil {
		t.Error("an empty batch finished")
	}
	for i := 0; !b.Full(); i++ {
		u := batchEvent(i)
		if err := b.Add(time.Now(), &u); err != nil {
			t.Fatalf("Add %d before Full: %v", i, err)
		}
	}
	if b.Len() != events.UsageBatchMaxRecords {
		t.Errorf("full at %d records", b.Len())
	}
	if err := b.Add(time.Now(), &u); err == nil {
		t.Error("Add to a full batch accepted")
	}
	if _, _, data, err := b.Finish(nil); err != nil || len(data) > events.UsageBatchMaxBytes {
		t.Fatalf("full batch: %d bytes, %v", len(data), err)
	}
	// Long distinct strings fill it by bytes first.
	if err := b.Reset("enforcer/edge-1", "acme", "edge-1", "billing"); err != nil {
		t.Fatal(err)
	}
	for i := 0; !b.Full(); i++ {
		u := batchEvent(i)
		u.UserAgent = fmt.Sprintf("%04d%s", i, strings.Repeat("x", 3000))
		if err := b.Add(time.Now(), &u); err != nil {
			t.Fatalf("Add %d before Full: %v", i, err)
		}
	}
	if _, _, data, err := b.Finish(nil); err != nil || len(data) > events.UsageBatchMaxBytes {
		t.Fatalf("batch full by bytes: %d bytes, %v", len(data), err)
	}
}

// TestUsageBatchBuilderRepeatsAndRollback: a builder reused batch after
// batch, with records that repeat the previous one's strings and an Add
// refused halfway through its fields (its new strings rolled back), still
// encodes every accepted record as it was: a reference taken from the
// previous record never names a string the batch lost or another batch's.
func TestUsageBatchBuilderRepeatsAndRollback(t *testing.T) {
	var b events.UsageBatchBuilder
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for round := range 3 {
		if err := b.Reset("enforcer/edge-1", "acme", "edge-1", "billing"); err != nil {
			t.Fatal(err)
		}
		var want []events.UsageDecided
		for i := range 40 {
			u := batchEvent(round*1000 + i/3) // each record three times in a row
			u.TokenID = fmt.Sprintf("r%d-tok-%d", round, i/2)
			if i%10 == 4 {
				// A new token id is added to the dictionary, then the user
				// agent is refused: both must leave the batch unchanged.
				bad := u
				bad.TokenID = fmt.Sprintf("r%d-tok-refused-%d", round, i)
				bad.UserAgent = strings.Repeat("x", 5000)
				if err := b.Add(at, &bad); err == nil {
					t.Fatal("a 5000-byte user agent was accepted")
				}
				u.TokenID = bad.TokenID // the next record uses it after all
			}
			if err := b.Add(at.Add(time.Duration(i)*time.Millisecond), &u); err != nil {
				t.Fatalf("round %d, Add %d: %v", round, i, err)
			}
			want = append(want, u)
		}
		subject, _, data, err := b.Finish(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got events.UsageBatch
		if err := events.DecodeUsageBatch(subject, data, &got); err != nil {
			t.Fatal(err)
		}
		var e events.Envelope
		var u events.UsageDecided
		for i := 0; got.Next(&e, &u); i++ {
			if !reflect.DeepEqual(u, want[i]) {
				t.Fatalf("round %d, record %d:\n got %+v\nwant %+v", round, i, u, want[i])
			}
		}
		if got.Len() != len(want) {
			t.Fatalf("round %d: %d records, want %d", round, got.Len(), len(want))
		}
	}
}

// TestDecodeUsageBatchRejects: every malformed or misattributed batch is
// refused with a reason, and leaves no records behind.
func TestDecodeUsageBatchRejects(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	subject, _, data, _, _ := build(t, 20, at)
	mutate := func(f func([]byte) []byte) []byte { return f(bytes.Clone(data)) }
	cases := []struct {
		name    string
		subject string
		data    []byte
		want    error
	}{
		{"another enforcer's subject", "cordon.usage.acme.edge-2.billing", data, events.ErrMisattributed},
		{"another holder's subject", "cordon.usage.acme.edge-1.payroll", data, events.ErrMisattributed},
		{"another tenant's partition subject", "cordon.usage.part.1.other.edge-1.billing", data, events.ErrMisattributed},
		{"legacy subject", "cordon.usage.acme.edge-1", data, events.ErrUsageBatch},
		{"partition out of range", "cordon.usage.part.64.acme.edge-1.billing", data, events.ErrUsageBatch},
		{"JSON", subject, []byte(`{"id":"x"}`), events.ErrUsageBatch},
		{"empty", subject, nil, events.ErrUsageBatch},
		{"truncated", subject, data[:len(data)-3], events.ErrUsageBatch},
		{"trailing bytes", subject, append(bytes.Clone(data), 0), events.ErrUsageBatch},
		{"flags", subject, mutate(func(b []byte) []byte { b[4] = 1; return b }), events.ErrUsageBatch},
		{"batch id not v7", subject, mutate(func(b []byte) []byte { b[11] = 0x40; return b }), events.ErrUsageBatch},
		{"too large", subject, make([]byte, events.UsageBatchMaxBytes+1), events.ErrUsageBatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b events.UsageBatch
			err := events.DecodeUsageBatch(c.subject, c.data, &b)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if b.Len() != 0 {
				t.Errorf("%d records left after an error", b.Len())
			}
		})
	}
	// A record the builder would refuse is refused by the decoder: the
	// decision string is in the dictionary, so corrupt "allow" there.
	bad := bytes.Replace(bytes.Clone(data), []byte("\x05allow"), []byte("\x05allbw"), 1)
	var b events.UsageBatch
	if err := events.DecodeUsageBatch(subject, bad, &b); !errors.Is(err, events.ErrInvalidField) {
		t.Errorf("a record with decision %q: %v", "allbw", err)
	}
}

// TestDecodeUsageBatchAllocations: decoding reuses the batch's buffers;
// what it allocates does not grow with the records.
func TestDecodeUsageBatchAllocations(t *testing.T) {
	subject, _, data, _, _ := build(t, 1000, time.Now())
	var b events.UsageBatch
	var e events.Envelope
	var u events.UsageDecided
	allocs := testing.AllocsPerRun(20, func() {
		if err := events.DecodeUsageBatch(subject, data, &b); err != nil {
			t.Fatal(err)
		}
		for b.Next(&e, &u) {
		}
	})
	// The dictionary's strings (about 1000 distinct resources, 250
	// addresses and a few more), never one allocation per field.
	if allocs > 2000 {
		t.Errorf("%.0f allocations to decode 1000 records", allocs)
	}
}

// TestUsagePartitionIsTheServers: UsagePartition gives the partition the
// USAGE stream's subject transform stores a batch under, for every count.
func TestUsagePartitionIsTheServers(t *testing.T) {
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range []int{1, 3, 8} {
		cfg := events.Streams(events.StreamOptions{UsagePartitions: p})[1]
		if cfg.Name != events.StreamUsage || events.UsagePartitionsOf(cfg) != p {
			t.Fatalf("stream %s partitions %d, want %d", cfg.Name, events.UsagePartitionsOf(cfg), p)
		}
		if _, err := env.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		s, err := env.JS.Stream(ctx, events.StreamUsage)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		const keys = 400
		for i := range keys {
			tenant, holder := fmt.Sprintf("t%d", i%13), fmt.Sprintf("holder-%d", i)
			if i%50 == 0 {
				holder = "" // token-less: "_"
			}
			if _, err := env.JS.Publish(ctx, events.UsageBatchSubject(tenant, "edge-1", holder), []byte("x")); err != nil {
				t.Fatal(err)
			}
			m, err := s.GetLastMsgForSubject(ctx, events.SubjectUsagePartPrefix+"*."+tenant+".edge-1."+events.SubjectToken(holder))
			if err != nil {
				t.Fatalf("%s/%s: %v", tenant, holder, err)
			}
			got, gt, ge, gh, err := events.ParseUsagePartSubject(m.Subject)
			if err != nil || gt != tenant || ge != "edge-1" || gh != events.SubjectToken(holder) {
				t.Fatalf("stored under %q: %v", m.Subject, err)
			}
			if want := events.UsagePartition(tenant, holder, p); got != want {
				t.Fatalf("P=%d %s/%s: server partition %d, UsagePartition %d", p, tenant, holder, got, want)
			}
		}
	}
	// A per-event subject is stored as published.
	if _, err := env.JS.Publish(ctx, "cordon.usage.acme.edge-1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s, _ := env.JS.Stream(ctx, events.StreamUsage)
	if _, err := s.GetLastMsgForSubject(ctx, "cordon.usage.acme.edge-1"); err != nil {
		t.Errorf("legacy subject: %v", err)
	}
	if events.UsagePartitionsOf(jetstream.StreamConfig{Name: events.StreamUsage}) != 0 {
		t.Error("a stream without a transform has partitions")
	}
}

// FuzzDecodeUsageBatch: no input panics; whatever decodes has only valid
// events, and re-encodes to the same events.
func FuzzDecodeUsageBatch(f *testing.F) {
	var b events.UsageBatchBuilder
	for _, n := range []int{1, 3, 40} {
		if err := b.Reset("enforcer/edge-1", "acme", "edge-1", "billing"); err != nil {
			f.Fatal(err)
		}
		for i := range n {
			u := batchEvent(i)
			if err := b.Add(time.Unix(1764000000, int64(i)*1000), &u); err != nil {
				f.Fatal(err)
			}
		}
		_, _, data, err := b.Finish(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("cordon.usage.acme.edge-1.billing", data)
		f.Add("cordon.usage.part.2.acme.edge-1.billing", data)
	}
	f.Add("cordon.usage.acme.edge-1.billing", []byte("CUB1\x00"))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		var got events.UsageBatch
		if err := events.DecodeUsageBatch(subject, data, &got); err != nil {
			if got.Len() != 0 {
				t.Fatal("records after an error")
			}
			return
		}
		var rb events.UsageBatchBuilder
		if err := rb.Reset(got.Source, got.Tenant, got.Enforcer, got.Holder); err != nil {
			t.Fatalf("decoded header refused by the builder: %v", err)
		}
		var e events.Envelope
		var u events.UsageDecided
		var want []events.UsageDecided
		for got.Next(&e, &u) {
			if err := e.Validate(); err != nil {
				t.Fatalf("decoded an invalid event: %v", err)
			}
			if err := rb.Add(e.Time, &u); err != nil {
				t.Fatalf("decoded event refused by the builder: %v", err)
			}
			want = append(want, u)
		}
		_, _, again, err := rb.Finish(nil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var back events.UsageBatch
		if err := events.DecodeUsageBatch(events.UsageBatchSubject(got.Tenant, got.Enforcer, got.Holder), again, &back); err != nil {
			t.Fatalf("re-encoded batch refused: %v", err)
		}
		for i := 0; back.Next(&e, &u); i++ {
			if u != want[i] {
				t.Fatalf("record %d changed through re-encoding", i)
			}
		}
	})
}

// TestPartitionKey: usage and every ledger event about a token are
// partitioned by its (tenant, holder); other events are not.
func TestPartitionKey(t *testing.T) {
	for _, tc := range []struct {
		p  events.Payload
		ok bool
	}{
		{&events.UsageDecided{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenIssued{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenRotated{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenRevoked{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenExpired{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenRestricted{Tenant: "acme", Holder: "billing"}, true},
		{&events.TokenReleased{Tenant: "acme", Holder: "billing"}, true},
		{&events.AnomalyDetected{Tenant: "acme"}, false},
		{nil, false},
	} {
		tenant, holder, ok := events.PartitionKey(tc.p)
		if ok != tc.ok || ok && (tenant != "acme" || holder != "billing") || !ok && (tenant != "" || holder != "") {
			t.Errorf("%T: %q %q %v, want ok %v", tc.p, tenant, holder, ok, tc.ok)
		}
	}
}
