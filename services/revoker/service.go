package revoker

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/metricsserver"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// Service is a running revoker service: the revoker with its own NATS
// connection, the streams it needs and its metrics listener.
type Service struct {
	r       *Revoker
	nc      *nats.Conn
	metrics *metricsserver.Server
	ssf     *ssfServer

	closeOnce sync.Once
	closeErr  error
}

// Start runs the revoker service described by c — loads the response
// policy and the trust anchor, connects to NATS, creates the streams and
// buckets that are missing, starts the revoker (keys, token index,
// denylist, cordon.cmd.revoke, on-call alerts) and its metrics listener —
// and returns once it serves. Close stops it.
func Start(ctx context.Context, c Config) (_ *Service, err error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	resp, maxTTL, sinks, err := c.load()
	if err != nil {
		return nil, err
	}
	anchors, err := svcconfig.TrustAnchors(c.TrustAnchor, c.TrustAnchors)
	if err != nil {
		return nil, err
	}
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
	ssfOpts, err := c.SSF.options(ctx, c.DataDir)
	if err != nil {
		return nil, err
	}
	s.r, err = New(Options{NC: s.nc, JS: js, Policy: resp, Sinks: sinks, Alerts: c.Alerts, Log: c.Log, Source: c.Source,
		MaxTokenTTL: maxTTL, TrustAnchors: anchors, HeartbeatInterval: c.HeartbeatInterval, LedgerWait: c.LedgerWait,
		DataDir: c.DataDir, SSF: ssfOpts})
	if err != nil {
		return nil, err
	}
	if err := s.r.Start(ctx); err != nil {
		return nil, err
	}
	if c.MetricsListen != "" {
		if s.metrics, err = metricsserver.Start(metricsserver.Options{Addr: c.MetricsListen, Name: "revoker", Collector: s.r, Log: c.Log}); err != nil {
			return nil, err
		}
	}
	if c.SSF.Listen != "" {
		if s.ssf, err = startSSFServer(c.SSF.Listen, s.r.SSFHandler()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run runs the revoker service until ctx ends, then stops it.
func Run(ctx context.Context, c Config) error {
	s, err := Start(ctx, c)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// Revoker is the running revoker (Revoke, Responses…).
func (s *Service) Revoker() *Revoker { return s.r }

// MetricsAddr is the metrics listener's address ("" when off).
func (s *Service) MetricsAddr() string { return s.metrics.Addr() }

// SSFAddr is the Shared Signals listener's address ("" when off).
func (s *Service) SSFAddr() string { return s.ssf.Addr() }

// Close stops the metrics listener and the revoker and closes the NATS
// connection. Safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		errs := []error{s.metrics.Close(), s.ssf.Close()}
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		if s.nc != nil {
			s.nc.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
