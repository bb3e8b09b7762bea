package enforce

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// NewProxy returns a reverse proxy to upstream behind the enforcer's
// Middleware. X-Forwarded-For is rebuilt: the client's chain is kept only
// when the socket peer is a trusted proxy.
func NewProxy(e *Enforcer, upstream *url.URL) (http.Handler, error) {
	if upstream == nil || upstream.Scheme == "" || upstream.Host == "" {
		return nil, fmt.Errorf("%w: upstream %v must be an absolute URL", ErrConfig, upstream)
	}
	if upstream.Scheme != "http" && upstream.Scheme != "https" {
		return nil, fmt.Errorf("%w: upstream scheme %q is not http or https", ErrConfig, upstream.Scheme)
	}
	log := e.log.With().Str("upstream", upstream.Redacted()).Logger()
	errLog := log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			if e.trusted(socketAddr(pr.In.RemoteAddr)) {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			errLog.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).
				Str("token_id", r.Header.Get(HeaderTokenID)).Msg("upstream request failed")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"bad_gateway"}` + "\n"))
		},
		BufferPool: bufferPool{},
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
	return e.Middleware(rp), nil
}

// bufferPool recycles the reverse proxy's copy buffers (32 KiB each).
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Get implements httputil.BufferPool.
func (bufferPool) Get() []byte { return *copyBuffers.Get().(*[]byte) }

// Put implements httputil.BufferPool.
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// Config is the whole `cordon enforce` reverse proxy.
type Config struct {
	Options
	// Upstream is the protected service.
	Upstream *url.URL
	// Listen is the proxy's address ("127.0.0.1:8080").
	Listen string
	// TLS, when set, makes the proxy serve HTTPS; set ClientAuth to
	// tls.RequestClientCert (or VerifyClientCertIfGiven with ClientCAs) for
	// device binding.
	TLS *tls.Config
	// NATSURL and NATSOptions reach JetStream (credentials go in the
	// options: nats.UserCredentials).
	NATSURL     string
	NATSOptions []nats.Option
	// MetricsListen, if set, serves Prometheus metrics on /metrics and a
	// readiness check on /healthz at this address (never the proxy's).
	MetricsListen string
	// SyncTimeout bounds the initial load of keys and denylist (default 30s).
	SyncTimeout time.Duration
	// Ready, if set, is called with the listening address once requests are
	// served.
	Ready func(addr net.Addr)
}

// Run connects to NATS, starts an enforcer, and serves the proxy until ctx
// ends; then it stops accepting requests, publishes the queued usage events
// and returns.
func Run(ctx context.Context, c Config) error {
	if c.Listen == "" {
		return fmt.Errorf("%w: listen address is required", ErrConfig)
	}
	if c.NATSURL == "" {
		return fmt.Errorf("%w: nats url is required", ErrConfig)
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 30 * time.Second
	}
	e, err := New(c.Options)
	if err != nil {
		return err
	}
	defer e.Close()
	h, err := NewProxy(e, c.Upstream)
	if err != nil {
		return err
	}
	opts := append([]nats.Option{nats.Name("cordon-enforce-" + e.opts.ID), nats.MaxReconnects(-1)}, c.NATSOptions...)
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.SyncTimeout)
	err = e.Start(sctx, js)
	cancel()
	if err != nil {
		return err
	}
	if c.MetricsListen != "" {
		mln, err := net.Listen("tcp", c.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen metrics: %w", err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(e.Collector())
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			if e.opts.MaxStaleness > 0 && e.DenylistStaleness() > e.opts.MaxStaleness {
				http.Error(w, "denylist stale", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if c.TLS != nil {
		ln = tls.NewListener(ln, c.TLS)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	e.log.Info().Str("listen", ln.Addr().String()).Str("upstream", c.Upstream.Redacted()).
		Bool("tls", c.TLS != nil).Bool("fail_closed", e.opts.FailClosed && e.opts.MaxStaleness > 0).
		Dur("max_staleness", e.opts.MaxStaleness).Str("staleness_policy", e.opts.StalenessPolicy()).
		Msg("enforcing proxy serving")
	if c.Ready != nil {
		c.Ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		e.log.Warn().Err(err).Msg("shutdown proxy")
	}
	if err := e.Flush(sctx); err != nil {
		e.log.Warn().Err(err).Msg("flush usage events")
	}
	e.log.Info().Msg("enforcing proxy stopped")
	return nil
}
