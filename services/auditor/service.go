package auditor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/metricsserver"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chserver"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

// Service is a running auditor service: the auditor consuming usage and
// the ledger into the store with its detectors, the analysts' API (unless
// left out) and the metrics listener, on its own NATS connection.
type Service struct {
	a       *Auditor
	st      *store.Store
	detMu   sync.Mutex
	dets    map[int]*detect.Engine
	know    *Knowledge
	log     zerolog.Logger
	nc      *nats.Conn
	ckpt    *checkpointClock
	auth    *AdminAuth
	qs      *QueryServer
	metrics *metricsserver.Server

	cancel context.CancelFunc
	done   chan struct{}
	runErr error // set before done is closed

	closeOnce sync.Once
	closeErr  error
}

// Start runs the auditor service described by c — connects to NATS,
// creates the streams and buckets that are missing, opens the store,
// restores the detectors' checkpoint, starts consuming, serves the
// analysts' API and the metrics — and returns. Close stops it; Done says
// when it stopped on its own (an error Close returns).
func Start(ctx context.Context, c Config) (_ *Service, err error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l, err := c.load()
	if err != nil {
		return nil, err
	}
	var anchors token.Anchors
	if !c.NoAnalystAPI {
		if anchors, err = svcconfig.TrustAnchors(c.TrustAnchor, c.TrustAnchors); err != nil {
			return nil, err
		}
	}
	s := &Service{done: make(chan struct{}), log: c.Log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var js jetstream.JetStream
	if s.nc, js, err = natsconn.Open(ctx, c.NATS, events.StreamOptions{Replicas: c.Replicas, UsagePartitions: c.UsagePartitions}, c.Log); err != nil {
		return nil, err
	}
	// A static list naming a partition the stream does not have would
	// leave it unread: refused here, where the stream's count is known
	// (--check-config works without NATS and checks --usage-partitions).
	if len(c.Partitions) > 0 {
		parts, err := natsconn.UsagePartitions(ctx, js)
		if err != nil {
			return nil, err
		}
		if err := c.checkPartitions(max(parts, 1), "the USAGE stream has"); err != nil {
			return nil, err
		}
	}
	if c.Instance == "" {
		c.Instance = DefaultInstance()
	}
	b, err := c.openBackend(ctx, l)
	if err != nil {
		return nil, err
	}
	if s.st, err = store.Open(ctx, b, c.storeOptions()); err != nil {
		b.Close()
		return nil, err
	}
	if _, err = detect.New(l.detectors); err != nil {
		return nil, err
	}
	// What one partition's detector learns that the others use, shared
	// with every instance (knowledge.go).
	if s.know, err = OpenKnowledge(ctx, js, KnowledgeOptions{Replicas: c.Replicas, Wait: c.ShareWait, Log: c.Log}); err != nil {
		return nil, err
	}
	s.dets = map[int]*detect.Engine{}
	newDetector := func(p, parts int) (Detector, error) {
		d, err := detect.New(PartitionBounds(l.detectors, parts))
		if err != nil {
			return nil, err
		}
		d.Share(s.know.Shared(), s.know.Gate(p, parts))
		s.detMu.Lock()
		s.dets[p] = d
		s.detMu.Unlock()
		return d, nil
	}
	var owner Owner = StaticOwner{Own: c.Partitions}
	var state PartitionState = DirState{Dir: c.StateDir}
	if c.Lease {
		if owner, state, err = c.leaseMode(ctx, js); err != nil {
			return nil, err
		}
	}
	s.ckpt = &checkpointClock{PartitionState: state, at: map[int]time.Time{}}
	s.a, err = New(Options{JS: js, Store: s.st, NewDetector: newDetector, Owner: owner, State: s.ckpt, StateDir: c.StateDir, Durable: c.Durable,
		Knowledge: s.know, BatchSize: c.BatchSize, BatchWait: c.BatchWait, AnomalyWait: c.AnomalyWait, Writers: c.Writers, SeparateInserts: c.SeparateInserts, AckWait: c.AckWait, CheckpointEvery: c.CheckpointEvery,
		Source: c.Source, Log: c.Log})
	if err != nil {
		return nil, err
	}
	if !c.NoAnalystAPI {
		// The analyst API authenticates callers with the control plane's
		// admin authenticator: the issuer's keys (endorsed by its trust
		// anchor) and the denylist, replicated by NATS, and the admin
		// tokens' ledger.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.auth, err = StartAdminAuth(sctx, js, anchors, c.Log)
		cancel()
		if err != nil {
			return nil, err
		}
		if s.qs, err = NewQueryServer(QueryOptions{NC: s.nc, Store: s.st, Auth: s.auth, Status: s.a.Stats,
			Instance: InstanceInfo{Name: c.Instance, Source: c.Source, Lease: c.Lease}, Checkpoints: s.checkpoints, Log: c.Log}); err != nil {
			return nil, err
		}
		if err := s.qs.Start(); err != nil {
			s.qs = nil // Start closed it
			return nil, err
		}
	}
	if c.MetricsListen != "" {
		if s.metrics, err = metricsserver.Start(metricsserver.Options{Addr: c.MetricsListen, Name: "auditor", Collector: checkpointCollector{s.a.Collector(), s.checkpoints}, Log: c.Log}); err != nil {
			return nil, err
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		// Once Close cancelled runCtx, an error is the stop itself (a
		// consumer being created when the stop came reports it as its own
		// error, not always as context.Canceled).
		if err := s.a.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) && runCtx.Err() == nil {
			s.runErr = fmt.Errorf("auditor: %w", err)
			c.Log.Error().Err(err).Msg("auditor stopped")
		}
	}()
	c.Log.Info().Str("store", c.storeName()).Str("database", c.Database).Strs("detectors", enabledDetectors(l.detectors)).Msg("auditor running")
	return s, nil
}

// storeName says which store the auditor writes to, for its logs.
func (c *Config) storeName() string {
	if c.Backend != nil {
		return "given"
	}
	return c.Store
}

// openBackend opens the store's engine.
func (c *Config) openBackend(ctx context.Context, l loaded) (b store.Backend, err error) {
	switch {
	case c.Backend != nil:
		b, err = c.Backend(ctx)
	case c.Store == StoreCHDB:
		b, err = OpenChDB(ctx, c.ChDBPath, c.Database)
	default:
		ch := c.ClickHouse
		b, err = chserver.Open(ctx, chserver.Options{Addr: ch.Addr, Database: c.Database, User: ch.User, Password: l.password,
			AnalystUser: ch.AnalystUser, AnalystPassword: l.analystPassword, TLS: ch.TLS, CAFile: ch.CAFile})
	}
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", c.storeName(), err)
	}
	return b, nil
}

