// Package e2e runs Cordon's real services in-process, each with the NATS
// identity `cordon creds generate` makes for it, against a server that
// knows only those identities — the credential model of deploy/compose —
// and requires the whole loop to work without a single permission
// violation: the issuer bootstraps the streams and mints, the enforcer
// allows and publishes usage, the admin revokes over cordon.cmd.revoke,
// the revoker writes the ledger and the denylist, the enforcer denies,
// and the auditor consumes the usage.
//
// It lives apart from pkg/natsauth so that the permission tests there do
// not depend on the services compiling.
package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// memStore counts what the auditor writes (the store itself is tested on
// real ClickHouse in pkg/store; here only the NATS side matters).
type memStore struct {
	mu    sync.Mutex
	usage int
}

func (m *memStore) InsertUsage(_ context.Context, evs []events.Envelope) error {
	m.mu.Lock()
	m.usage += len(evs)
	m.mu.Unlock()
	return nil
}
func (m *memStore) InsertAnomalies(context.Context, []events.Envelope) error { return nil }
func (m *memStore) InsertLedger(context.Context, []events.Envelope) error    { return nil }

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usage
}

// conns are the role connections of a test, with every permission
// violation the server reported to any of them.
type conns struct {
	t    *testing.T
	url  string
	dir  string
	mu   sync.Mutex
	viol []string
	all  []*nats.Conn
}

func (c *conns) connect(r natsauth.Role) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	return c.connectSeed(string(r), natsauth.SeedFile(c.dir, r))
}

// connectEnforcer connects with the identity of the enforcer with id.
func (c *conns) connectEnforcer(id string) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	return c.connectSeed("enforcer/"+id, natsauth.EnforcerSeedFile(c.dir, id))
}

func (c *conns) connectSeed(name, seed string) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.url, natsauth.ConnectOption(seed), nats.Name(name),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.viol = append(c.viol, name+": "+err.Error())
				c.mu.Unlock()
			}
		}))
	if err != nil {
		c.t.Fatalf("connect as %s: %v", name, err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	c.all = append(c.all, nc)
	return nc, js
}

// check fails the test for any violation: after a flush, the server has
// sent every -ERR, and LastError holds the newest one synchronously.
func (c *conns) check() {
	c.t.Helper()
	for _, nc := range c.all {
		if err := nc.Flush(); err != nil {
			c.t.Errorf("flush: %v", err)
		}
		if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
			c.t.Errorf("%s: %v", nc.Opts.Name, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.viol {
		c.t.Error(v)
	}
}

func TestServicesRunWithTheirOwnCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the services on a real NATS server; skipped with -short")
	}
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c := &conns{t: t, url: srv.ClientURL(), dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)

	// The issuer bootstraps an empty server, as `cordon issuer` does.
	inc, ijs := c.connect(natsauth.RoleIssuer)
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		if _, err := ijs.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("issuer creates %s: %v", cfg.Name, err)
		}
	}
	for _, cfg := range events.Buckets(events.StreamOptions{}) {
		if _, err := ijs.CreateKeyValue(ctx, cfg); err != nil {
			t.Fatalf("issuer creates bucket %s: %v", cfg.Bucket, err)
		}
	}
	pol, err := policy.Load("../policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Options{NC: inc, JS: ijs, DataDir: t.TempDir(), Policy: pol, Logger: log, AdminTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Start(ctx); err != nil {
		t.Fatalf("issuer: %v", err)
	}
	t.Cleanup(func() { _ = iss.Close() })

	rnc, rjs := c.connect(natsauth.RoleRevoker)
	anchors := token.Anchors{iss.TrustAnchor()}
	rev, err := revoker.New(revoker.Options{NC: rnc, JS: rjs, Log: log, TrustAnchors: anchors})
	if err != nil {
		t.Fatal(err)
	}
	if err := rev.Start(ctx); err != nil {
		t.Fatalf("revoker: %v", err)
	}
	t.Cleanup(func() { _ = rev.Close() })

	_, ajs := c.connect(natsauth.RoleAuditor)
	store := &memStore{}
	aud, err := auditor.New(auditor.Options{JS: ajs, Store: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- aud.Run(actx) }()
	defer func() {
		acancel()
		<-adone
	}()

	_, ejs := c.connectEnforcer("edge-1")
	routes, err := enforce.LoadRoutes("../../../testdata/routes/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	enf, err := enforce.New(enforce.Options{ID: "edge-1", Routes: routes, TrustAnchors: anchors, Log: log, ProbeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := enf.Start(ctx, ejs); err != nil {
		t.Fatalf("enforcer: %v", err)
	}
	t.Cleanup(func() { _ = enf.Close() })

	res, err := iss.Issue(ctx, "e2e", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	check := func() enforce.Decision {
		return enf.Check(&enforce.Request{Token: res.Token, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("172.18.0.1")})
	}
	if d := check(); !d.Allow {
		t.Fatalf("fresh token denied: %s", d.Reason)
	}

	// The admin revokes over NATS, with the issuer's bootstrap admin token.
	adminTok, err := os.ReadFile(iss.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	anc, _ := c.connect(natsauth.RoleAdmin)
	body, _ := json.Marshal(revoker.CommandRequest{Auth: strings.TrimSpace(string(adminTok)), Kind: events.RevokeToken, TokenID: res.ID, Reason: "leaked"})
	m, err := anc.RequestWithContext(ctx, events.SubjectCmdRevoke, body)
	if err != nil {
		t.Fatalf("revoke request: %v", err)
	}
	var reply revoker.Reply
	if err := json.Unmarshal(m.Data, &reply); err != nil || !reply.OK {
		t.Fatalf("revoke reply %s (%v)", m.Data, err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if d := check(); d.Allow || d.Reason != enforce.ReasonRevoked {
			return fmt.Errorf("enforcer says %v %s, want revoked", d.Allow, d.Reason)
		}
		return nil
	})
	if err := enf.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if n := store.count(); n < 2 {
			return fmt.Errorf("auditor stored %d usage events, want 2", n)
		}
		return nil
	})
	c.check()
}
