package natsconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// EnsureMissing creates Cordon's streams and buckets that do not exist
// yet, leaving existing ones (possibly tuned for a cluster) untouched: what
// a service does at start. Every service role may do that and no more
// (natsauth: stream info and create, never update). It gives up after 30
// seconds.
func EnsureMissing(ctx context.Context, js jetstream.JetStream, o events.StreamOptions, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, cfg := range events.Streams(o) {
		_, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if _, err = js.CreateStream(ctx, cfg); err == nil {
				log.Info().Str("stream", cfg.Name).Int("replicas", cfg.Replicas).Msg("created stream")
			}
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range events.Buckets(o) {
		_, err := js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			if _, err = js.CreateKeyValue(ctx, cfg); err == nil {
				log.Info().Str("bucket", cfg.Bucket).Int("replicas", cfg.Replicas).Msg("created bucket")
			}
		}
		if err != nil {
			return fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// Ensure creates Cordon's streams and buckets or updates them to this
// version's definitions: what the embedded server's bootstrap
// (natsrun.Server.Bootstrap) and test harnesses do. Services use
// EnsureMissing: no service identity may update a stream.
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

// Open is what a control-plane service does first: Dial, a JetStream
// context on the connection, and EnsureMissing with o. On error the
// connection is closed again.
func Open(ctx context.Context, c Config, o events.StreamOptions, log zerolog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := Dial(c)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		err = fmt.Errorf("jetstream: %w", err)
	} else {
		err = EnsureMissing(ctx, js, o, log)
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
