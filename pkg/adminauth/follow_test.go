package adminauth_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestFollowerReadsItsWrites: a token recorded a moment ago is known at
// the next lookup, without waiting — also when the ledger's newest
// messages are other tenants' events, which the view skips.
func TestFollowerReadsItsWrites(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{})
	for i := range 20 {
		c := l.admin("cordon:read")
		l.issue(c)
		if i%2 == 0 { // the ledger's last message is not one the view reads
			l.issue(with(l.admin("invoices:read"), func(c *token.Claims) { c.Tenant = "acme" }))
		}
		rec, ok, err := l.f.Lookup(l.ctx(), c.ID)
		if err != nil || !ok || rec.TokenID != c.ID || rec.Revoked {
			t.Fatalf("lookup %d right after issue: %+v %v %v", i, rec, ok, err)
		}
		l.publish(l.clk.now(), &events.TokenRevoked{TokenID: c.ID, Tenant: "cordon", Holder: "admin", Kind: events.RevokeToken,
			Actor: "t", Reason: "r", Expiry: time.Unix(c.Expiry, 0)})
		if rec, _, err := l.f.Lookup(l.ctx(), c.ID); err != nil || !rec.Revoked {
			t.Fatalf("lookup %d right after revoke: %+v %v", i, rec, err)
		}
	}
	if n := l.f.Len(); n != 20 {
		t.Fatalf("%d records, want the 20 admin tokens only", n)
	}
}

// TestFollowerBounded: the view holds at most MaxTokens records, dropping
// expired ones first, then those expiring soonest (which are then refused).
func TestFollowerBounded(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{MaxTokens: 3})
	var ids []string
	for i := range 5 {
		c := l.admin("cordon:read")
		c.Expiry = l.clk.now().Add(time.Duration(10-i) * time.Hour).Unix() // later tokens expire sooner
		l.issue(c)
		ids = append(ids, c.ID)
	}
	if _, _, err := l.f.Lookup(l.ctx(), ids[0]); err != nil {
		t.Fatal(err)
	}
	st := l.f.Stats()
	if st.Tokens != 3 || st.MaxTokens != 3 || st.Evicted != 2 {
		t.Fatalf("stats %+v, want 3 of 3 held and 2 evicted", st)
	}
	for i, id := range ids {
		_, ok, _ := l.f.Lookup(l.ctx(), id)
		if want := i != 2 && i != 3; ok != want { // each expired soonest when the next came
			t.Errorf("token %d held %v, want %v", i, ok, want)
		}
	}
}

// TestFollowerSurvivesBadInputAndLostConsumers: an undecodable message on
// an admin subject is skipped, and a consumer deleted on the server (as a
// node loss does) is re-created: the view stays current.
func TestFollowerSurvivesBadInputAndLostConsumers(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{CheckInterval: 50 * time.Millisecond})
	if _, err := l.env.JS.Publish(l.ctx(), events.SubjectTokenPrefix+"issued.cordon.garbage", []byte(`{"not":"an event"`)); err != nil {
		t.Fatal(err)
	}
	c := l.admin("cordon:read")
	l.issue(c)
	if _, ok, err := l.f.Lookup(l.ctx(), c.ID); err != nil || !ok {
		t.Fatalf("after a bad message: %v %v", ok, err)
	}
	for round := range 3 {
		if err := l.env.JS.DeleteConsumer(l.ctx(), events.StreamTokens, adminauth.ConsumerName(l.f)); err != nil {
			t.Fatalf("delete the view's consumer: %v", err)
		}
		next := l.admin("cordon:read")
		l.issue(next)
		natstest.WaitFor(t, 10*time.Second, func() error {
			if _, ok, err := l.f.Lookup(l.ctx(), next.ID); err != nil || !ok {
				return fmt.Errorf("round %d: token not known after the consumer was lost: %v %v", round, ok, err)
			}
			return nil
		})
	}
}

// TestFollowerClosed: a closed view refuses lookups (fail closed) and
// follows nothing any more.
func TestFollowerClosed(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{})
	c := l.admin("cordon:read")
	tok := l.issue(c)
	a := l.authn(adminauth.Options{})
	l.f.Close()
	l.f.Close()
	if _, _, err := l.f.Lookup(l.ctx(), c.ID); err == nil {
		t.Fatal("a closed view answered a lookup")
	}
	if _, err := a.Authenticate(l.ctx(), adminauth.Request{Token: tok, Scope: "cordon:read"}); !errors.Is(err, adminauth.ErrUnavailable) {
		t.Fatalf("authenticate on a closed view: %v, want ErrUnavailable", err)
	}
}

// TestFollowerRewatchesSilentConsumer: a consumer that stops delivering
// without an error the client sees (paused on the server, as a consumer on
// a lost server looks until heartbeats are missed) is replaced at the next
// lookup that finds the ledger ahead: the token is known, and the view
// counts the re-watch.
func TestFollowerRewatchesSilentConsumer(t *testing.T) {
	l := newLedger(t, adminauth.FollowOptions{CheckInterval: time.Hour})
	for round := range 3 {
		name := adminauth.ConsumerName(l.f)
		if _, err := l.env.JS.PauseConsumer(l.ctx(), events.StreamTokens, name, time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("pause %s: %v", name, err)
		}
		c := l.admin("cordon:read")
		l.issue(c)
		if _, ok, err := l.f.Lookup(l.ctx(), c.ID); err != nil || !ok {
			t.Fatalf("round %d: token not known behind a silent consumer: %v %v", round, ok, err)
		}
		// The re-watch is counted once its consumer is set up, and that
		// consumer may deliver the token before: the count can follow the
		// lookup by a moment.
		natstest.WaitFor(t, 10*time.Second, func() error {
			if st := l.f.Stats(); st.Rewatches < uint64(round+1) {
				return fmt.Errorf("round %d: stats %+v, want a rewatch per silent consumer", round, st)
			}
			return nil
		})
	}
}
