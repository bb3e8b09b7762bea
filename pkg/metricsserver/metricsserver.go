// Package metricsserver is the HTTP listener every Cordon service serves
// its Prometheus metrics (/metrics) and its health (/healthz) on, apart
// from the service's own API: one implementation for the issuer, the
// auditor, the revoker and the enforcing proxy.
package metricsserver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Options configure a Server.
type Options struct {
	// Addr is the listen address (host:port; port 0 picks a free one).
	Addr string
	// Name names the service in the logs ("auditor").
	Name string
	// Collector is the service's metrics (required).
	Collector prometheus.Collector
	// Health, when set, is asked by /healthz: an error answers 503 with its
	// message (which must hold no secret), nil answers 200 "ok".
	Health func() error
	// Log receives the server's messages.
	Log zerolog.Logger
}

// Server is a running metrics and health listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Start listens on o.Addr and serves GET /metrics and GET /healthz.
func Start(o Options) (*Server, error) {
	if o.Collector == nil {
		return nil, fmt.Errorf("%s metrics: a collector is required", o.Name)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(o.Collector); err != nil {
		return nil, fmt.Errorf("register %s metrics: %w", o.Name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Health != nil {
			if err := o.Health(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", o.Addr, err)
	}
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("metrics server")
		}
	}()
	o.Log.Info().Str("addr", ln.Addr().String()).Msgf("serving %s metrics", o.Name)
	return s, nil
}

// Addr is the address the server listens on ("" for a nil Server: metrics off).
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the server. Safe on a nil Server.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	return s.srv.Close()
}
