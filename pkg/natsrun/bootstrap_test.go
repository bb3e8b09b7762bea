package natsrun

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
)

// securedServer starts an embedded server that knows only the generated
// Cordon identities, and returns it with the credentials directory.
func securedServer(t *testing.T) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Start(Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, dir
}

// TestBootstrapWithAuthentication: on a server that refuses anonymous
// clients, Bootstrap creates every stream and bucket, updates an existing
// stream that no role may update, and leaves no identity behind: its key,
// kept by the test, is refused afterwards.
func TestBootstrapWithAuthentication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	var kept nkeys.KeyPair
	orig := bootstrapKey
	bootstrapKey = func() (nkeys.KeyPair, error) {
		kp, err := orig()
		if err != nil {
			return nil, err
		}
		seed, _ := kp.Seed()
		kept, _ = nkeys.FromSeed(seed) // a copy: Bootstrap wipes its own
		return kp, nil
	}
	t.Cleanup(func() { bootstrapKey = orig })

	srv, dir := securedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := srv.Connect("admin", natsauth.ConnectOption(natsauth.SeedFile(dir, natsauth.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	// An older USAGE definition: the admin may create it, never update it.
	usage := events.Streams(events.StreamOptions{})[1]
	usage.MaxAge = time.Hour
	if _, err := ajs.CreateStream(ctx, usage); err != nil {
		t.Fatalf("admin creates USAGE: %v", err)
	}
	// (A refused request is only answered by its timeout.)
	uctx, ucancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = ajs.UpdateStream(uctx, events.Streams(events.StreamOptions{})[1])
	ucancel()
	if err == nil {
		t.Fatal("the admin updated a stream")
	}

	if err := srv.Bootstrap(ctx, events.StreamOptions{}); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		st, err := ajs.Stream(ctx, cfg.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", cfg.Name, err)
		}
		if got := st.CachedInfo().Config.MaxAge; got != cfg.MaxAge {
			t.Errorf("stream %s: max age %v, want the current definition's %v", cfg.Name, got, cfg.MaxAge)
		}
	}
	for _, cfg := range events.Buckets(events.StreamOptions{}) {
		if _, err := ajs.KeyValue(ctx, cfg.Bucket); err != nil {
			t.Errorf("bucket %s: %v", cfg.Bucket, err)
		}
	}
	if err := srv.Bootstrap(ctx, events.StreamOptions{}); err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}

	if kept == nil {
		t.Fatal("no bootstrap key was made")
	}
	pub, _ := kept.PublicKey()
	// The server's users are the same for every transport; TCP says why
	// it refuses.
	if nc, err := nats.Connect(srv.ClientURL(), nats.Nkey(pub, kept.Sign), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("the bootstrap identity still authenticates after Bootstrap")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("bootstrap identity after Bootstrap: %v, want an authorization violation", err)
	}
	// The server still knows exactly the generated users.
	if n := len(srv.opts.Nkeys); n != 5 {
		t.Errorf("server has %d users after bootstrap, want the 5 generated", n)
	}
	// And the admin's connection survived the reloads.
	if _, err := ajs.Stream(ctx, events.StreamTokens); err != nil {
		t.Errorf("admin after bootstrap: %v", err)
	}
}

func TestBootstrapWithoutAuthentication(t *testing.T) {
	srv, err := Start(Options{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Bootstrap(ctx, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("check")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(ctx, events.StreamTokens); err != nil {
		t.Fatal(err)
	}
	if err := (&Server{Server: srv.Server}).Bootstrap(ctx, events.StreamOptions{}); err == nil {
		t.Error("bootstrap of a server natsrun did not start succeeded")
	}
}
