package cli

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/pkg/metricsserver"
)

// serveMetrics serves Prometheus /metrics (the collector given) and a
// /healthz check on addr, for a service named name. It returns a stop func.
func serveMetrics(env *Env, addr, name string, c prometheus.Collector) (func(), error) {
	s, err := metricsserver.Start(metricsserver.Options{Addr: addr, Name: name, Collector: c, Log: env.Log})
	if err != nil {
		return nil, err
	}
	return func() { _ = s.Close() }, nil
}
