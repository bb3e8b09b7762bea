package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestNewOrigin(t *testing.T) {
	for _, src := range []string{"revoker", "revoker/up", "", "a.b*c>d e", strings.Repeat("x", 100)} {
		o := NewOrigin(src)
		if err := ValidateName(o); err != nil {
			t.Errorf("NewOrigin(%q) = %q: %v", src, o, err)
		}
		if o == NewOrigin(src) {
			t.Errorf("NewOrigin(%q) twice gave %q: want a new origin per run", src, o)
		}
	}
}

func TestDecodeDenyBroadcast(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	good := DenyChange{Origin: "revoker-1a2b3c4d", Seq: 3, Key: DenyKeyToken("t1"), Value: json.RawMessage(`{"kind":"token"}`), At: at}
	change := func(mod func(*DenyChange)) []byte {
		c := good
		mod(&c)
		b, _ := json.Marshal(c)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"valid", change(func(*DenyChange) {}), true},
		{"not json", []byte(`{`), false},
		{"seq 0", change(func(c *DenyChange) { c.Seq = 0 }), false},
		{"origin with a dot", change(func(c *DenyChange) { c.Origin = "a.b" }), false},
		{"origin wildcard", change(func(c *DenyChange) { c.Origin = ">" }), false},
		{"key wildcard", change(func(c *DenyChange) { c.Key = "tok.*" }), false},
		{"empty key", change(func(c *DenyChange) { c.Key = "" }), false},
		{"value too large", change(func(c *DenyChange) {
			c.Value = json.RawMessage(`"` + strings.Repeat("x", MaxDenyValue) + `"`)
		}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeDenyChange(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeDenyChange: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	hb := func(mod func(*DenyHeartbeat)) []byte {
		h := DenyHeartbeat{Origin: good.Origin, Seq: 5, KVRev: 9, Pending: []DenyChange{good}, Interval: time.Second, At: at}
		mod(&h)
		b, _ := json.Marshal(h)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"valid", hb(func(*DenyHeartbeat) {}), true},
		{"no interval", hb(func(h *DenyHeartbeat) { h.Interval = 0 }), false},
		{"pending of another origin", hb(func(h *DenyHeartbeat) { h.Pending[0].Origin = "other-1" }), false},
		{"pending past the heartbeat's seq", hb(func(h *DenyHeartbeat) { h.Seq = 2 }), false},
		{"pending already written", hb(func(h *DenyHeartbeat) { h.Pending[0].KVRev = 4 }), false},
		{"too many pending", hb(func(h *DenyHeartbeat) {
			h.Pending = make([]DenyChange, MaxDenyPending+1)
		}), false},
	} {
		t.Run("heartbeat "+tc.name, func(t *testing.T) {
			_, err := DecodeDenyHeartbeat(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeDenyHeartbeat: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	reply, _ := json.Marshal(DenyResyncReply{Changes: []DenyChange{good}, Complete: true, Seq: 3})
	if _, err := DecodeDenyResyncReply(good.Origin, reply); err != nil {
		t.Fatalf("resync reply: %v", err)
	}
	if _, err := DecodeDenyResyncReply("other-1", reply); err == nil {
		t.Fatal("a resync reply carrying another origin's change was accepted")
	}
}

// FuzzDecodeDenyBroadcast: the broadcast decoders never panic, and what
// they accept is valid and survives a round trip.
func FuzzDecodeDenyBroadcast(f *testing.F) {
	f.Add([]byte(`{"origin":"revoker-1a2b3c4d","seq":1,"key":"tok.t1","value":{"kind":"token"},"at":"2026-12-03T10:00:00Z"}`))
	f.Add([]byte(`{"origin":"revoker-1a2b3c4d","seq":2,"kv_rev":9,"pending":[{"origin":"revoker-1a2b3c4d","seq":1,"key":"tok.t1","value":{}}],"interval_ns":250000000}`))
	f.Add([]byte(`{"changes":[{"origin":"revoker-1a2b3c4d","seq":1,"key":"holder.acme.web","value":"x"}],"complete":true,"seq":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := DecodeDenyChange(b); err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted an invalid change: %v", err)
			}
			again, _ := json.Marshal(c)
			if _, err := DecodeDenyChange(again); err != nil {
				t.Fatalf("re-encoded change refused: %v", err)
			}
		}
		if h, err := DecodeDenyHeartbeat(b); err == nil {
			if err := h.Validate(); err != nil {
				t.Fatalf("accepted an invalid heartbeat: %v", err)
			}
		}
		_, _ = DecodeDenyResyncReply("revoker-1a2b3c4d", b)
	})
}
