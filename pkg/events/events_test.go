package events_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

func usage() *events.UsageDecided {
	return &events.UsageDecided{
		TokenID: "01940000-0000-7000-8000-000000000001", Tenant: "acme", Holder: "billing-api",
		Enforcer: "edge-1", Service: "payments", SourceIP: "10.0.0.1", Method: "GET", Route: "GET /invoices/{id}",
		Scope: "invoices:read", Decision: events.DecisionAllow, Reason: "ok", LatencyNS: 1200,
	}
}

func TestRoundTripEveryType(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	payloads := []events.Payload{
		&events.TokenIssued{TokenID: "t1", Tenant: "acme", Holder: "h", KeyID: "k1", Actor: "admin",
			Claims: events.TokenClaims{Scopes: []string{"a:b"}, Audience: []string{"s"}, Networks: []string{"10.0.0.0/8"}, NotBefore: at, Expiry: at.Add(time.Hour)}},
		&events.TokenRotated{TokenID: "t1", SuccessorID: "t2", Tenant: "acme", Holder: "h", GraceUntil: at, Actor: "admin"},
		&events.TokenRevoked{TokenID: "t1", Tenant: "acme", Holder: "h", Kind: events.RevokeToken, Actor: "a", Reason: "r", Expiry: at},
		&events.TokenExpired{TokenID: "t1", Tenant: "acme", Holder: "h", Expiry: at},
		&events.KeyPublished{KeyID: "k1", PublicKey: make([]byte, 32), Actor: "issuer"},
		&events.KeyRetired{KeyID: "k1", Actor: "admin", Reason: "compromised"},
		usage(),
		&events.AnomalyDetected{AnomalyID: "a1", Detector: "new_network", Severity: events.SeverityHigh, TokenID: "t1", Tenant: "acme",
			Holder: "h", EventID: "e1", EventTime: at, Evidence: events.Evidence{Seen: "203.0.113.9", Baseline: "10.0.0.0/24"}},
		&events.PolicyChanged{Digest: "abc", Path: "policy.yaml", Holders: 3, Actor: "issuer"},
	}
	for _, p := range payloads {
		t.Run(string(p.EventType()), func(t *testing.T) {
			e, err := events.New("test/1", at, p)
			if err != nil {
				t.Fatal(err)
			}
			b, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, b)
			}
			if got.ID != e.ID || got.Type != e.Type || !got.Time.Equal(e.Time) {
				t.Fatalf("envelope changed: %+v vs %+v", got, e)
			}
			again, _ := json.Marshal(got)
			if string(again) != string(b) {
				t.Fatalf("payload changed:\n%s\n%s", again, b)
			}
			if s := events.Subject(got); !strings.HasPrefix(s, "cordon.") || strings.Contains(s, "..") {
				t.Fatalf("bad subject %q", s)
			}
		})
	}
}

func encodeMap(t *testing.T, mut func(m map[string]any)) []byte {
	t.Helper()
	e, err := events.New("enforcer/edge-1", time.Time{}, usage())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := events.Encode(e)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	mut(m)
	b, _ = json.Marshal(m)
	return b
}

func TestDecodeRejectsWithReason(t *testing.T) {
	cases := []struct {
		name    string
		mut     func(m map[string]any)
		want    error
		mention string
	}{
		{"unknown type", func(m map[string]any) { m["type"] = "token.stolen" }, events.ErrUnknownType, "token.stolen"},
		{"wrong version", func(m map[string]any) { m["v"] = 2 }, events.ErrVersion, "v=2"},
		{"missing version", func(m map[string]any) { delete(m, "v") }, events.ErrMissingField, "v"},
		{"missing id", func(m map[string]any) { delete(m, "id") }, events.ErrMissingField, "id"},
		{"v4 id", func(m map[string]any) { m["id"] = "9b2c1b4e-3f0a-4c8e-9d55-0d2b5f0c6a11" }, events.ErrInvalidField, "UUIDv7"},
		{"missing time", func(m map[string]any) { delete(m, "time") }, events.ErrMissingField, "time"},
		{"missing data", func(m map[string]any) { delete(m, "data") }, events.ErrMissingField, "data"},
		{"null data", func(m map[string]any) { m["data"] = nil }, events.ErrMissingField, "data"},
		{"unknown envelope field", func(m map[string]any) { m["token"] = "cordon_x" }, events.ErrMalformed, "token"},
		{"unknown payload field", func(m map[string]any) { m["data"].(map[string]any)["token"] = "cordon_x" }, events.ErrMalformed, "token"},
		{"missing payload field", func(m map[string]any) { delete(m["data"].(map[string]any), "enforcer") }, events.ErrMissingField, "enforcer"},
		{"bad decision", func(m map[string]any) { m["data"].(map[string]any)["decision"] = "maybe" }, events.ErrInvalidField, "decision"},
		{"bad ip", func(m map[string]any) { m["data"].(map[string]any)["source_ip"] = "10.0.0.300" }, events.ErrInvalidField, "source_ip"},
		{"bad tenant", func(m map[string]any) { m["data"].(map[string]any)["tenant"] = "acme.>" }, events.ErrInvalidField, "tenant"},
		{"type mismatch", func(m map[string]any) { m["type"] = "token.expired" }, events.ErrMalformed, "decision"},
		{"negative count", func(m map[string]any) { deny(m)["count"] = -1 }, events.ErrInvalidField, "count"},
		{"count beyond its column", func(m map[string]any) { deny(m)["count"] = int64(events.MaxUsageCount) + 1 }, events.ErrInvalidField, "count"},
		{"counted allow", func(m map[string]any) {
			d := deny(m)
			d["decision"], d["reason"], d["count"] = "allow", "ok", 2
		}, events.ErrInvalidField, "count"},
		{"counted denial of a token", func(m map[string]any) {
			d := deny(m)
			d["token_id"], d["count"] = "01940000-0000-7000-8000-000000000001", 2
		}, events.ErrInvalidField, "count"},
		{"fractional count", func(m map[string]any) { deny(m)["count"] = 1.5 }, events.ErrMalformed, "count"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := events.Decode(encodeMap(t, c.mut))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %q does not name %q", err, c.mention)
			}
		})
	}
	if _, err := events.Decode([]byte("{")); !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := events.Decode(append(encodeMap(t, func(map[string]any) {}), []byte(`{}`)...)); !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("trailing: %v", err)
	}
}

