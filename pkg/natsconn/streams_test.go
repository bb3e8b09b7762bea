package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// startBare starts a NATS server with no stream at all.
func startBare(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	nc, err := natsconn.Dial(natsconn.Config{URL: srv.ClientURL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestEnsureMissingLeavesExistingAlone: a service creates what is missing
// and never changes a stream an operator tuned (a service identity may not
// update one); Ensure, the bootstrap's, brings it to this version's
// definition.
func TestEnsureMissingLeavesExistingAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startBare(t)
	var usage jetstream.StreamConfig
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		if cfg.Name == events.StreamUsage {
			usage = cfg
		}
	}
	tuned := usage
	tuned.MaxAge = usage.MaxAge / 2
	tuned.Description = "tuned by the operator"
	if _, err := js.CreateStream(ctx, tuned); err != nil {
		t.Fatal(err)
	}
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		if _, err := js.Stream(ctx, cfg.Name); err != nil {
			t.Errorf("stream %s not created: %v", cfg.Name, err)
		}
	}
	for _, cfg := range events.Buckets(events.StreamOptions{}) {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			t.Errorf("bucket %s not created: %v", cfg.Bucket, err)
		}
	}
	info := streamInfo(ctx, t, js, events.StreamUsage)
	if info.Config.MaxAge != tuned.MaxAge || info.Config.Description != tuned.Description {
		t.Errorf("EnsureMissing changed the operator's %s: max age %v, description %q", events.StreamUsage, info.Config.MaxAge, info.Config.Description)
	}
	// Twice is the same as once.
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if err := natsconn.Ensure(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(ctx, t, js, events.StreamUsage); info.Config.MaxAge != usage.MaxAge {
		t.Errorf("Ensure left %s's max age at %v, want %v", events.StreamUsage, info.Config.MaxAge, usage.MaxAge)
	}
}

func streamInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestOpen: a service's first step dials, creates every missing stream
// and bucket and hands back a working JetStream context; a server that
// is not there is an error, not a half-open connection.
func TestOpen(t *testing.T) {
	srv, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := natsconn.Open(ctx, natsconn.Config{URL: srv.ClientURL(), Name: "test-open"}, events.StreamOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, cfg := range events.Streams(events.StreamOptions{}) {
		streamInfo(ctx, t, js, cfg.Name)
	}
	for _, cfg := range events.Buckets(events.StreamOptions{}) {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			t.Errorf("bucket %s after Open: %v", cfg.Bucket, err)
		}
	}

	dead := natsconn.Config{URL: "nats://127.0.0.1:1", Name: "test-open-dead"}
	if nc, js, err := natsconn.Open(ctx, dead, events.StreamOptions{}, zerolog.Nop()); err == nil || nc != nil || js != nil {
		t.Fatalf("Open of a server that is not there: %v, %v, %v", nc, js, err)
	}
}

// TestEnsureMissingWaitsForJetStream: a service that starts while
// JetStream is not answering yet (a cluster still electing its meta
// leader, a reply lost in a route change) asks again instead of failing
// its start; it was one request that waited out the whole deadline.
func TestEnsureMissingWaitsForJetStream(t *testing.T) {
	natstest.SkipJetStreamToggleUnderRace(t)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := natsconn.Dial(natsconn.Config{URL: srv.ClientURL(), Name: "test-wait"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var logs natstest.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- natsconn.EnsureMissing(context.Background(), js, events.StreamOptions{}, zerolog.New(&logs))
	}()
	// JetStream comes up only once the first request has been refused.
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), "asking again") {
			return errors.New("no retry logged yet")
		}
		return nil
	})
	if err := srv.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("EnsureMissing after JetStream came up: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cfg := range events.Buckets(events.StreamOptions{}) {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			t.Errorf("bucket %s: %v", cfg.Bucket, err)
		}
	}
}

// TestEnsureMissingStopsOnPermanentErrors: a refusal that asking again
// cannot change is returned at once, not retried until the deadline.
func TestEnsureMissingStopsOnPermanentErrors(t *testing.T) {
	js := startBare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A USAGE stream that does not exist under that name but holds its
	// subjects makes creating USAGE overlap: a permanent refusal.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"cordon.usage.>"}}); err != nil {
		t.Fatal(err)
	}
	var logs natstest.LogBuffer
	err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{}, zerolog.New(&logs))
	if err == nil {
		t.Fatal("EnsureMissing created USAGE over another stream's subjects")
	}
	if strings.Contains(logs.String(), "asking again") {
		t.Errorf("a permanent refusal was retried: %v\n%s", err, logs.String())
	}
}

