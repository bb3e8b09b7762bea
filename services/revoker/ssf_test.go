package revoker_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/ssf"
	"github.com/cordonhq/cordon/services/revoker"
)

// setReceiver is a test receiver of pushed SETs (standing in for another
// system): it verifies them with the key the revoker publishes, fetched
// from the revoker's JWKS endpoint, and fails the first `fail` pushes.
type setReceiver struct {
	mu   sync.Mutex
	sets []ssf.SET
	fail int
	keys *ssf.VerifyOptions
}

func (s *setReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	(&ssf.Receiver{Verify: *s.keys, Handle: func(set ssf.SET) error {
		s.sets = append(s.sets, set)
		return nil
	}}).ServeHTTP(w, r)
}

func (s *setReceiver) got() []ssf.SET {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ssf.SET(nil), s.sets...)
}

// TestSSFTransmitsRevocations: a revoked token becomes a credential-change
// SET (change_type revoke) that verifies with the key the revoker
// publishes at /.well-known/jwks.json, names the token by id (never its
// string), its holder and tenant; a receiver that was down gets it once it
// is back.
func TestSSFTransmitsRevocations(t *testing.T) {
	signer, err := ssf.LoadOrCreateSigner(filepath.Join(t.TempDir(), "ssf.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rcv := &setReceiver{fail: 2}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	f := setup(t, func(o *revoker.Options) {
		o.SSF = revoker.SSFOptions{Signer: signer, Issuer: "https://cordon.test", Audience: "https://idp.test",
			Receivers: []*ssf.Pusher{{Endpoint: srv.URL}}}
	})
	// The receiver's keys come from the revoker's published JWKS.
	pub := httptest.NewServer(f.r.SSFHandler())
	defer pub.Close()
	resp, err := http.Get(pub.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	keys, err := ssf.ParseJWKS(body)
	if err != nil {
		t.Fatalf("published JWKS %s: %v", body, err)
	}
	rcv.keys = &ssf.VerifyOptions{Keys: keys, Issuer: "https://cordon.test", Audience: "https://idp.test"}

	tk := f.issue("acme", "billing-api", f.signer.KeyID, time.Minute, time.Hour, false)
	f.waitKnown(tk)
	if rep, raw := f.call(revoker.CommandRequest{Kind: events.RevokeToken, TokenID: tk.id, Reason: "leaked in a log"}); !rep.OK {
		t.Fatalf("revoke: %s", raw)
	}
	natstest.WaitFor(t, time.Minute, func() error {
		if n := len(rcv.got()); n != 1 {
			return fmt.Errorf("%d SETs received (stats %+v)", n, f.r.SSFStats())
		}
		return nil
	})
	set := rcv.got()[0]
	ev := set.Events[ssf.EventCredentialChange]
	if ev["change_type"] != "revoke" || ev["token_id"] != tk.id || set.Subject.Name() != "billing-api" ||
		set.Subject.Tenant.Name() != "acme" || set.Subject.Token.ID != tk.id {
		t.Fatalf("SET %+v", set)
	}
	// The receiver keeps the SET before it answers: the revoker counts it
	// once the answer arrives.
	natstest.WaitFor(t, 30*time.Second, func() error {
		if st := f.r.SSFStats(); st.Sent != 1 || st.Retried < 2 {
			return fmt.Errorf("stats %+v, want 1 sent after 2 retries", st)
		}
		return nil
	})

	// A quarantine is a session-revoked event; a shadow step is nothing.
	q := f.issue("acme", "billing-api", f.signer.KeyID, time.Minute, time.Hour, false)
	f.waitKnown(q)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.r.Shadow(ctx, revoker.TokenInfo{ID: q.id, Tenant: q.tenant, Holder: q.holder, Expiry: q.expiry}, events.StepRevoke,
		"test", "trial", "trial", "", 0); err != nil {
		t.Fatal(err)
	}
	if rep, err := revoker.CallRestrict(ctx, f.env.NC, revoker.RestrictCommand{Auth: f.admin, TokenID: q.id, Step: events.StepNarrow,
		Networks: []string{"10.20.0.0/16"}, Reason: "odd use"}); err != nil || !rep.OK {
		t.Fatalf("restrict: %+v %v", rep, err)
	}
	natstest.WaitFor(t, time.Minute, func() error {
		if n := len(rcv.got()); n != 2 {
			return fmt.Errorf("%d SETs received (stats %+v)", n, f.r.SSFStats())
		}
		return nil
	})
	set = rcv.got()[1]
	ev, ok := set.Events[ssf.EventSessionRevoked]
	if !ok || len(set.Events) != 1 || ev["token_id"] != q.id || ev["cordon_step"] != events.StepNarrow || ev["initiating_entity"] != "admin" ||
		set.Subject.Name() != "billing-api" || set.Subject.Token.ID != q.id {
		t.Fatalf("restriction SET %+v", set)
	}
}

// TestSSFReceivesAccountDisabled: an identity provider's account-disabled
// event, signed with its key, revokes every token of the matching holder
// and no other; one signed with another key, for another audience, or
// naming no subject changes nothing.
func TestSSFReceivesAccountDisabled(t *testing.T) {
	idpKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	idp, err := ssf.NewSigner(idpKey)
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, func(o *revoker.Options) {
		o.SSF = revoker.SSFOptions{Tenant: "acme", ReceiveAuthorization: "Bearer idp-secret",
			Receive: ssf.VerifyOptions{Keys: idp.JWKS(), Issuer: "https://idp.test", Audience: "https://cordon.test", MaxAge: time.Hour}}
	})
	a1 := f.issue("acme", "ci-bot", f.signer.KeyID, time.Minute, time.Hour, false)
	a2 := f.issue("acme", "ci-bot", f.signer.KeyID, time.Minute, time.Hour, false)
	other := f.issue("acme", "reporting", f.signer.KeyID, time.Minute, time.Hour, false)
	f.waitKnown(a1, a2, other)
	srv := httptest.NewServer(f.r.SSFHandler())
	defer srv.Close()
	push := func(s *ssf.Signer, set ssf.SET) int {
		t.Helper()
		tok, err := s.Sign(set)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ssf/events", bytes.NewReader([]byte(tok)))
		req.Header.Set("Content-Type", ssf.MediaType)
		req.Header.Set("Authorization", "Bearer idp-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	disabled := func(sub *ssf.Subject, aud string) ssf.SET {
		return ssf.SET{Issuer: "https://idp.test", ID: newID(t), IssuedAt: time.Now().Unix(), Audience: ssf.Audience{aud}, Subject: sub,
			Events: ssf.EventsMap{ssf.EventAccountDisabled: {"reason": "hijacking"}}}
	}
	stranger, _ := ssf.NewSigner(mustP256(t))
	refused := []struct {
		name string
		s    *ssf.Signer
		set  ssf.SET
	}{
		{"another key", stranger, disabled(&ssf.Subject{Format: "opaque", ID: "ci-bot"}, "https://cordon.test")},
		{"another audience", idp, disabled(&ssf.Subject{Format: "opaque", ID: "ci-bot"}, "https://other.test")},
		{"no subject", idp, disabled(nil, "https://cordon.test")},
		{"not a holder name", idp, disabled(&ssf.Subject{Format: "opaque", ID: "ci bot/../x"}, "https://cordon.test")},
	}
	for _, r := range refused {
		if st := push(r.s, r.set); st != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", r.name, st)
		}
	}
	if got := f.revocations(); len(got) != 0 {
		t.Fatalf("refused events revoked %d tokens", len(got))
	}
	if st := push(idp, disabled(&ssf.Subject{Format: "email", Email: "ci-bot"}, "https://cordon.test")); st != http.StatusAccepted {
		t.Fatalf("account-disabled: status %d, want 202", st)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		got := f.revocations()
		if len(got[a1.id]) != 1 || len(got[a2.id]) != 1 {
			return fmt.Errorf("revocations %v", got)
		}
		return nil
	})
	got := f.revocations()
	if len(got[other.id]) != 0 {
		t.Fatal("another holder's token was revoked")
	}
	if r := got[a1.id][0]; r.Kind != events.RevokeHolder || !strings.Contains(r.Reason, "account disabled") || r.Actor != "ssf:https://idp.test" {
		t.Fatalf("revocation %+v", r)
	}
	// Events Cordon does not act on are accepted and change nothing.
	if st := push(idp, ssf.SET{Issuer: "https://idp.test", ID: newID(t), IssuedAt: time.Now().Unix(), Audience: ssf.Audience{"https://cordon.test"},
		Subject: &ssf.Subject{Format: "opaque", ID: "reporting"}, Events: ssf.EventsMap{ssf.EventSessionRevoked: {}}}); st != http.StatusAccepted {
		t.Fatalf("session-revoked: status %d", st)
	}
	b, _ := json.Marshal(f.r.SSFStats())
	if st := f.r.SSFStats(); st.Acted != 1 {
		t.Errorf("stats %s, want 1 acted", b)
	}
}

func mustP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
