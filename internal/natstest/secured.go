package natstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
)

// Secured is a running embedded JetStream that knows only Cordon's role
// identities (pkg/natsauth), each with the permissions a deployment gives
// it, and holds Cordon's streams and buckets: a service connected with
// Connect runs exactly as far as its role allows.
type Secured struct {
	Server *natsrun.Server
	// CredsDir holds each role's seed (natsauth.SeedFile).
	CredsDir string

	admin jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

// RunSecured generates the role identities, starts the server with them,
// creates the streams and buckets (natsrun.Server.Bootstrap) and stops
// everything when the test ends.
func RunSecured(t testing.TB) *Secured {
	t.Helper()
	s := &Secured{CredsDir: t.TempDir()}
	if _, err := natsauth.Generate(s.CredsDir, natsauth.GenerateOptions{}); err != nil {
		t.Fatalf("generate identities: %v", err)
	}
	users, err := natsauth.ServerAuth(s.CredsDir)
	if err != nil {
		t.Fatalf("server users: %v", err)
	}
	if s.Server, err = natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users}); err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(s.Server.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Server.Bootstrap(ctx, events.StreamOptions{}); err != nil {
		t.Fatalf("bootstrap streams: %v", err)
	}
	_, s.admin = s.Connect(t, natsauth.RoleAdmin)
	return s
}

// Connect connects as role r (closed when the test ends) and records every
// permission violation the server reports to the connection.
func (s *Secured) Connect(t testing.TB, r natsauth.Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.Server.ClientURL(), natsauth.ConnectOption(natsauth.SeedFile(s.CredsDir, r)), nats.Name(string(r)),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				s.mu.Lock()
				s.violations = append(s.violations, string(r)+": "+err.Error())
				s.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", r, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream as %s: %v", r, err)
	}
	return nc, js
}

// Violations are the permission violations reported so far.
func (s *Secured) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Durables lists the durable consumers on Cordon's streams, sorted, as
// "<stream>.<name>" (events.Durable.String), read with the admin identity.
func (s *Secured) Durables(ctx context.Context) ([]string, error) {
	var out []string
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		st, err := s.admin.Stream(ctx, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
		list := st.ListConsumers(ctx)
		for info := range list.Info() {
			if info.Config.Durable != "" {
				out = append(out, events.Durable{Stream: cfg.Name, Name: info.Config.Durable}.String())
			}
		}
		if err := list.Err(); err != nil {
			return nil, fmt.Errorf("list the consumers of %s: %w", cfg.Name, err)
		}
	}
	slices.Sort(out)
	return out, nil
}
