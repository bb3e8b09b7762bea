package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestAppendUsageRowMatchesJSON holds the hand-written usage row encoder
// byte for byte equal to encoding/json over toRow, for awkward strings too.
func TestAppendUsageRowMatchesJSON(t *testing.T) {
	strs := []string{
		"", "plain", `quote " and backslash \`, "control \x00\x01\x1f\x7f", "\b\f\n\r\t",
		"ünïcödé ✓ 🙂", "bad utf8 \xff\xfe end", "truncated \xe2\x82", "line sep \u2028 para \u2029", "<html>&",
	}
	for i, s := range strs {
		e := events.Envelope{
			ID: uuid.Must(uuid.NewV7()), Type: events.TypeUsageDecided, Time: time.Date(2026, 11, 2, 9, 30, 1, 123456789, time.FixedZone("x", 3600)),
			Source: "t", Version: events.SchemaVersion,
			Data: &events.UsageDecided{TokenID: s, Tenant: "acme", Holder: s, KeyID: s, Enforcer: "e", Service: s, SourceIP: "10.0.0.1",
				UserAgent: s, Method: s, Route: s, Scope: s, Decision: "deny", Reason: s, LatencyNS: int64(i) * 1_000_000_007,
				Count: []int64{0, 1, 300, events.MaxUsageCount}[i%4], Resource: s, Client: s, Device: s},
		}
		row, err := toRow(tableUsage, e)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(row); err != nil {
			t.Fatal(err)
		}
		got := appendUsageRow(nil, e, e.Data.(*events.UsageDecided))
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("string %q:\n got  %s want %s", s, got, want.Bytes())
		}
	}
}

func BenchmarkUsageRow(b *testing.B) {
	e, _ := events.New("bench", time.Now(), &events.UsageDecided{TokenID: uuid.NewString(), Tenant: "acme", Holder: "billing", KeyID: "k1",
		Enforcer: "edge-1", Service: "orders", SourceIP: "10.1.2.3", UserAgent: "go/1.0", Method: "GET", Route: "/orders/{id}",
		Scope: "orders:read", Decision: "allow", Reason: "ok", LatencyNS: 1234})
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendUsageRow(buf[:0], e, e.Data.(*events.UsageDecided))
		}
	})
	b.Run("rowbinary", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = appendUsageRowBinary(buf[:0], e, e.Data.(*events.UsageDecided))
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			row, _ := toRow(tableUsage, e)
			_ = enc.Encode(row)
		}
	})
}

// TestAppendUsageRowBinary: the RowBinary encoder allocates nothing, even
// for invalid UTF-8, writes each string's replacement length right, and
// refuses the values the table cannot hold without appending anything.
func TestAppendUsageRowBinary(t *testing.T) {
	p := &events.UsageDecided{TokenID: "bad \xff\xfe end", Tenant: "acme", Enforcer: "e", Service: "s", SourceIP: "::1",
		Method: "GET", Route: "/", Decision: "allow", Reason: "ok", LatencyNS: 5}
	e := events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeUsageDecided, Time: time.Unix(1, 2500), Data: p}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf, _ = appendUsageRowBinary(buf[:0], e, p) }); n != 0 {
		t.Errorf("%v allocations per row", n)
	}
	got, err := appendUsageRowBinary(nil, e, p)
	if err != nil {
		t.Fatal(err)
	}
	// UUID (16), time (8), then token_id: length 14 (two U+FFFD of 3).
	if us := binary.LittleEndian.Uint64(got[16:24]); us != 1_000_002 {
		t.Errorf("time = %d µs, want 1000002", us)
	}
	if want := "\x0ebad \ufffd\ufffd end"; string(got[24:24+15]) != want {
		t.Errorf("token_id = %q, want %q", got[24:24+15], want)
	}
	for _, c := range []struct {
		name string
		edit func(q *events.UsageDecided)
	}{
		{"decision", func(q *events.UsageDecided) { q.Decision = "Allow" }},
		{"latency", func(q *events.UsageDecided) { q.LatencyNS = -1 }},
		{"count", func(q *events.UsageDecided) { q.Count = 1 << 32 }},
	} {
		q := *p
		c.edit(&q)
		out, err := appendUsageRowBinary([]byte("x"), e, &q)
		if !errors.Is(err, events.ErrInvalidField) || string(out) != "x" {
			t.Errorf("%s: %q, %v; want ErrInvalidField and nothing appended", c.name, out, err)
		}
	}
}