// TestUsagePartitionsNeverChangeSilently: a USAGE stream keeps the
// partition count it was made with. A service given another count refuses
// to start with both counts and what to do; the bootstrap (Ensure) keeps
// the count when given none and refuses another one; the same count, or
// none, is fine everywhere.
func TestUsagePartitionsNeverChangeSilently(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startBare(t)
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{UsagePartitions: 16}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	parts := func() int {
		t.Helper()
		p, err := natsconn.UsagePartitions(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := parts(); p != 16 {
		t.Fatalf("created with %d partitions, want 16", p)
	}
	for _, c := range []struct {
		name string
		run  func(o events.StreamOptions) error
	}{
		{"service", func(o events.StreamOptions) error { return natsconn.EnsureMissing(ctx, js, o, zerolog.Nop()) }},
		{"bootstrap", func(o events.StreamOptions) error { return natsconn.Ensure(ctx, js, o) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, want := range []int{8, 1, 64} {
				err := c.run(events.StreamOptions{UsagePartitions: want})
				if !errors.Is(err, natsconn.ErrUsagePartitions) || !errors.Is(err, svcconfig.ErrInvalid) {
					t.Fatalf("--usage-partitions %d against 16: %v, want ErrUsagePartitions", want, err)
				}
				for _, say := range []string{"has 16 partitions", fmt.Sprintf("--usage-partitions %d;", want), "--usage-partitions 16 ($CORDON_USAGE_PARTITIONS)", "docs/operations.md"} {
					if !strings.Contains(err.Error(), say) {
						t.Errorf("error %q does not say %q", err, say)
					}
				}
				if p := parts(); p != 16 {
					t.Fatalf("the refused %d changed the stream to %d partitions", want, p)
				}
			}
			for _, o := range []events.StreamOptions{{UsagePartitions: 16}, {}} {
				if err := c.run(o); err != nil {
					t.Fatalf("%+v: %v", o, err)
				}
				if p := parts(); p != 16 {
					t.Fatalf("%+v changed the stream to %d partitions", o, p)
				}
			}
		})
	}
}

// TestUsagePartitionsOfALegacyStream: a USAGE stream made before
// partitioned usage is not refused by a service (auditors read it as one
// partition) and is given its partitions by the bootstrap.
func TestUsagePartitionsOfALegacyStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startBare(t)
	legacy := events.Streams(events.StreamOptions{})[1]
	if legacy.Name != events.StreamUsage {
		t.Fatalf("stream 1 is %s", legacy.Name)
	}
	legacy.SubjectTransform = nil
	if _, err := js.CreateStream(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	var logs natstest.LogBuffer
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{UsagePartitions: 8}, zerolog.New(&logs)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no partitions") {
		t.Errorf("no warning about the unpartitioned stream: %s", logs.String())
	}
	if p, err := natsconn.UsagePartitions(ctx, js); err != nil || p != 0 {
		t.Fatalf("EnsureMissing changed the legacy stream: %d partitions, %v", p, err)
	}
	if err := natsconn.Ensure(ctx, js, events.StreamOptions{UsagePartitions: 4}); err != nil {
		t.Fatal(err)
	}
	if p, err := natsconn.UsagePartitions(ctx, js); err != nil || p != 4 {
		t.Fatalf("bootstrap of a legacy stream: %d partitions, %v; want 4", p, err)
	}
}

// TestChangeUsagePartitions walks the NATS steps docs/operations.md gives
// for changing the partition count of a deployment (with the auditors
// stopped after they caught up): the operator changes only the USAGE
// stream's subject transform, then purges the stream. New batches land on
// the new partitions, with sequences above every old one (the auditors'
// insert de-duplication tokens are made of sequences: a recreated stream
// would start again at 1 and could repeat a token ClickHouse still
// remembers, dropping new rows), and the services accept the new count
// only.
func TestChangeUsagePartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startBare(t)
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := js.Publish(ctx, events.UsageBatchSubject("acme", "edge-1", fmt.Sprintf("holder-%d", i)), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(40)
	before := streamInfo(ctx, t, js, events.StreamUsage)

	// The operator's edit: the transform of 16 partitions, nothing else.
	cfg := before.Config
	cfg.SubjectTransform.Destination = events.Streams(events.StreamOptions{UsagePartitions: 16})[1].SubjectTransform.Destination
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("update the transform: %v", err)
	}
	s, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := natsconn.UsagePartitions(ctx, js); err != nil || p != 16 {
		t.Fatalf("after the edit: %d partitions (%v), want 16", p, err)
	}
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{UsagePartitions: 8}, zerolog.Nop()); !errors.Is(err, natsconn.ErrUsagePartitions) {
		t.Fatalf("a service still given 8: %v", err)
	}
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{UsagePartitions: 16}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	publish(40)
	after := streamInfo(ctx, t, js, events.StreamUsage)
	if after.State.Msgs != 40 || after.State.FirstSeq != before.State.LastSeq+1 {
		t.Fatalf("after the purge: %d messages from sequence %d, want 40 from %d", after.State.Msgs, after.State.FirstSeq, before.State.LastSeq+1)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(40, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range msgs.Messages() {
		p, tenant, _, holder, err := events.ParseUsagePartSubject(m.Subject())
		if err != nil {
			t.Fatal(err)
		}
		if want := events.UsagePartition(tenant, holder, 16); p != want {
			t.Errorf("%s: partition %d, want %d of 16", m.Subject(), p, want)
		}
		n++
	}
	if n != 40 {
		t.Fatalf("read %d of 40 (%v)", n, msgs.Error())
	}
}
