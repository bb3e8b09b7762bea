package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
)

// fixture is a real JetStream server that only knows the generated users.
type fixture struct {
	dir string
	srv *natsrun.Server
}

// setup tunes secured.
type setup struct {
	// ensure has the admin create Cordon's streams and buckets (create
	// only, as the services' bootstrap does: the admin may not update).
	ensure bool
	// ackV2 starts the server with the js_ack_fc_v2 feature flag (the
	// newer acknowledgement and flow-control subject format).
	ackV2 bool
}

// Enforcer identities of the fixture.
const (
	edge1 = "edge-1"
	edge2 = "edge-2"
)

// secured generates credentials for every role and two enforcers (edge1,
// edge2) into a temporary directory and starts a real JetStream server
// that knows only those users.
func secured(t *testing.T, o setup) *fixture {
	t.Helper()
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{edge1, edge2}}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatalf("server auth: %v", err)
	}
	var srv *natsrun.Server
	if o.ackV2 {
		srv = startWithFlags(t, users, map[string]bool{"js_ack_fc_v2": true})
	} else {
		srv, err = natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users})
		if err != nil {
			t.Fatalf("start nats: %v", err)
		}
	}
	t.Cleanup(srv.Stop)
	f := &fixture{dir: dir, srv: srv}
	if o.ensure {
		c := f.connect(t, natsauth.RoleAdmin)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, cfg := range events.Streams(events.StreamOptions{}) {
			if _, err := c.js.CreateStream(ctx, cfg); err != nil {
				t.Fatalf("admin creates %s: %v", cfg.Name, err)
			}
		}
		for _, cfg := range events.Buckets(events.StreamOptions{}) {
			if _, err := c.js.CreateKeyValue(ctx, cfg); err != nil {
				t.Fatalf("admin creates bucket %s: %v", cfg.Bucket, err)
			}
		}
		c.noViolations(t)
	}
	return f
}

// startWithFlags starts a server like natsrun.Start does, with feature
// flags that natsrun does not expose.
func startWithFlags(t *testing.T, users []*server.NkeyUser, flags map[string]bool) *natsrun.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Nkeys: users, FeatureFlags: flags,
	})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("start nats: not ready after 10s")
	}
	return &natsrun.Server{Server: ns}
}

// client is a connection of one role that records every permission
// violation the server reports to it.
type client struct {
	role string // the identity's name, for messages
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func (f *fixture) connect(t *testing.T, r natsauth.Role) *client {
	t.Helper()
	return f.connectSeed(t, string(r), natsauth.SeedFile(f.dir, r))
}

// connectEnforcer connects as the enforcer with id.
func (f *fixture) connectEnforcer(t *testing.T, id string) *client {
	t.Helper()
	return f.connectSeed(t, "enforcer/"+id, natsauth.EnforcerSeedFile(f.dir, id))
}

func (f *fixture) connectSeed(t *testing.T, name, seed string) *client {
	t.Helper()
	c := &client{role: name}
	nc, err := nats.Connect(f.srv.ClientURL(),
		natsauth.ConnectOption(seed),
		nats.Name("test-"+name),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	c.nc, c.js = nc, js
	return c
}

// violated reports whether the server refused something on subject.
func (c *client) violated(kind, subject string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := fmt.Sprintf("Permissions Violation for %s to %q", kind, subject)
	for _, v := range c.violations {
		if strings.Contains(v, want) {
			return true
		}
	}
	return false
}

// noViolations fails the test if the server refused anything the client did.
func (c *client) noViolations(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		t.Errorf("%s: unexpected %v", c.role, v)
	}
	c.violations = nil
}

// refused runs op and requires the server to refuse kind ("Publish" or
// "Subscription") on subject, and op to fail.
func (c *client) refused(t *testing.T, kind, subject string, op func(ctx context.Context) error) {
	t.Helper()
	c.refusedWhere(t, kind, fmt.Sprintf("%q", subject), op)
}

// refusedWhere is refused for a subject known only in part (a random
// consumer name in it): the refused subject must contain fragment.
func (c *client) refusedWhere(t *testing.T, kind, fragment string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- op(ctx) }()
	prefix := fmt.Sprintf("Permissions Violation for %s to ", kind)
	natstest.WaitFor(t, 5*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, v := range c.violations {
			if i := strings.Index(v, prefix); i >= 0 && strings.Contains(v[i+len(prefix):], fragment) {
				return nil
			}
		}
		return fmt.Errorf("%s: no permission violation for %s to a subject with %s yet", c.role, kind, fragment)
	})
	cancel() // the refused request would otherwise wait for its timeout
	if err := <-errc; err == nil {
		t.Errorf("%s: %s to %s reported success", c.role, kind, fragment)
	}
}

// count is the number of messages in stream whose subject matches filter,
// as the admin sees them (stream info with a subject filter).
func count(t *testing.T, admin *client, stream, filter string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := admin.js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}
