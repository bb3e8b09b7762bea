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
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// EnsureMissing creates Cordon's streams and buckets that do not exist
// yet, leaving existing ones (possibly tuned for a cluster) untouched: what
// a service does at start. Every service role may do that and no more
// (natsauth: stream info and create, never update).
//
// Each JetStream request gets ensureAttempt; one that times out or finds
// JetStream not ready (a cluster still forming its routes, a meta leader
// being elected) is sent again with back-off, so a reply lost in a route
// change costs seconds, not the start. It gives up after 30 seconds.
func EnsureMissing(ctx context.Context, js jetstream.JetStream, o events.StreamOptions, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, cfg := range events.Streams(o) {
		var existing *jetstream.StreamConfig
		err := Retry(ctx, log, "stream "+cfg.Name, func(ctx context.Context) error {
			s, err := js.Stream(ctx, cfg.Name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				if _, err = js.CreateStream(ctx, cfg); err == nil {
					log.Info().Str("stream", cfg.Name).Int("replicas", cfg.Replicas).Msg("created stream")
				}
			} else if err == nil {
				c := s.CachedInfo().Config
				existing = &c
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
		if existing != nil && cfg.Name == events.StreamUsage {
			if err := CheckUsagePartitions(*existing, o.UsagePartitions); err != nil {
				return err
			}
			if events.UsagePartitionsOf(*existing) == 0 {
				log.Warn().Str("stream", cfg.Name).Msg("the USAGE stream has no partitions (made before partitioned usage): auditors read it as one partition; " +
					"the embedded bootstrap (cordon up) adds them, or see docs/operations.md")
			}
		}
	}
	for _, cfg := range events.Buckets(o) {
		err := Retry(ctx, log, "bucket "+cfg.Bucket, func(ctx context.Context) error {
			_, err := js.KeyValue(ctx, cfg.Bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				if _, err = js.CreateKeyValue(ctx, cfg); err == nil {
					log.Info().Str("bucket", cfg.Bucket).Int("replicas", cfg.Replicas).Msg("created bucket")
				}
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// ensureAttempt bounds one JetStream request of EnsureMissing.
const ensureAttempt = 5 * time.Second

// Retry runs op with a deadline of a few seconds per attempt until it
// succeeds, fails for a reason retrying cannot change, or ctx ends; what
// names the operation in the warnings it logs. It is for idempotent
// JetStream administration (creating or opening a stream, bucket or
// object store with a fixed definition), whose reply a cluster that is
// still forming may lose: the same request sent again is safe.
func Retry(ctx context.Context, log zerolog.Logger, what string, op func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, ensureAttempt)
		err := op(actx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && attempt > 1 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt)
			}
			return err
		}
		log.Warn().Err(err).Str("what", what).Int("attempt", attempt).Msg("JetStream not answering yet, asking again")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %d attempts)", err, attempt)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// ErrNotVisibleYet marks an error of an operation passed to Retry that is
// worth asking again: a stream, bucket or object store another process
// created a moment ago that a JetStream cluster does not know everywhere
// yet ("stream not found" right after "already exists").
var ErrNotVisibleYet = errors.New("created a moment ago, not visible yet")

// transient reports whether err may go away by asking again: no reply in
// time, nobody listening yet, JetStream saying it is not ready, or
// ErrNotVisibleYet.
func transient(err error) bool {
	if errors.Is(err, ErrNotVisibleYet) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}

// ErrUsagePartitions marks a USAGE stream whose partition count is not the
// one configured (--usage-partitions): a service never changes it.
var ErrUsagePartitions = errors.New("USAGE partition count differs from the configured one")

// CheckUsagePartitions compares an existing USAGE stream's partition count
// with want, the configured one: 0 (not configured: any count is fine) or
// the same count is fine, and so is a stream without partitions (made
// before partitioned usage; auditors read it as one partition). Another
// count is a configuration mistake (svcconfig.ErrInvalid and
// ErrUsagePartitions) whose message names both counts and what to do.
func CheckUsagePartitions(existing jetstream.StreamConfig, want int) error {
	have := events.UsagePartitionsOf(existing)
	if want == 0 || have == 0 || have == want {
		return nil
	}
	return svcconfig.Invalidf("%w: the %s stream has %d partitions and this service was given --usage-partitions %d; "+
		"a stream's partition count is never changed by a service: pass --usage-partitions %d ($CORDON_USAGE_PARTITIONS) to every service, "+
		"or change the stream's count as docs/operations.md says (drain the auditors, change %s's subject transform and purge it)",
		ErrUsagePartitions, events.StreamUsage, have, want, have, events.StreamUsage)
}

// UsagePartitions reads the partition count of the USAGE stream: 0 when
// it has none (made before partitioned usage). It is an error when the
// stream does not exist.
func UsagePartitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	s, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", events.StreamUsage, err)
	}
	return events.UsagePartitionsOf(s.CachedInfo().Config), nil
}

// Ensure creates Cordon's streams and buckets or updates them to this
// version's definitions: what the embedded server's bootstrap
// (natsrun.Server.Bootstrap) and test harnesses do. Services use
// EnsureMissing: no service identity may update a stream.
//
// The USAGE stream's partition count is never changed: with
// o.UsagePartitions 0 an existing partitioned stream keeps its count, and
// another count than the stream's is refused (CheckUsagePartitions). A
// stream without partitions (made before partitioned usage) is given them.
func Ensure(ctx context.Context, js jetstream.JetStream, o events.StreamOptions) error {
	s, err := js.Stream(ctx, events.StreamUsage)
	switch {
	case err == nil:
		existing := s.CachedInfo().Config
		if err := CheckUsagePartitions(existing, o.UsagePartitions); err != nil {
			return err
		}
		if p := events.UsagePartitionsOf(existing); p > 0 {
			o.UsagePartitions = p
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("ensure stream %s: %w", events.StreamUsage, err)
	}
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
