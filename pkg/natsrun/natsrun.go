// Package natsrun runs NATS JetStream in-process (Cordon's embedded default)
// and creates the streams and KV buckets defined by pkg/events.
package natsrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
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
	// users, each with its permissions (natsauth.ServerAuth reads them).
	NkeyUsers []*server.NkeyUser
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	*server.Server
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
	return &Server{ns}, nil
}

// Connect returns an in-process client connection (no socket).
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.Server), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Ensure creates or updates the Cordon streams and KV buckets.
func Ensure(ctx context.Context, js jetstream.JetStream, o events.StreamOptions) error {
	for _, cfg := range events.Streams(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range events.Buckets(o) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}
