// Package natstest starts real NATS JetStream servers for tests and offers
// the polling helper tests use instead of sleeping.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsrun"
)

// Env is a running embedded JetStream with Cordon's streams and buckets.
type Env struct {
	Server *natsrun.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	Dir    string
}

// Run starts an in-process JetStream server on a free loopback port with a
// file store in a temporary directory, creates Cordon's streams and
// buckets, and stops everything when the test ends.
func Run(t testing.TB) *Env {
	t.Helper()
	return RunIn(t, t.TempDir())
}

// RunIn is Run with a given data directory (to restart on the same data).
func RunIn(t testing.TB, dir string) *Env {
	t.Helper()
	srv, err := natsrun.Start(natsrun.Options{DataDir: dir, Port: -1})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		srv.Stop()
		t.Fatalf("connect nats: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsrun.Ensure(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	e := &Env{Server: srv, NC: nc, JS: js, Dir: dir}
	t.Cleanup(e.Stop)
	return e
}

// Stop closes the client and shuts the server down; safe to call twice.
func (e *Env) Stop() {
	e.NC.Close()
	e.Server.Stop()
}

// WaitFor polls fn every 10ms until it returns nil or the timeout passes,
// then fails the test with fn's last error.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