// Run runs the auditor service until ctx ends or the auditor stops on its
// own, then stops it; it returns why the auditor stopped, if not asked to.
func Run(ctx context.Context, c Config) error {
	s, err := Start(ctx, c)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.Done():
	}
	return s.Close()
}

// Auditor is the running auditor (Stats…).
func (s *Service) Auditor() *Auditor { return s.a }

// Knowledge is what the partitions' detectors share (knowledge.go).
func (s *Service) Knowledge() *Knowledge { return s.know }

// Store is the store the auditor writes to.
func (s *Service) Store() *store.Store { return s.st }

// Detector is the detection engine of the lowest partition started (each
// owned partition has its own; Auditor().Detectors() lists them), nil
// before one started.
func (s *Service) Detector() *detect.Engine {
	s.detMu.Lock()
	defer s.detMu.Unlock()
	if len(s.dets) == 0 {
		return nil
	}
	return s.dets[slices.Min(slices.Collect(maps.Keys(s.dets)))]
}

// PartitionBounds is cfg for one of parts partitions: its bounds on
// tokens, holders, tenants and sources divided by parts (at least 1 each),
// so that the partitions together hold what one engine would.
func PartitionBounds(cfg detect.Config, parts int) detect.Config {
	if parts <= 1 {
		return cfg
	}
	div := func(n int) int { return max(1, (n+parts-1)/parts) }
	cfg.MaxTokens, cfg.MaxHolders, cfg.MaxTenants, cfg.MaxSources = div(cfg.MaxTokens), div(cfg.MaxHolders), div(cfg.MaxTenants), div(cfg.MaxSources)
	return cfg
}

