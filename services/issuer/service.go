package issuer

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/pkg/metricsserver"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Service is a running issuer service: the issuer with its own NATS
// connection, the streams it needs and its metrics listener.
type Service struct {
	iss     *Issuer
	nc      *nats.Conn
	metrics *metricsserver.Server

	closeOnce sync.Once
	closeErr  error
}

// Start runs the issuer service described by c — connects to NATS,
// creates the streams and buckets that are missing, starts the issuer
// (ledger replay, keys, bootstrap admin token, HTTP API, NATS commands)
// and its metrics listener — and returns once it serves. Close stops it.
func Start(ctx context.Context, c Config) (_ *Service, err error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	pol, tlsConf, err := c.load()
	if err != nil {
		return nil, err
	}
	adminTTL, _ := c.adminTTL()
	s := &Service{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var js jetstream.JetStream
	if s.nc, js, err = natsconn.Open(ctx, c.NATS, events.StreamOptions{Replicas: c.Replicas, UsagePartitions: c.UsagePartitions}, c.Log); err != nil {
		return nil, err
	}
	var leakKeys *leak.Keys
	if c.LeakGitHubKeys != "" {
		if leakKeys, err = leak.NewKeys(leak.KeysOptions{Source: c.LeakGitHubKeys}); err != nil {
			return nil, err
		}
	}
	s.iss, err = New(Options{NC: s.nc, JS: js, DataDir: c.DataDir, Policy: pol, Logger: c.Log, Source: c.Source,
		Grace: c.Grace, AdminTTL: adminTTL, Listen: c.Listen, TLS: tlsConf, AnchorFile: c.AnchorKey,
		LeakKeys: leakKeys, LeakRate: c.LeakRate, LeakBurst: c.LeakBurst})
	if err != nil {
		return nil, err
	}
	if err := s.iss.Start(ctx); err != nil {
		return nil, err
	}
	if c.MetricsListen != "" {
		if s.metrics, err = metricsserver.Start(metricsserver.Options{Addr: c.MetricsListen, Name: "issuer", Collector: s.iss.Collector(), Log: c.Log}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run runs the issuer service until ctx ends, then stops it.
func Run(ctx context.Context, c Config) error {
	s, err := Start(ctx, c)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// Issuer is the running issuer (Issue, TrustAnchor, Addr…).
func (s *Service) Issuer() *Issuer { return s.iss }

// MetricsAddr is the metrics listener's address ("" when off).
func (s *Service) MetricsAddr() string { return s.metrics.Addr() }

// Close stops the metrics listener and the issuer and closes the NATS
// connection. Safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		errs = append(errs, s.metrics.Close())
		if s.iss != nil {
			errs = append(errs, s.iss.Close())
		}
		if s.nc != nil {
			s.nc.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
