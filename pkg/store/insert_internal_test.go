package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
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

// TestUsageRowBinarySize: the size an insert allocates for a row is the
// row's length when its strings are valid UTF-8, whatever their lengths
// (one- and two-byte length prefixes), and below it only for invalid
// UTF-8, whose bytes become three-byte U+FFFD.
func TestUsageRowBinarySize(t *testing.T) {
	long := strings.Repeat("r", 200) // a two-byte uvarint length
	for _, c := range []struct {
		name  string
		s     string
		exact bool
	}{
		{"empty", "", true},
		{"short", "GET", true},
		{"127 bytes", strings.Repeat("x", 127), true},
		{"128 bytes", strings.Repeat("x", 128), true},
		{"long", long, true},
		{"16384 bytes", strings.Repeat("y", 1<<14), true},
		{"unicode", "ünïcödé ✓ 🙂", true},
		{"invalid utf-8", "bad \xff\xfe end", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &events.UsageDecided{TokenID: c.s, Tenant: "acme", Holder: c.s, KeyID: "k", Enforcer: "e", Service: "s", SourceIP: "10.0.0.1",
				UserAgent: c.s, Method: "GET", Route: long, Scope: c.s, Decision: "deny", Reason: c.s, LatencyNS: 7, Resource: c.s, Client: c.s, Device: c.s}
			e := events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeUsageDecided, Time: time.Unix(1, 0), Data: p}
			row, err := appendUsageRowBinary(nil, e, p)
			if err != nil {
				t.Fatal(err)
			}
			size := usageRowBinarySize(p)
			if c.exact && size != len(row) || !c.exact && size >= len(row) {
				t.Errorf("size %d for a row of %d bytes (exact: %v)", size, len(row), c.exact)
			}
		})
	}
}

// TestLedgerRows: each ledger payload gives one value per ledger column,
// and the graduated response's fields land in their columns (the JSON
// text the insert sends), others empty.
func TestLedgerRows(t *testing.T) {
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	exp := at.Add(24 * time.Hour)
	tests := []struct {
		name string
		p    events.Payload
		want map[string]string // column → JSON value
	}{
		{"issued", &events.TokenIssued{TokenID: "t", Tenant: "acme", Holder: "h", Actor: "ops", Claims: events.TokenClaims{Expiry: exp}},
			map[string]string{"type": `"issued"`, "step": `""`, "would": `""`, "until": `null`, "rule": `""`, "risk": `0`}},
		{"narrow", &events.TokenRestricted{TokenID: "t", Tenant: "acme", Holder: "h", KeyID: "k1", Step: events.StepNarrow,
			Until: at.Add(time.Hour), Scopes: []string{"a:read"}, Networks: []string{"10.0.0.0/8"}, Actor: "revoker/auditor",
			Reason: "r", Rule: "q", AnomalyID: "an", Risk: 0.25, Expiry: exp},
			map[string]string{"type": `"restricted"`, "kid": `"k1"`, "step": `"narrow"`, "would": `""`, "until": `"2026-03-02 11:00:00.000000"`,
				"scopes": `["a:read"]`, "networks": `["10.0.0.0/8"]`, "actor": `"revoker/auditor"`, "reason": `"r"`, "rule": `"q"`,
				"anomaly_id": `"an"`, "risk": `0.25`, "exp": `"2026-03-03 10:00:00.000000"`, "kind": `""`}},
		{"shadow", &events.TokenRestricted{TokenID: "t", Tenant: "acme", Holder: "h", Step: events.StepShadow, Would: events.StepStepUp,
			Actor: "revoker/auditor", Reason: "r", Expiry: exp},
			map[string]string{"step": `"shadow"`, "would": `"step_up"`, "until": `null`, "scopes": `[]`, "networks": `[]`, "risk": `0`}},
		{"released", &events.TokenReleased{TokenID: "t", Tenant: "acme", Holder: "h", Step: events.StepStepUp, Actor: "ops", Reason: "ok"},
			map[string]string{"type": `"released"`, "step": `"step_up"`, "actor": `"ops"`, "reason": `"ok"`, "until": `null`, "exp": `null`,
				"scopes": `[]`, "rule": `""`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := events.New("test/1", at, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			row, err := toRow(tableLedger, e)
			if err != nil {
				t.Fatal(err)
			}
			if len(row) != len(ledgerColumns) {
				t.Fatalf("%d values for %d columns", len(row), len(ledgerColumns))
			}
			for i, c := range ledgerColumns {
				want, ok := tc.want[c]
				if !ok {
					continue
				}
				got, err := json.Marshal(row[i])
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("%s = %s, want %s", c, got, want)
				}
			}
		})
	}
}