// MetricsAddr is the metrics listener's address ("" when off).
func (s *Service) MetricsAddr() string { return s.metrics.Addr() }

// Done is closed when the auditor stopped consuming: on its own (Close
// then returns why) or because of Close.
func (s *Service) Done() <-chan struct{} { return s.done }

// Close stops the auditor (it writes what it analysed and its final
// checkpoint), the analysts' API and the metrics listener, then closes
// the store and the NATS connection. It returns why the auditor stopped
// if it stopped on its own. Safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.cancel != nil {
			s.cancel()
			<-s.done
			errs = append(errs, s.runErr)
		}
		if s.know != nil {
			s.know.Close()
			st := s.know.Stats()
			s.log.Info().Int("facts", st.Facts).Uint64("written", st.Written).Uint64("received", st.Received).Uint64("waits", st.Waits).
				Uint64("gave_up", st.GaveUp).Uint64("dropped", st.Dropped).Uint64("invalid", st.Invalid).Msg("shared knowledge")
		}
		if s.qs != nil {
			errs = append(errs, s.qs.Close())
		}
		if s.auth != nil {
			errs = append(errs, s.auth.Close())
		}
		errs = append(errs, s.metrics.Close())
		if s.st != nil {
			errs = append(errs, s.st.Close())
		}
		if s.nc != nil {
			s.nc.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// leaseMode is the owner and partition state of --lease: leases in NATS,
// checkpoints and intents in JetStream, for the USAGE stream's partitions.
func (c *Config) leaseMode(ctx context.Context, js jetstream.JetStream) (Owner, PartitionState, error) {
	usage, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return nil, nil, fmt.Errorf("--lease: the USAGE stream: %w", err)
	}
	parts := max(events.UsagePartitionsOf(usage.CachedInfo().Config), 1)
	owner, err := NewLeaseOwner(LeaseOptions{JS: js, Instance: c.Instance, TTL: c.LeaseTTL, Replicas: c.Replicas, Log: c.Log})
	if err != nil {
		return nil, nil, fmt.Errorf("--lease: %w", err)
	}
	state, err := OpenJSState(ctx, JSStateOptions{JS: js, Fence: owner, Partitions: parts, Replicas: c.Replicas, Log: c.Log})
	if err != nil {
		return nil, nil, fmt.Errorf("--lease: %w", err)
	}
	return owner, state, nil
}

// checkpointClock is the auditor's PartitionState, remembering when each
// partition last saved its checkpoint: what `cordon auditor status` shows.
type checkpointClock struct {
	PartitionState
	mu sync.Mutex
	at map[int]time.Time
}

// SaveCheckpoint implements PartitionState.
func (c *checkpointClock) SaveCheckpoint(ctx context.Context, p int, data []byte) error {
	err := c.PartitionState.SaveCheckpoint(ctx, p, data)
	if err == nil {
		c.mu.Lock()
		c.at[p] = time.Now().UTC()
		c.mu.Unlock()
	}
	return err
}

// last returns when each partition saved its last checkpoint in this
// process.
func (c *checkpointClock) last() map[int]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.at)
}

// checkpoints returns when each partition the auditor runs now saved its
// last checkpoint (one it handed over is left out: its new owner reports
// it).
func (s *Service) checkpoints() map[int]time.Time {
	at := s.ckpt.last()
	out := make(map[int]time.Time, len(at))
	for _, p := range s.a.Stats().Partitions {
		if t, ok := at[p.Partition]; ok {
			out[p.Partition] = t
		}
	}
	return out
}
