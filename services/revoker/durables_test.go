package revoker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/ssf"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestDurablesAreTheRolesGrants: the revoker, connected with its role's
// credentials to a server that enforces them, creates exactly the durable
// consumers the role is granted (natsauth.Durables; Shared Signals
// receivers configured, so the one that pushes them too), with no
// permission violation.
func TestDurablesAreTheRolesGrants(t *testing.T) {
	sec := natstest.RunSecured(t)
	nc, js := sec.Connect(t, natsauth.RoleRevoker)
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// With a Shared Signals receiver, so that every durable is made.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	defer receiver.Close()
	signer, err := ssf.LoadOrCreateSigner(filepath.Join(t.TempDir(), "ssf.pem"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := revoker.New(revoker.Options{NC: nc, JS: js, TrustAnchors: token.Anchors{anchor.Public()}, Log: zerolog.New(zerolog.NewTestWriter(t)),
		SSF: revoker.SSFOptions{Signer: signer, Receivers: []*ssf.Pusher{{Endpoint: receiver.URL}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var want []string
	for _, d := range natsauth.Durables(natsauth.RoleRevoker) {
		want = append(want, d.String())
	}
	slices.Sort(want)
	natstest.WaitFor(t, 20*time.Second, func() error {
		got, err := sec.Durables(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("the revoker created the durables %v; its role is granted %v", got, want)
		}
		return nil
	})
	if v := sec.Violations(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}

// TestBroadcastUnderRolePermissions: on a server enforcing the roles'
// permissions, the revoker broadcasts its changes, sends heartbeats and
// serves its resync subject with no permission violation; another
// revoker-role connection (a second replica) hears the changes.
// (RunSecured makes no enforcer identity; the enforcer's side of the
// permissions is pkg/natsauth's test.)
func TestBroadcastUnderRolePermissions(t *testing.T) {
	sec := natstest.RunSecured(t)
	nc, js := sec.Connect(t, natsauth.RoleRevoker)
	peer, _ := sec.Connect(t, natsauth.RoleRevoker)
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	heard := make(chan events.DenyChange, 16)
	sub, err := peer.Subscribe(events.SubjectDenyChange, func(m *nats.Msg) {
		if c, err := events.DecodeDenyChange(m.Data); err == nil {
			heard <- c
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := revoker.New(revoker.Options{NC: nc, JS: js, TrustAnchors: token.Anchors{anchor.Public()}, Log: zerolog.New(zerolog.NewTestWriter(t)),
		HeartbeatInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id := newID(t)
	res, err := r.Revoke(ctx, revoker.Request{Kind: "token", TokenID: id, Tenant: "acme", Holder: "web", Actor: "test", Reason: "leaked"})
	if err != nil || res.Ledger != revoker.LedgerRecorded {
		t.Fatalf("revoke: %+v, %v", res, err)
	}
	for want := uint64(1); want <= 2; want++ {
		select {
		case c := <-heard:
			if c.Origin != r.Origin() || c.Seq != want || c.Key != events.DenyKeyToken(id) {
				t.Fatalf("change %+v, want seq %d of %s", c, want, events.DenyKeyToken(id))
			}
		case <-ctx.Done():
			t.Fatal("the second replica heard no change")
		}
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if st := r.Stats(); st.Heartbeats < 3 {
			return fmt.Errorf("%d heartbeats sent", st.Heartbeats)
		}
		return nil
	})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if v := sec.Violations(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}
