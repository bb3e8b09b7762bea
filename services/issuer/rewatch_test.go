package issuer

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
)

// TestRegistryRewatchesAfterNodeLoss (issue 11, item 4): the server
// hosting the registry's ledger consumer is killed (SIGKILL) while TOKENS
// keeps its leader. Issuance goes on at once: publish waits for its own
// event in the registry, and the registry, seeing nothing arrive, asks for
// a new consumer and meanwhile reads the events it waits for directly,
// instead of waiting for nats.go to miss its heartbeats. When the lost
// server was also the JetStream meta leader, no consumer can be created
// until another is elected: issuance goes on all the same. Afterwards the
// registry follows a new consumer and holds exactly the ledger: every
// event applied, none twice.
func TestRegistryRewatchesAfterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process nats-server cluster; skipped with -short")
	}
	streams := []string{events.StreamTokens, "KV_" + events.BucketKeys}
	for _, tc := range []struct {
		name string
		// victim picks the node to kill and the one clients use.
		victim func(t *testing.T, c *natscluster.Cluster) (victim, client int)
	}{
		{"consumer host", func(t *testing.T, c *natscluster.Cluster) (int, int) {
			return c.SpareNode(t, 0, streams...), 0
		}},
		{"consumer host and meta leader", func(t *testing.T, c *natscluster.Cluster) (int, int) {
			name, err := c.WaitMetaLeader(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			meta := c.NodeIndex(name)
			c.MoveLeadersOff(t, meta, streams...)
			return meta, (meta + 1) % len(c.Nodes)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := natscluster.Start(t, natscluster.Options{})
			victim, client := tc.victim(t, c)
			nc, js := c.ConnectTo(t, client)
			pol, err := policy.Load(defaultPolicy)
			if err != nil {
				t.Fatal(err)
			}
			i, err := New(Options{NC: nc, JS: js, DataDir: t.TempDir(), Policy: pol, Source: "issuer/test",
				Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := i.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer i.Close()
			req := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2h"}
			for range 3 {
				if _, err := i.Issue(ctx, "test", req); err != nil {
					t.Fatal(err)
				}
			}

			c.PlaceOn(t, i.ledger, victim)
			before, killed := i.RegistryStats(), i.ledger.ConsumerInfo().Name
			c.Kill(victim)
			t.Logf("killed %s, host of the registry's consumer", c.Nodes[victim].Name)

			for k := range 5 {
				ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
				start := time.Now()
				res, err := i.Issue(ictx, "test", req)
				icancel()
				if err != nil {
					t.Fatalf("issue %d after the node loss: %v", k, err)
				}
				if k == 0 {
					t.Logf("first issuance after the kill took %v", time.Since(start).Round(time.Millisecond))
				}
				if _, ok := i.reg.get(res.ID, time.Now()); !ok {
					t.Fatalf("token %d issued after the node loss is not in the registry", k)
				}
			}
			t.Logf("registry after the issuances: %+v (before the kill %+v)", i.RegistryStats(), before)
			// The registry leaves the dead consumer: the reader re-watches
			// (in the background, once JetStream has a meta leader), unless
			// nats.go's ordered consumer noticed first and reset itself.
			natscluster.WaitFor(t, 30*time.Second, func() error {
				st, info := i.RegistryStats(), i.ledger.ConsumerInfo()
				if st.Rewatches <= before.Rewatches && (info == nil || info.Name == killed) {
					return fmt.Errorf("registry stats %+v: still on consumer %s of the killed server (before %+v)", st, killed, before)
				}
				return nil
			})
			assertRegistryIsLedger(t, i)
		})
	}
}

// assertRegistryIsLedger compares the registry with the TOKENS stream:
// it applied the stream's last sequence, holds one entry per TokenIssued,
// and each token's history is its ledger events, each once, in order.
func assertRegistryIsLedger(t *testing.T, i *Issuer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := i.js.Stream(ctx, events.StreamTokens)
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	if got := i.reg.applied(); got != last {
		t.Fatalf("registry applied up to %d, the ledger ends at %d", got, last)
	}
	history := map[string][]uint64{} // token id → sequences of its events
	for seq := uint64(1); seq <= last; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("ledger message %d: %v", seq, err)
		}
		env, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("ledger message %d: %v", seq, err)
		}
		switch env.Data.(type) {
		case *events.TokenIssued, *events.TokenRotated, *events.TokenRevoked, *events.TokenExpired:
			id := tokenIDOf(env.Data)
			history[id] = append(history[id], seq)
		}
	}
	list := i.reg.list(ListFilter{}, time.Now())
	if len(list) != len(history) {
		t.Fatalf("registry holds %d tokens, the ledger has %d", len(list), len(history))
	}
	for _, info := range list {
		d, _ := i.reg.detail(info.ID, time.Now())
		var got []uint64
		for _, h := range d.History {
			got = append(got, h.Seq)
		}
		if !slices.Equal(got, history[info.ID]) {
			t.Errorf("token %s: registry history at sequences %v, ledger %v", info.ID, got, history[info.ID])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("registry matches the ledger: %d events, %d tokens", last, len(list))
}
