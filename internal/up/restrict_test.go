package up_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/enforcer"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestQuarantineAtEveryEnforcer: a token quarantined by command keeps
// reading from its holder's known network and is denied everything else,
// at both enforcing proxies; a token quarantined to another network is
// denied even its reads; a quarantine lifted by command gives the token
// back everything at both; a short quarantine ends by itself; a step-up
// denies an unbound token everywhere. Every step is on the ledger and in
// ClickHouse's token_ledger.
func TestQuarantineAtEveryEnforcer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end system skipped with -short")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: filepath.Join(dir, "data"), NATSPort: -1, IssuerListen: "127.0.0.1:0",
		ProxyListen: "127.0.0.1:0", ChDBPath: chdbPath, Database: "quarantine", ExtraEnforcers: []string{"edge-2"},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	routes, err := enforce.LoadRoutes("demo/routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	second, err := enforcer.Start(ctx, enforcer.Config{
		Options: enforce.Options{ID: "edge-2", Routes: routes, TrustAnchors: token.Anchors{sys.Issuer.TrustAnchor()},
			MaxStaleness: enforce.DefaultMaxStaleness, FailClosed: true, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)},
		NATS: natsconn.Config{URL: sys.NATS.ClientURL(), Creds: sys.EnforcerCredsFile("edge-2"), Name: "edge-2",
			Options: []nats.Option{nats.InProcessServer(sys.NATS.Server)}},
		Upstream: sys.UpstreamURL, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	proxies := map[string]string{"edge-1": sys.ProxyURL, "edge-2": "http://" + second.Addr().String()}
	enforcers := map[string]*enforce.Enforcer{"edge-1": sys.Enforcer, "edge-2": second.Enforcer()}

	b, err := os.ReadFile(filepath.Join(sys.Opts.DataDir, issuer.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(b))
	mint := func() *issuer.IssueResponse {
		t.Helper()
		res, err := sys.Issuer.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"invoices:list", "invoices:read", "invoices:write"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	do := func(proxy, method, path, tok string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, proxy+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// everywhere waits until every proxy answers each request as wanted.
	type want struct {
		method, path string
		status       int
	}
	everywhere := func(what, tok string, wants ...want) {
		t.Helper()
		natstest.WaitFor(t, 30*time.Second, func() error {
			for name, p := range proxies {
				for _, w := range wants {
					if got := do(p, w.method, w.path, tok); got != w.status {
						return fmt.Errorf("%s: %s: %s %s answered %d, want %d", what, name, w.method, w.path, got, w.status)
					}
				}
			}
			return nil
		})
	}
	restrict := func(req revoker.RestrictCommand) revoker.RestrictReply {
		t.Helper()
		req.Auth = admin
		rep, err := revoker.CallRestrict(ctx, sys.NC, req)
		if err != nil || !rep.OK {
			t.Fatalf("restrict %+v: %+v %v", req, rep, err)
		}
		return rep
	}
	read, list, write := want{"GET", "/invoices/7", 200}, want{"GET", "/invoices", 200}, want{"PUT", "/invoices/7", 200}
	denied := func(w want) want { w.status = http.StatusForbidden; return w }

	kept, elsewhere, short, stepped := mint(), mint(), mint(), mint()
	for _, tk := range []*issuer.IssueResponse{kept, elsewhere, short, stepped} {
		everywhere("before any restriction", tk.Token, read, list, write)
	}

	// Quarantined to the holder's network: reads stay, writes go.
	restrict(revoker.RestrictCommand{TokenID: kept.ID, Step: events.StepNarrow, Networks: []string{"127.0.0.0/8", "::1/128"}, For: "1h", Reason: "odd use"})
	everywhere("quarantined to its network", kept.Token, read, list, denied(write))
	// Quarantined to a network it is not on: nothing passes.
	restrict(revoker.RestrictCommand{TokenID: elsewhere.ID, Step: events.StepNarrow, Networks: []string{"10.0.0.0/8"}, For: "1h", Reason: "odd use"})
	everywhere("quarantined elsewhere", elsewhere.Token, denied(read), denied(list), denied(write))
	// A step-up: the token is bound to no certificate, so it is denied.
	restrict(revoker.RestrictCommand{TokenID: stepped.ID, Step: events.StepStepUp, For: "1h", Reason: "prove it"})
	everywhere("stepped up", stepped.Token, denied(read), denied(write))
	// A short quarantine ends by itself.
	rep := restrict(revoker.RestrictCommand{TokenID: short.ID, Step: events.StepNarrow, Networks: []string{"127.0.0.0/8", "::1/128"}, For: "3s", Reason: "brief"})
	if time.Until(rep.Until) > 3*time.Second {
		t.Fatalf("a 3s quarantine until %v", rep.Until)
	}
	everywhere("after the short quarantine ended", short.Token, read, list, write)
	for name, e := range enforcers {
		if st := e.Stats(); st.QuarantineDenials == 0 || st.StepUpDenials == 0 {
			t.Errorf("%s: %d quarantine and %d step-up denials counted", name, st.QuarantineDenials, st.StepUpDenials)
		}
	}

	// Lifted by command: everything is back, everywhere.
	rel, err := revoker.CallRelease(ctx, sys.NC, revoker.ReleaseCommand{Auth: admin, TokenID: kept.ID, Reason: "false alarm"})
	if err != nil || !rel.OK {
		t.Fatalf("release: %+v %v", rel, err)
	}
	everywhere("released", kept.Token, read, list, write)
	everywhere("still quarantined elsewhere", elsewhere.Token, denied(read))

	// On the ledger, and in ClickHouse for analysts.
	// (This run's tokens only: a database of an earlier run may hold others.)
	q := fmt.Sprintf("SELECT type, step, token_id FROM token_ledger WHERE type IN ('restricted', 'released') AND token_id IN ('%s', '%s', '%s', '%s') ORDER BY time",
		kept.ID, elsewhere.ID, short.ID, stepped.ID)
	natstest.WaitFor(t, 30*time.Second, func() error {
		rows, err := sys.Store.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("token_ledger: %w", err)
		}
		if len(rows.Rows) != 5 {
			return fmt.Errorf("token_ledger holds %d restriction rows of this run's tokens, want 5 (4 restricted, 1 released)", len(rows.Rows))
		}
		return nil
	})
}
