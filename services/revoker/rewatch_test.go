package revoker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/follow"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestReadersRewatchAfterNodeLoss (issue 11, item 4): the server hosting
// the consumers of the revoker's token index and of its admin-ledger view
// is killed (SIGKILL) while every stream keeps its leader. A revocation by
// token id, requested with an admin token minted after the kill, of a
// token issued after the kill, succeeds: the admin view and the index each
// see the ledger ahead of them, find their consumer silent, and follow the
// ledger again on a new one.
func TestReadersRewatchAfterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process nats-server cluster; skipped with -short")
	}
	c := natscluster.Start(t, natscluster.Options{})
	const client = 0
	nc, js := c.ConnectTo(t, client)
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, env: &natstest.Env{NC: nc, JS: js, Anchor: anchor}, logs: &natstest.LogBuffer{}, now: time.Now()}
	if f.signer, err = token.GenerateSigner(f.now); err != nil {
		t.Fatal(err)
	}
	f.publishKey(f.signer)
	adminClaims := token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}}
	f.admin = f.mint(adminClaims)
	f.o = revoker.Options{
		NC: nc, JS: js, MaxTokenTTL: maxTTL, Source: "revoker/test", TrustAnchors: f.env.Anchors(),
		Log: zerolog.New(io.MultiWriter(f.logs, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel).With().Timestamp().Logger(),
	}
	f.start()
	first := f.issue("acme", "billing-api", f.signer.KeyID, time.Minute, time.Hour, false)
	if rep, raw := f.call(revoker.CommandRequest{Kind: events.RevokeToken, TokenID: first.id}); !rep.OK {
		t.Fatalf("revoke before the node loss: %s", raw)
	}

	victim := c.SpareNode(t, client, events.StreamTokens, "KV_"+events.BucketDenylist, "KV_"+events.BucketKeys)
	c.PlaceOn(t, revoker.IndexReader(f.r), victim)
	c.PlaceOn(t, revoker.AdminLedgerReader(f.r), victim)
	before := f.r.Stats()
	idxKilled, adminKilled := revoker.IndexReader(f.r).ConsumerInfo().Name, revoker.AdminLedgerReader(f.r).ConsumerInfo().Name
	c.Kill(victim)
	t.Logf("killed %s, host of the index's and the admin view's consumers", c.Nodes[victim].Name)

	admin := f.mint(adminClaims)
	next := f.issue("acme", "billing-api", f.signer.KeyID, time.Minute, time.Hour, false)
	start := time.Now()
	// A request the revoker refuses as retryable (its admin view still
	// catching up after the loss, on a loaded machine) is sent again, as
	// automation does; a refusal changes nothing.
	var rep revoker.Reply
	var raw []byte
	natstest.WaitFor(t, 30*time.Second, func() error {
		rep, raw = f.call(revoker.CommandRequest{Auth: admin, Kind: events.RevokeToken, TokenID: next.id})
		if !rep.OK && strings.Contains(rep.Error, "(retry)") {
			return fmt.Errorf("refused for now: %s", raw)
		}
		return nil
	})
	if !rep.OK || !slices.Equal(rep.Revoked, []string{next.id}) {
		t.Fatalf("revoke by id after the node loss, with an admin token minted after it: %s", raw)
	}
	t.Logf("first revocation after the kill took %v", time.Since(start).Round(time.Millisecond))
	// Both readers leave the dead consumers: they re-watch in the
	// background (a waiter meanwhile reads what it waits for directly),
	// unless nats.go's ordered consumer noticed first and reset itself.
	moved := func(r *follow.Reader, killed string, rewatched bool) bool {
		info := r.ConsumerInfo()
		return rewatched || info != nil && info.Name != killed
	}
	// A reader whose waiter read the last events directly is current, and
	// its silent consumer shows only when the ledger moves on and somebody
	// waits for it: each wait that finds a reader still on the dead
	// consumer adds an admin token to the ledger and uses it, as the next
	// admin's login would (the admin view waits for the new token, stalls
	// on the dead consumer and re-watches). The request revokes the
	// already revoked token again, which changes nothing.
	extra, lastMint := 0, time.Now()
	natstest.WaitFor(t, 60*time.Second, func() error {
		st := f.r.Stats()
		if !moved(revoker.IndexReader(f.r), idxKilled, st.IndexRewatches > before.IndexRewatches) ||
			!moved(revoker.AdminLedgerReader(f.r), adminKilled, st.AdminLedgerRewatches > before.AdminLedgerRewatches) {
			if time.Since(lastMint) > time.Second {
				login := f.mint(adminClaims)
				extra, lastMint = extra+1, time.Now()
				// Its reply (or a time-out while the view catches up) does
				// not matter: the wait it causes does.
				b, _ := json.Marshal(revoker.CommandRequest{Auth: login, Kind: events.RevokeToken, TokenID: next.id, Reason: "test"})
				_, _ = f.env.NC.Request(events.SubjectCmdRevoke, b, 5*time.Second)
			}
			return fmt.Errorf("still on a consumer of the killed server: rewatches index %d (before %d), admin ledger %d (before %d)",
				st.IndexRewatches, before.IndexRewatches, st.AdminLedgerRewatches, before.AdminLedgerRewatches)
		}
		return nil
	})
	// Nothing skipped, nothing twice: both readers applied the ledger to
	// its end, and the index holds both tokens, revoked.
	ctx := f.ctx()
	s, err := js.Stream(ctx, events.StreamTokens)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := s.GetLastMsgForSubject(ctx, events.SubjectTokenPrefix+">")
	if err != nil {
		t.Fatal(err)
	}
	last := lm.Sequence
	natstest.WaitFor(t, 10*time.Second, func() error {
		if a := revoker.IndexReader(f.r).Applied(); a != last {
			return fmt.Errorf("index applied %d, the ledger ends at %d", a, last)
		}
		return nil
	})
	for _, tk := range []tok{first, next} {
		info, ok := f.r.Token(tk.id)
		if !ok || !info.Revoked {
			t.Errorf("index entry of %s: %+v %v, want known and revoked", tk.id, info, ok)
		}
	}
	if n := f.r.Stats().IndexTokens; n != 4+extra {
		t.Errorf("index holds %d tokens, want the %d issued (%d admin tokens, 2 revoked)", n, 4+extra, 2+extra)
	}
}
