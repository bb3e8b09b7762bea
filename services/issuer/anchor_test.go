package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestKeysEndorsedByTheAnchor checks that every key the issuer publishes
// carries an endorsement by its trust anchor, that the anchor survives a
// restart, and that its files have safe modes.
func TestKeysEndorsedByTheAnchor(t *testing.T) {
	h := newHarness(t)
	first := h.iss.TrustAnchor()
	pub, err := token.LoadAnchorKey(filepath.Join(h.dir, TrustAnchorFile))
	if err != nil {
		t.Fatal(err)
	}
	if pub.String() != first.String() {
		t.Fatal("trust-anchor.pub does not hold the issuer's anchor")
	}
	st, err := os.Stat(filepath.Join(h.dir, "keys", AnchorFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("anchor private key mode %v, want 0600", st.Mode().Perm())
	}
	ring := h.enforcerKeyring()
	if ring.Len() != 1 {
		t.Fatalf("an enforcer trusting the anchor accepts %d keys, want 1", ring.Len())
	}
	if _, err := ring.Verify(h.admin); err != nil {
		t.Fatalf("admin token with the endorsed key: %v", err)
	}

	// Same anchor after a restart: verifiers keep working.
	h.restart()
	if h.iss.TrustAnchor().String() != first.String() {
		t.Fatal("the trust anchor changed across a restart")
	}
}

// TestDataDirTightened: an existing data directory open to others is
// restricted to 0700 when the issuer starts.
func TestDataDirTightened(t *testing.T) {
	h := newHarness(t)
	h.iss.Close()
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.start()
	st, err := os.Stat(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v after start, want 0700", st.Mode().Perm())
	}
}

// TestForeignKeyListedAndRetired: a key written to the keys bucket by
// something other than the issuer is listed (not accepted, not held) and
// can be removed with key retire.
func TestForeignKeyListedAndRetired(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	kv, err := h.env.JS.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.GenerateSigner(h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Created: h.clk.Now()})
	if _, err := kv.Put(ctx, s.KeyID, b); err != nil {
		t.Fatal(err)
	}

	list := call[KeyList](h, "GET", "/v1/keys", h.admin, nil, http.StatusOK)
	var foreign *KeyInfo
	for i, k := range list.Keys {
		switch {
		case k.KeyID == s.KeyID:
			foreign = &list.Keys[i]
		case !k.Held || !k.Published || !k.Accepted || k.Problem != "":
			t.Errorf("issuer key %+v: want held, published and accepted", k)
		}
	}
	if foreign == nil {
		t.Fatalf("the injected key %s is not listed: %+v", s.KeyID, list.Keys)
	}
	if foreign.Held || foreign.Accepted || !foreign.Published || foreign.Problem == "" {
		t.Fatalf("injected key listed as %+v: want published, not held, not accepted, with the reason", *foreign)
	}
	if _, err := h.enforcerKeyring().Key(s.KeyID); err {
		t.Fatal("an enforcer trusting the anchor would accept the injected key")
	}

	res := call[RetireResponse](h, "POST", "/v1/keys/"+s.KeyID+"/retire", h.admin, RetireRequest{Reason: "injected"}, http.StatusOK)
	if !res.Retired {
		t.Fatalf("retire = %+v", res)
	}
	if _, err := kv.Get(ctx, s.KeyID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("injected key still in the bucket after retire: %v", err)
	}
	if r := ledgerOf[*events.KeyRetired](h, s.KeyID); len(r) != 1 || r[0].Reason != "injected" {
		t.Fatalf("key retired events = %+v", r)
	}
	if status, _ := h.do("POST", "/v1/keys/"+s.KeyID+"/retire", h.admin, nil); status != http.StatusNotFound {
		t.Fatalf("retire again: %d, want 404", status)
	}
}
