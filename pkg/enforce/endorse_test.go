package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// waitKeysRevision waits until e has applied the keys bucket up to rev.
func waitKeysRevision(t *testing.T, e *Enforcer, rev uint64) {
	t.Helper()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := e.KeysRevision(); got < rev {
			return fmt.Errorf("keys revision %d, want %d", got, rev)
		}
		return nil
	})
}

// TestInjectedKeysAreNotAccepted writes signing keys into the keys bucket
// the way an attacker with write access to it would, and checks that no
// token signed by them is accepted: only keys endorsed by the configured
// trust anchor verify.
func TestInjectedKeysAreNotAccepted(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	srv := f.proxy(t, e)
	legit, _ := mint(t, f.signer, nil)
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", legit, nil); r.status != 200 {
		t.Fatalf("legit token: %d %q", r.status, r.reason)
	}
	kv := f.kv(t, events.BucketKeys)
	put := func(kid string, rec events.KeyRecord) uint64 {
		t.Helper()
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := kv.Put(context.Background(), kid, b)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	otherAnchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		// record returns the bucket entry for the attacker's signer.
		record func(s token.Signer) events.KeyRecord
	}{
		{"no endorsement", func(s token.Signer) events.KeyRecord {
			return events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Created: time.Now()}
		}},
		{"endorsed by an untrusted anchor", func(s token.Signer) events.KeyRecord {
			return otherAnchor.EndorsedRecord(events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Created: time.Now()})
		}},
		{"untrusted anchor claiming the trusted anchor's id", func(s token.Signer) events.KeyRecord {
			rec := otherAnchor.EndorsedRecord(events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Created: time.Now()})
			rec.Anchor = f.env.Anchor.Public().ID()
			return rec
		}},
		{"legit endorsement of another key id replayed", func(s token.Signer) events.KeyRecord {
			// The trusted anchor endorsed f.signer's key under its own kid;
			// the attacker reuses that endorsement for its own kid.
			good := f.env.Anchor.EndorsedRecord(events.KeyRecord{KeyID: f.signer.KeyID, PublicKey: f.signer.Public()})
			return events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Anchor: good.Anchor, Endorsement: good.Endorsement}
		}},
		{"legit endorsement with the attacker's public key", func(s token.Signer) events.KeyRecord {
			good := f.env.Anchor.EndorsedRecord(events.KeyRecord{KeyID: s.KeyID, PublicKey: f.signer.Public()})
			good.PublicKey = s.Public()
			return good
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attacker := newSigner(t)
			waitKeysRevision(t, e, put(attacker.KeyID, tc.record(attacker)))
			forged, _ := mint(t, attacker, nil)
			if r := do(t, nil, "GET", srv.URL+"/invoices/1", forged, nil); r.status == 200 || r.reason != string(ReasonUnknownKey) {
				t.Fatalf("token signed by the injected key: %d %q, want 401 unknown_key", r.status, r.reason)
			}
			if _, ok := e.keys.Key(attacker.KeyID); ok {
				t.Fatal("the injected key is in the keyring")
			}
		})
	}

	// Overwriting the legit key's entry with the attacker's public key does
	// not make the attacker's tokens verify, and the legit key, no longer
	// vouched for by its entry, stops verifying too (fail closed).
	t.Run("legit key id overwritten", func(t *testing.T) {
		attacker := token.Signer{KeyID: f.signer.KeyID, Key: newSigner(t).Key}
		waitKeysRevision(t, e, put(f.signer.KeyID, events.KeyRecord{KeyID: f.signer.KeyID, PublicKey: attacker.Public()}))
		forged, _ := mint(t, attacker, nil)
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", forged, nil); r.status == 200 {
			t.Fatalf("token signed by the overwriting key was allowed")
		}
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", legit, nil); r.status == 200 {
			t.Fatalf("legit token still allowed after its key's entry was replaced by an unendorsed one")
		}
		// The issuer publishing the endorsed record again restores it.
		waitKeysRevision(t, e, f.publishKey(t, f.signer))
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", legit, nil); r.status != 200 {
			t.Fatalf("legit token after re-publishing: %d %q", r.status, r.reason)
		}
	})

	// A replay of the bucket (as after a restart) applies the same rule.
	t.Run("after a restart", func(t *testing.T) {
		attacker := newSigner(t)
		put(attacker.KeyID, events.KeyRecord{KeyID: attacker.KeyID, PublicKey: attacker.Public()})
		e2 := f.enforcer(t, "edge-2", nil)
		if _, ok := e2.keys.Key(attacker.KeyID); ok {
			t.Fatal("an enforcer starting on the bucket took the injected key")
		}
		if _, ok := e2.keys.Key(f.signer.KeyID); !ok {
			t.Fatal("an enforcer starting on the bucket lacks the endorsed key")
		}
	})
}

func TestStartNeedsTrustAnchor(t *testing.T) {
	f := newFixture(t)
	e, err := New(Options{ID: "edge-1", Routes: f.routes, DisableUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.Start(context.Background(), f.env.JS)
	if !errors.Is(err, token.ErrNoAnchor) || !errors.Is(err, ErrConfig) {
		t.Fatalf("Start without a trust anchor: %v, want ErrNoAnchor", err)
	}
}
