// Package enforcer is the enforcing reverse proxy as a service: an
// Enforcer (pkg/enforce, the library: Check, middleware, NewProxy) in
// front of one upstream HTTP service, with its own NATS identity, TLS,
// metrics and health. `cordon enforce` runs it, `cordon up` runs it in
// front of its demo service, and a program embeds it with Start.
package enforcer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/metricsserver"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// Service is a running enforcing proxy.
type Service struct {
	e       *enforce.Enforcer
	nc      *nats.Conn
	srv     *http.Server
	ln      net.Listener
	metrics *metricsserver.Server
	log     zerolog.Logger

	done     chan struct{}
	serveErr error // set before done is closed

	closeOnce sync.Once
	closeErr  error
}

// Start runs the enforcing proxy described by c — loads the routes and
// the trust anchor, starts the enforcer on its own NATS connection (keys
// and denylist loaded within SyncTimeout), serves its metrics and the
// proxy — and returns once requests are served. Close stops it.
func Start(ctx context.Context, c Config) (_ *Service, err error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	o, tlsConf, err := c.load()
	if err != nil {
		return nil, err
	}
	if o.TrustAnchors, err = svcconfig.TrustAnchors(c.TrustAnchor, o.TrustAnchors); err != nil {
		return nil, err
	}
	up, err := c.upstream()
	if err != nil {
		return nil, err
	}
	s := &Service{log: o.Log, done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.e, err = enforce.New(o); err != nil {
		return nil, err
	}
	h, err := enforce.NewProxy(s.e, up)
	if err != nil {
		return nil, err
	}
	if s.nc, err = natsconn.Dial(c.NATS); err != nil {
		return nil, err
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("enforcer: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.SyncTimeout)
	err = s.e.Start(sctx, js)
	cancel()
	if err != nil {
		return nil, err
	}
	if c.MetricsListen != "" {
		s.metrics, err = metricsserver.Start(metricsserver.Options{Addr: c.MetricsListen, Name: "enforcer", Collector: s.e.Collector(),
			Health: s.health, Log: o.Log})
		if err != nil {
			return nil, err
		}
	}
	if s.ln, err = net.Listen("tcp", c.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if tlsConf != nil {
		s.ln = tls.NewListener(s.ln, tlsConf)
	}
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = fmt.Errorf("serve: %w", err)
		}
	}()
	eo := s.e.Options()
	o.Log.Info().Str("listen", s.ln.Addr().String()).Str("upstream", up.Redacted()).
		Bool("tls", tlsConf != nil).Bool("fail_closed", eo.FailClosed && eo.MaxStaleness > 0).
		Dur("max_staleness", eo.MaxStaleness).Str("staleness_policy", eo.StalenessPolicy()).Str("usage_spool", spoolPolicy(eo)).
		Msg("enforcing proxy serving")
	return s, nil
}

// health is the metrics listener's /healthz: unhealthy while the denylist
// view is older than the staleness bound.
func (s *Service) health() error {
	if o := s.e.Options(); o.MaxStaleness > 0 && s.e.DenylistStaleness() > o.MaxStaleness {
		return errors.New("denylist stale")
	}
	return nil
}

// Run runs the enforcing proxy until ctx ends (or it cannot serve), then
// stops accepting requests, publishes the queued usage events and
// returns.
func Run(ctx context.Context, c Config) error {
	s, err := Start(ctx, c)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	return s.Close()
}

// Enforcer is the running enforcer (Check, Stats, Flush…).
func (s *Service) Enforcer() *enforce.Enforcer { return s.e }

// Addr is the proxy's listening address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// MetricsAddr is the metrics listener's address ("" when off).
func (s *Service) MetricsAddr() string { return s.metrics.Addr() }

// Done is closed when the proxy stopped serving: on its own (Close then
// returns why) or because of Close.
func (s *Service) Done() <-chan struct{} { return s.done }

// Close stops accepting requests, lets those in flight finish (10s at
// most), publishes the queued usage events, stops the enforcer and the
// metrics listener and closes the NATS connection. It returns why the
// proxy stopped serving if it stopped on its own. Safe to call more than
// once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s.srv != nil {
			if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Warn().Err(err).Msg("shutdown proxy")
			}
			<-s.done
			errs = append(errs, s.serveErr)
		}
		if s.e != nil {
			if s.srv != nil {
				if err := s.e.Flush(ctx); err != nil {
					s.log.Warn().Err(err).Msg("flush usage events")
				}
			}
			errs = append(errs, s.e.Close())
		}
		errs = append(errs, s.metrics.Close())
		if s.nc != nil {
			s.nc.Close()
		}
		if s.srv != nil {
			s.log.Info().Msg("enforcing proxy stopped")
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
