package natsrun_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

func TestEnsureCreatesStreamsAndBuckets(t *testing.T) {
	env := natstest.Run(t)
	ctx := context.Background()
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		if _, err := env.JS.Stream(ctx, cfg.Name); err != nil {
			t.Errorf("stream %s: %v", cfg.Name, err)
		}
	}
	kv, err := env.JS.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatalf("denylist bucket: %v", err)
	}
	// Per-key TTL: the entry disappears when the token would have expired.
	if _, err := kv.Create(ctx, "tok1", []byte("x"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatalf("create with ttl: %v", err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		_, err := kv.Get(ctx, "tok1")
		if err == nil {
			return context.DeadlineExceeded
		}
		return nil
	})
}

func TestEnsureIsIdempotentAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.RunIn(t, dir)
	env.Stop()
	env2 := natstest.RunIn(t, dir)
	if _, err := env2.JS.Stream(context.Background(), events.StreamTokens); err != nil {
		t.Fatal(err)
	}
}
