package enforce

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestCanaryDeniedAndReported: a token whose denylist entry marks it a
// canary is denied as revoked, and each use is reported on the enforcer's
// canary subject with the source, client and route, by id; a plain
// revoked token is denied without a report; deleting the entry forgets
// the canary.
func TestCanaryDeniedAndReported(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	canaryTok, cc := mint(t, f.signer, nil)
	revokedTok, rc := mint(t, f.signer, nil)
	reports := make(chan *nats.Msg, 16)
	sub, err := f.env.NC.ChanSubscribe(events.SubjectCanaryPrefix+">", reports)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := f.env.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	f.revoke(t, events.DenyKeyToken(cc.ID), events.DenyRecord{Kind: events.RevokeToken, TokenID: cc.ID, Tenant: cc.Tenant, Holder: "planted-for", Canary: true})
	waitRevision(t, e, f.revoke(t, events.DenyKeyToken(rc.ID), events.DenyRecord{Kind: events.RevokeToken, TokenID: rc.ID, Tenant: rc.Tenant, Holder: rc.Holder}))
	src := netip.MustParseAddr("198.51.100.7")
	req := func(tok string) *Request {
		return &Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: src, UserAgent: "curl/8.5.0"}
	}
	if d := e.Check(req(canaryTok)); d.Allow || d.Reason != ReasonRevoked {
		t.Fatalf("canary: %+v, want denied as revoked", d)
	}
	if d := e.Check(req(revokedTok)); d.Allow || d.Reason != ReasonRevoked {
		t.Fatalf("revoked: %+v", d)
	}
	select {
	case m := <-reports:
		if m.Subject != events.CanarySubject("edge-1") {
			t.Fatalf("report on %s", m.Subject)
		}
		var rep events.CanaryTripped
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Validate() != nil {
			t.Fatalf("report %s: %v", m.Data, err)
		}
		if rep.TokenID != cc.ID || rep.Holder != "planted-for" || rep.SourceIP != "198.51.100.7" || rep.UserAgent != "curl/8.5.0" ||
			rep.Route != "/invoices/{id}" || rep.Enforcer != "edge-1" {
			t.Fatalf("report %+v", rep)
		}
		if bytes.Contains(m.Data, []byte(canaryTok)) {
			t.Fatal("the report carries the token string")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no canary report")
	}
	select {
	case m := <-reports:
		t.Fatalf("a second report, for the revoked token: %s", m.Data)
	case <-time.After(200 * time.Millisecond):
	}
	if st := e.Stats(); st.CanaryTrips != 1 || st.CanaryReportsLost != 0 {
		t.Fatalf("stats: %d trips, %d lost", st.CanaryTrips, st.CanaryReportsLost)
	}
	// The entry deleted (the canary expired): forgotten.
	kv := f.kv(t, events.BucketDenylist)
	if err := kv.Delete(t.Context(), events.DenyKeyToken(cc.ID)); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		if _, ok := e.dl.canary(&token.Token{Claims: cc}); ok {
			return errors.New("the deleted canary entry is still known")
		}
		return nil
	})
}
