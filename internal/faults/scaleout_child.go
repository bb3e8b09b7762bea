//go:build !nochdb

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/chshim"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/services/auditor"
)

// scaleOutChildren are the scale-out harness's child roles (ChildMain
// dispatches to them).
var scaleOutChildren = map[string]func(context.Context, *json.Encoder, zerolog.Logger) error{
	ChildShim:         runShimChild,
	ChildScaleAuditor: runScaleAuditorChild,
}

func scaleOutChildConfig() (scaleOutConfig, error) {
	var cfg scaleOutConfig
	if err := json.Unmarshal([]byte(os.Getenv(EnvConfig)), &cfg); err != nil {
		return cfg, fmt.Errorf("$%s: %w", EnvConfig, err)
	}
	return cfg, nil
}

// runShimChild owns chDB and serves it over ClickHouse's HTTP interface
// until ctx ends.
func runShimChild(ctx context.Context, out *json.Encoder, log zerolog.Logger) error {
	cfg, err := scaleOutChildConfig()
	if err != nil {
		return err
	}
	if cfg.ChDBPath == "" || cfg.AddrFile == "" {
		return errors.New("shim child: chdb_path and addr_file are required")
	}
	shim := chshim.New(chshim.Options{Path: cfg.ChDBPath})
	defer shim.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("shim child: %w", err)
	}
	srv := &http.Server{Handler: shim, ReadHeaderTimeout: 30 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := os.WriteFile(cfg.AddrFile, []byte(ln.Addr().String()), 0o600); err != nil {
		return fmt.Errorf("shim child: %w", err)
	}
	if err := out.Encode(childMsg{Kind: "ready"}); err != nil {
		return err
	}
	log.Info().Str("addr", ln.Addr().String()).Msg("chshim serving")
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("shim child: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// runScaleAuditorChild runs the auditor service on the shim (chserver
// backend) and the cluster until ctx ends.
func runScaleAuditorChild(ctx context.Context, out *json.Encoder, log zerolog.Logger) error {
	cfg, err := scaleOutChildConfig()
	if err != nil {
		return err
	}
	c := auditor.Config{
		NATS: natsconn.Config{URL: strings.Join(cfg.NATS, ","), Name: "scaleout-" + cfg.Instance,
			Options: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)}},
		Replicas: 3, NoAnalystAPI: true, Store: auditor.StoreClickHouse, ClickHouse: auditor.ClickHouseConfig{Addr: cfg.ClickHouse},
		Database: cfg.Database, StateDir: cfg.StateDir, Source: "auditor/" + cfg.Instance, Log: log,
	}
	c.Partitions = cfg.Owns
	if cfg.Lease {
		if err := scaleOutLease(&c, cfg); err != nil {
			return err
		}
	}
	if cfg.CPUProfile != "" {
		stop, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	svc, err := auditor.Start(ctx, c)
	if err != nil {
		return err
	}
	if err := out.Encode(childMsg{Kind: "ready"}); err != nil {
		svc.Close()
		return err
	}
	// The harness kills an instance, and sees the runs end, on these
	// figures. Every 100 ms: this loop's CPU counts in the instance's, and
	// at 20 ms it was a tenth of a small instance's CPU per event.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last childStats
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-svc.Done():
			running = false
		case <-t.C:
			// Only what changed: an idle instance's reports would be
			// measured as its idle CPU.
			st := svc.Auditor().Stats()
			cs := childStats{Usage: st.Usage, Anomalies: st.Anomalies,
				LastSeq: st.LastUsageSeq, Batches: st.Batches, WriteError: st.WriteErrors}
			if cs != last {
				last = cs
				_ = out.Encode(childMsg{Kind: "stats", Stats: &cs})
			}
		}
	}
	if err := svc.Close(); err != nil {
		return err
	}
	log.Info().Msg("scale-out auditor child stopped")
	return nil
}

// startCPUProfile writes a CPU profile of the process to path until stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// scaleOutLease puts c in lease mode (auditor --lease): instance
// cfg.Instance among the others, state in JetStream, leases short enough
// that a takeover after a SIGKILL is quick.
func scaleOutLease(c *auditor.Config, cfg scaleOutConfig) error {
	c.Lease, c.Instance, c.LeaseTTL = true, cfg.Instance, scaleOutLeaseTTL
	return nil
}

// scaleOutLeaseTTL is the lease TTL of scale-out runs.
const scaleOutLeaseTTL = 3 * time.Second
