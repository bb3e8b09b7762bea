package adminauth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestFollowerWithEveryRolesPermissions: the ledger view works with the
// NATS permissions of each service that authenticates admins — the issuer,
// the revoker and the auditor — on a server that enforces them, with no
// permission violation.
func TestFollowerWithEveryRolesPermissions(t *testing.T) {
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{}); err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var violations []string
	connect := func(r natsauth.Role) (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(srv.ClientURL(), natsauth.ConnectOption(natsauth.SeedFile(dir, r)), nats.Name(string(r)),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					mu.Lock()
					violations = append(violations, string(r)+": "+err.Error())
					mu.Unlock()
				}
			}))
		if err != nil {
			t.Fatalf("connect as %s: %v", r, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	_, ijs := connect(natsauth.RoleIssuer)
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		if _, err := ijs.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("create %s: %v", cfg.Name, err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	publish := func(p events.Payload) {
		e, err := events.New("issuer/test", now, p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := events.Encode(e)
		if _, err := ijs.Publish(ctx, events.Subject(e), b, jetstream.WithMsgID(e.MsgID())); err != nil {
			t.Fatal(err)
		}
	}
	issue := func(tenant string) string {
		c := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: tenant, Holder: "admin", Scopes: []string{"cordon:read"},
			Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()}
		publish(&events.TokenIssued{TokenID: c.ID, Tenant: tenant, Holder: "admin", KeyID: "k1", Claims: adminauth.LedgerClaims(c), Actor: "test"})
		return c.ID
	}
	first := issue("cordon")
	issue("acme")

	for _, r := range []natsauth.Role{natsauth.RoleIssuer, natsauth.RoleRevoker, natsauth.RoleAuditor} {
		t.Run(string(r), func(t *testing.T) {
			nc, js := connect(r)
			f, err := adminauth.Follow(ctx, adminauth.FollowOptions{JS: js, Log: zerolog.Nop(), CheckInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatalf("follow as %s: %v", r, err)
			}
			defer f.Close()
			if _, ok, err := f.Lookup(ctx, first); err != nil || !ok {
				t.Fatalf("lookup as %s: %v %v", r, ok, err)
			}
			next := issue("cordon")
			issue("acme") // the ledger ends with an event the view does not read
			if _, ok, err := f.Lookup(ctx, next); err != nil || !ok {
				t.Fatalf("lookup of a token just issued, as %s: %v %v", r, ok, err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v", r, err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
}