// deny turns the usage event of m into a token-less denial and returns its
// data.
func deny(m map[string]any) map[string]any {
	d := m["data"].(map[string]any)
	for _, k := range []string{"token_id", "tenant", "holder", "kid", "scope"} {
		delete(d, k)
	}
	d["decision"], d["reason"] = "deny", "missing"
	return d
}

// TestUsageCount: a usage event may stand for several token-less denials;
// absent, the count is 1, and an event without it reads as before.
func TestUsageCount(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	u := &events.UsageDecided{Enforcer: "edge-1", Service: "payments", SourceIP: "203.0.113.9", Method: "GET",
		Route: "/invoices/{id}", Decision: events.DecisionDeny, Reason: "missing", Count: 300}
	e, err := events.New("enforcer/edge-1", at, u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"count":300`) {
		t.Fatalf("count not encoded: %s", b)
	}
	_, got, err := events.DecodeAs[*events.UsageDecided](b)
	if err != nil || got.Count != 300 || got.Requests() != 300 {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	one := usage()
	if e, err = events.New("enforcer/edge-1", at, one); err != nil {
		t.Fatal(err)
	}
	if b, err = events.Encode(e); err != nil || strings.Contains(string(b), "count") {
		t.Fatalf("count written for a single decision: %s %v", b, err)
	}
	if one.Requests() != 1 {
		t.Fatalf("absent count stands for %d requests", one.Requests())
	}
	// A committed v1 event of a token-less denial without count reads as one.
	fx, err := os.ReadFile("../../testdata/events/usage-deny-v6.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err = events.DecodeAs[*events.UsageDecided](fx); err != nil || got.Requests() != 1 {
		t.Fatalf("fixture: %+v %v", got, err)
	}
	fx, err = os.ReadFile("../../testdata/events/usage-deny-count.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err = events.DecodeAs[*events.UsageDecided](fx); err != nil || got.Requests() != 300 {
		t.Fatalf("counted fixture: %+v %v", got, err)
	}
}

func TestDecodeAs(t *testing.T) {
	b := encodeMap(t, func(map[string]any) {})
	if _, u, err := events.DecodeAs[*events.UsageDecided](b); err != nil || u.Enforcer != "edge-1" {
		t.Fatalf("got %v %v", u, err)
	}
	if _, _, err := events.DecodeAs[*events.TokenIssued](b); !errors.Is(err, events.ErrTypeMismatch) {
		t.Fatalf("got %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"acme", "billing-api", "A_1"} {
		if err := events.ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", strings.Repeat("x", 65)} {
		if err := events.ValidateName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzDecode: arbitrary bytes never panic the decoder, and what it accepts
// re-encodes and decodes to the same event.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/events/*.json")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := events.Decode(b)
		if err != nil {
			return
		}
		out, err := events.Encode(e)
		if err != nil {
			t.Fatalf("accepted event does not re-encode: %v", err)
		}
		if _, err := events.Decode(out); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
	})
}

// TestIsReadScope: only a last segment that is a read verb makes a read
// scope; look-alikes do not.
func TestIsReadScope(t *testing.T) {
	for scope, want := range map[string]bool{
		"invoices:read": true, "invoices:list": true, "orders.invoices.view": true, "a:b:read": true,
		"invoices:write": false, "read": false, "thread": false, "invoices:thread": false, "bread:x": false,
		"invoices:read:all": false, "invoices:readonly": false, "invoices:": false, ":read": true, "": false, "invoices:READ": false,
	} {
		if got := events.IsReadScope(scope); got != want {
			t.Errorf("IsReadScope(%q) = %v, want %v", scope, got, want)
		}
	}
}
