// Package natsrun runs NATS JetStream in-process (Cordon's embedded default)
// and creates or updates on it the streams and KV buckets defined by
// pkg/events (Bootstrap, with natsconn.Ensure).
package natsrun

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Options configures an embedded server.
type Options struct {
	// DataDir is the JetStream store directory (required).
	DataDir string
	// Host and Port to listen on; Port -1 picks a free port, 0 means 4222.
	Host string
	Port int
	// ServerName names the server in logs and cluster views.
	ServerName string
	// Logs enables nats-server's own logging to stderr.
	Logs bool
	// NkeyUsers, when set, makes clients authenticate as one of these
	// users, each with its permissions (natsauth.ServerAuth reads them):
	// the server then refuses every unauthenticated connection, over TCP
	// and in-process alike.
	NkeyUsers []*server.NkeyUser
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	*server.Server

	// mu serialises changes of the server's users (Bootstrap).
	mu sync.Mutex
	// opts are the options the server runs with (nil for a server that
	// Start did not make); a reload passes a clone of them.
	opts *server.Options
}

// Start starts an in-process NATS server with JetStream and waits until it
// accepts connections.
func Start(o Options) (*Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("start nats: data directory is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ServerName == "" {
		o.ServerName = "cordon"
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.DataDir,
		NoSigs:     true,
		NoLog:      !o.Logs,
		Nkeys:      o.NkeyUsers,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	if o.Logs {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("start nats: server not ready after 10s")
	}
	return &Server{Server: ns, opts: opts}, nil
}

// Connect returns an in-process client connection (no socket), dialled
// as every Cordon client is (natsconn.Dial): reconnecting forever, opts
// after Cordon's own.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	return natsconn.Dial(natsconn.Config{URL: s.ClientURL(), Name: name,
		Options: append([]nats.Option{nats.InProcessServer(s.Server)}, opts...)})
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Bootstrap creates Cordon's streams and buckets, or updates them to the
// current definitions (natsconn.Ensure), on this server.
//
// With authentication on (Options.NkeyUsers), no client identity may do
// that: updating a stream is denied to every role on purpose (a new MaxAge
// could empty the ledger or the denylist), and the embedded default must
// still apply the definitions of the running version at each start. So
// Bootstrap mints a one-time NKey identity in memory, adds it to the
// server's users (a reload) with natsauth.BootstrapPermissions — the stream
// create, update and info API of Cordon's streams, nothing else — connects
// in-process with it, runs natsconn.Ensure, disconnects, removes the identity from
// the server again and wipes its key. The seed is never written anywhere
// nor logged, and once Bootstrap returns nobody can authenticate as it.
// Without authentication it simply runs natsconn.Ensure on an in-process
// connection.
func (s *Server) Bootstrap(ctx context.Context, o events.StreamOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts == nil {
		return errors.New("bootstrap streams: the server was not started by natsrun.Start")
	}
	if len(s.opts.Nkeys) == 0 {
		return s.ensureAs(ctx, o)
	}
	kp, err := bootstrapKey()
	if err != nil {
		return fmt.Errorf("bootstrap streams: identity: %w", err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("bootstrap streams: identity: %w", err)
	}
	inbox := natsauth.InboxPrefix(pub)
	perms, err := natsauth.BootstrapPermissions(inbox)
	if err != nil {
		return fmt.Errorf("bootstrap streams: %w", err)
	}
	users := s.opts.Nkeys
	if err := s.reloadUsers(append(slices.Clone(users), &server.NkeyUser{Nkey: pub, Permissions: perms})); err != nil {
		return fmt.Errorf("bootstrap streams: add the bootstrap identity: %w", err)
	}
	err = s.ensureAs(ctx, o, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(inbox))
	if rerr := s.reloadUsers(users); rerr != nil {
		err = errors.Join(err, fmt.Errorf("bootstrap streams: remove the bootstrap identity: %w", rerr))
	}
	return err
}

// bootstrapKey makes the one-time identity of Bootstrap (a variable so
// that a test can keep the key and prove it is refused afterwards).
var bootstrapKey = nkeys.CreateUser

// ensureAs runs natsconn.Ensure on an in-process connection made with opts.
func (s *Server) ensureAs(ctx context.Context, o events.StreamOptions, opts ...nats.Option) error {
	nc, err := s.Connect("cordon-bootstrap", append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		return fmt.Errorf("bootstrap streams: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bootstrap streams: jetstream: %w", err)
	}
	return natsconn.Ensure(ctx, js, o)
}

// reloadUsers replaces the server's NKey users. Connections of users that
// are no longer listed are closed by the server.
func (s *Server) reloadUsers(users []*server.NkeyUser) error {
	next := s.opts.Clone()
	next.Nkeys = users
	keep := next.Clone() // ReloadOptions takes ownership of what it is given
	if err := s.Server.ReloadOptions(next); err != nil {
		return err
	}
	s.opts = keep
	return nil
}
