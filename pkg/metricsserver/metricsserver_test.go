package metricsserver_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/metricsserver"
)

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServer: /metrics serves the collector, /healthz the health the
// service reports (503 with its reason when unhealthy), nothing else.
func TestServer(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "cordon_test_total", Help: "a test counter"})
	c.Add(3)
	var health error
	s, err := metricsserver.Start(metricsserver.Options{Addr: "127.0.0.1:0", Name: "test", Collector: c,
		Health: func() error { return health }, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr()
	cases := []struct {
		name, method, path string
		unhealthy          error
		code               int
		body               string
	}{
		{"metrics", "GET", "/metrics", nil, 200, "cordon_test_total 3"},
		{"healthy", "GET", "/healthz", nil, 200, "ok\n"},
		{"unhealthy", "GET", "/healthz", errors.New("denylist stale"), 503, "denylist stale"},
		{"metrics are read-only", "POST", "/metrics", nil, 405, ""},
		{"nothing else", "GET", "/", nil, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			health = tc.unhealthy
			code, body := get(t, tc.method, base+tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, code, body, tc.code, tc.body)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Close")
	}
}

func TestStartErrors(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "cordon_test_total", Help: "a test counter"})
	if _, err := metricsserver.Start(metricsserver.Options{Addr: "127.0.0.1:0", Name: "test"}); err == nil {
		t.Error("started without a collector")
	}
	if _, err := metricsserver.Start(metricsserver.Options{Addr: "nope", Name: "test", Collector: c}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("bad address: %v", err)
	}
	var s *metricsserver.Server
	if err := s.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
}
