package events

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func canonicalUsage(t testing.TB) []byte {
	t.Helper()
	e, err := New("enforcer/edge-1", time.Date(2026, 11, 2, 9, 30, 0, 123456789, time.UTC), &UsageDecided{
		TokenID: "019cabd9-0000-7000-8000-000000000001", Tenant: "acme", Holder: "billing",
		KeyID: "k1", Enforcer: "edge-1", Service: "orders", SourceIP: "10.1.2.3", UserAgent: "go/1.0",
		Method: "GET", Route: "/orders/{id}", Scope: "orders:read", Decision: DecisionAllow, Reason: "ok", LatencyNS: 1234,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countedUsage is an enforcer's folded event: count token-less denials.
func countedUsage(t testing.TB, count int64) []byte {
	t.Helper()
	e, err := New("enforcer/edge-1", time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC), &UsageDecided{
		Enforcer: "edge-1", Service: "orders", SourceIP: "203.0.113.9", UserAgent: "curl/8", Method: "GET",
		Route: "/orders/{id}", Scope: "orders:read", Decision: DecisionDeny, Reason: "missing", LatencyNS: 800, Count: count,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// contextUsage is a usage event with the request context: resource,
// client and device.
func contextUsage(t testing.TB) []byte {
	t.Helper()
	e, err := New("enforcer/edge-1", time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC), &UsageDecided{
		TokenID: "019cabd9-0000-7000-8000-000000000001", Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1",
		Service: "orders", SourceIP: "10.1.2.3", UserAgent: "curl/8.5.0", Method: "GET", Route: "/orgs/{org}/repos/{repo}",
		Scope: "orders:read", Decision: DecisionAllow, Reason: "ok", LatencyNS: 1234,
		Resource: "acme/widgets", Client: "curl/8", Device: strings.Repeat("0f", 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameAsDecode checks DecodeUsage against DecodeAs on b: both fail
// with the same message, or both succeed with equal results.
func sameAsDecode(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	we, wu, werr := DecodeAs[*UsageDecided](b)
	ge, gu, gerr := DecodeUsage(b)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("input %q:\n DecodeUsage error %v\n DecodeAs error %v", b, gerr, werr)
	}
	if werr == nil && (!reflect.DeepEqual(we, ge) || !reflect.DeepEqual(wu, gu)) {
		t.Fatalf("input %q:\n DecodeUsage %+v %+v\n DecodeAs %+v %+v", b, ge, gu, we, wu)
	}
	_, _, fast = fastUsage(b)
	return fast
}

func TestDecodeUsageMatchesEventsDecode(t *testing.T) {
	canon := string(canonicalUsage(t))
	cases := []struct {
		name     string
		in       string
		wantFast bool
	}{
		{"canonical", canon, true},
		{"spaces", " " + strings.ReplaceAll(strings.ReplaceAll(canon, ",", " ,\n "), `":`, "\" \t: ") + "\r\n", true},
		{"trailing newline", canon + "\n", true},
		{"trailing garbage", canon + "x", false},
		{"trailing brace", canon + "}", false},
		{"escape in string", strings.Replace(canon, `go/1.0`, `go\/1.0`, 1), false},
		{"non-ascii", strings.Replace(canon, `go/1.0`, `gö/1.0`, 1), false},
		{"invalid utf8", strings.Replace(canon, `go/1.0`, "g\xff/1.0", 1), false},
		{"unknown envelope key", strings.Replace(canon, `"v":1`, `"v":1,"extra":2`, 1), false},
		{"unknown data key", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"extra":"x"`, 1), false},
		{"upper-case key", strings.Replace(canon, `"source_ip"`, `"SOURCE_IP"`, 1), false},
		{"duplicate key", strings.Replace(canon, `"v":1`, `"v":1,"v":1`, 1), false},
		{"duplicate data key", strings.Replace(canon, `"reason":"ok"`, `"reason":"ok","reason":"ok"`, 1), false},
		{"null value", strings.Replace(canon, `"scope":"orders:read"`, `"scope":null`, 1), false},
		{"float latency", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234.0`, 1), false},
		{"exponent latency", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1e3`, 1), false},
		{"leading zero", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":01234`, 1), false},
		{"negative latency", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":-5`, 1), true},
		{"minus zero", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":-0`, 1), true},
		{"huge latency", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":99999999999999999999`, 1), false},
		{"string latency", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":"1234"`, 1), false},
		{"version 2", strings.Replace(canon, `"v":1`, `"v":2`, 1), false},
		{"missing version", strings.Replace(canon, `,"v":1`, ``, 1), false},
		{"bad decision", strings.Replace(canon, `"decision":"allow"`, `"decision":"maybe"`, 1), true},
		{"bad ip", strings.Replace(canon, `"source_ip":"10.1.2.3"`, `"source_ip":"10.1.2"`, 1), true},
		{"empty source", strings.Replace(canon, `"source":"enforcer/edge-1"`, `"source":""`, 1), true},
		{"bad uuid", strings.Replace(canon, `"id":"`, `"id":"x`, 1), false},
		{"nil uuid", canon[:7] + `00000000-0000-0000-0000-000000000000` + canon[43:], true},
		{"bad time", strings.Replace(canon, `"time":"2026-11-02T09:30:00.123456789Z"`, `"time":"2026-11-02 09:30:00"`, 1), false},
		{"offset time", strings.Replace(canon, `"time":"2026-11-02T09:30:00.123456789Z"`, `"time":"2026-11-02T10:30:00+01:00"`, 1), true},
		{"other type", strings.Replace(canon, `"type":"usage.decided"`, `"type":"token.revoked"`, 1), false},
		{"unknown type", strings.Replace(canon, `"type":"usage.decided"`, `"type":"nope"`, 1), false},
		{"empty data", canon[:strings.Index(canon, `"data":`)] + `"data":{}}`, true},
		{"count on an allow", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":7`, 1), true},
		{"count one", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":1`, 1), true},
		{"count zero", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":0`, 1), true},
		{"count negative", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":-3`, 1), true},
		{"count float", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":2.0`, 1), false},
		{"count string", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":"2"`, 1), false},
		{"count huge", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":4294967296`, 1), true},
		{"count overflow", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":99999999999999999999`, 1), false},
		{"duplicate count", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"count":1,"count":1`, 1), false},
		{"counted token-less denial", string(countedUsage(t, 300)), true},
		{"counted denial at the bound", string(countedUsage(t, MaxUsageCount)), true},
		{"counted denial beyond the bound", strings.Replace(string(countedUsage(t, 300)), `"count":300`, `"count":4294967296`, 1), true},
		{"request context", string(contextUsage(t)), true},
		{"resource alone", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"42"`, 1), true},
		{"empty resource", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":""`, 1), true},
		{"resource with an escape", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"a\"b"`, 1), false},
		{"non-ascii resource", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"ünï"`, 1), false},
		{"resource too long", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"`+strings.Repeat("r", MaxResourceLen+1)+`"`, 1), true},
		{"resource at the bound", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"`+strings.Repeat("r", MaxResourceLen)+`"`, 1), true},
		{"resource number", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":42`, 1), false},
		{"null resource", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":null`, 1), false},
		{"duplicate resource", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"resource":"1","resource":"2"`, 1), false},
		{"client too long", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"client":"`+strings.Repeat("c", MaxClientLen+1)+`"`, 1), true},
		{"duplicate client", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"client":"a","client":"a"`, 1), false},
		{"device", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"device":"`+strings.Repeat("ab", 32)+`"`, 1), true},
		{"upper-case device", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"device":"`+strings.Repeat("AB", 32)+`"`, 1), true},
		{"short device", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"device":"abcd"`, 1), true},
		{"duplicate device", strings.Replace(canon, `"latency_ns":1234`, `"latency_ns":1234,"device":"","device":""`, 1), false},
		{"null data", canon[:strings.Index(canon, `"data":`)] + `"data":null}`, false},
		{"data before type", `{"data":{},"type":"usage.decided"}`, false},
		{"not an object", `[1,2]`, false},
		{"empty", ``, false},
		{"truncated", canon[:len(canon)/2], false},
	}
	fixture, err := os.ReadFile("../../testdata/events/usage-allow-context.json")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		name     string
		in       string
		wantFast bool
	}{"committed fixture with context", string(bytes.TrimSpace(fixture)), true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameAsDecode(t, []byte(c.in)); fast != c.wantFast {
				t.Errorf("fast path taken = %v, want %v", fast, c.wantFast)
			}
		})
	}
}

// FuzzDecodeUsage holds DecodeUsage equal to DecodeAs on any input.
func FuzzDecodeUsage(f *testing.F) {
	f.Add(canonicalUsage(f))
	f.Add(countedUsage(f, 300))
	f.Add(contextUsage(f))
	f.Add([]byte(`{"id":"01a21da2-389f-7a21-89d0-61b7381e2e20","type":"usage.decided","time":"2026-11-27T15:31:40Z","source":"s","v":1,"data":{"enforcer":"e","service":"s","source_ip":"::1","method":"GET","route":"/","decision":"deny","reason":"x","latency_ns":0}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsDecode(t, b)
	})
}

func BenchmarkDecodeUsage(b *testing.B) {
	data := canonicalUsage(b)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeUsage(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	withContext := contextUsage(b)
	b.Run("fast with request context", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeUsage(withContext); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeAs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeAs[*UsageDecided](data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
