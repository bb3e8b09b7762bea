// Package natstest starts real NATS JetStream servers for tests and offers
// the polling helper tests use instead of sleeping.
package natstest

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/token"
)

// Env is a running embedded JetStream with Cordon's streams and buckets.
type Env struct {
	Server *natsrun.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	Dir    string
	// Anchor is a trust anchor made for the test: PublishKey endorses
	// keys with it, and verifiers given Anchors() accept them.
	Anchor token.Anchor
}

// Anchors is the trust set verifiers of this environment are given.
func (e *Env) Anchors() token.Anchors { return token.Anchors{e.Anchor.Public()} }

// KeyRecord returns the keys bucket value of s, endorsed by e.Anchor.
func (e *Env) KeyRecord(s token.Signer, created time.Time) []byte {
	b, err := json.Marshal(e.Anchor.EndorsedRecord(events.KeyRecord{KeyID: s.KeyID, PublicKey: s.Public(), Created: created.UTC()}))
	if err != nil {
		panic(err) // a KeyRecord always encodes
	}
	return b
}

// PublishKey puts s's endorsed public key in the keys bucket, as the
// issuer does, and returns the entry's revision.
func (e *Env) PublishKey(t testing.TB, s token.Signer) uint64 {
	t.Helper()
	kv, err := e.JS.KeyValue(context.Background(), events.BucketKeys)
	if err != nil {
		t.Fatalf("keys bucket: %v", err)
	}
	rev, err := kv.Put(context.Background(), s.KeyID, e.KeyRecord(s, time.Now()))
	if err != nil {
		t.Fatalf("publish key %s: %v", s.KeyID, err)
	}
	return rev
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
	if err := natsconn.Ensure(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Server: srv, NC: nc, JS: js, Dir: dir, Anchor: anchor}
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

// LogBuffer collects the log output of services running on several
// goroutines (a zerolog writer), for tests that read it back.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SkipJetStreamToggleUnderRace skips a test that switches JetStream off
// and on in a running server when the race detector is on:
// nats-server's EnableJetStream and DisableJetStream write the server's
// JetStream export subscriptions while its API dispatch reads them
// (nats-server v2.15.2, jetstream_api.go:1109 against :1026), a race in
// the server that its tests never meet. make test runs these tests; the
// race detector sees the same outage through a cluster losing a node
// (internal/faults TestNodeLossWithServicesRunning).
func SkipJetStreamToggleUnderRace(t testing.TB) {
	t.Helper()
	if RaceDetector {
		t.Skip("switching JetStream off and on in a running nats-server races inside the server under -race; covered without -race")
	}
}
