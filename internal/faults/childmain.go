//go:build !nochdb

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/services/auditor"
)

// ChildMain turns the process into a fault child when EnvChild is set —
// it then never returns: the child runs until it is done, stopped or
// killed, and exits. Without EnvChild it returns at once. Call it first
// thing in main (cmd/cordon-bench) and in TestMain, as moby's reexec.Init
// is; SelfCommand refuses to re-execute a binary that did not.
func ChildMain() {
	childMainCalled.Store(true)
	role := os.Getenv(EnvChild)
	if role == "" {
		return
	}
	out := json.NewEncoder(os.Stdout)
	if err := runChild(role, out); err != nil {
		_ = out.Encode(childMsg{Kind: "error", Error: err.Error()})
		fmt.Fprintf(os.Stderr, "fault child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(role string, out *json.Encoder) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(EnvConfig)), &cfg); err != nil {
		return fmt.Errorf("$%s: %w", EnvConfig, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(os.Stderr).With().Timestamp().Str("child", role).Int("pid", os.Getpid()).Logger()
	switch role {
	case ChildAuditor:
		return runAuditorChild(ctx, cfg, out, log)
	case ChildQuery:
		return runQueryChild(ctx, cfg, out, log)
	}
	if run := scaleOutChildren[role]; run != nil {
		return run(ctx, out, log)
	}
	return fmt.Errorf("$%s=%q: want %q or %q", EnvChild, role, ChildAuditor, ChildQuery)
}

// runAuditorChild runs the auditor service as `cordon auditor` would —
// NATS, chDB store, detectors with a state directory — without the
// analysts' API, until ctx ends.
func runAuditorChild(ctx context.Context, cfg childConfig, out *json.Encoder, log zerolog.Logger) error {
	svc, err := auditor.Start(ctx, auditor.Config{
		NATS: natsconn.Config{URL: cfg.NATS, Name: "faults-auditor-" + strconv.Itoa(os.Getpid()),
			Options: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)}},
		NoAnalystAPI: true, Store: auditor.StoreCHDB, ChDBPath: cfg.ChDBPath, Database: cfg.Database, StateDir: cfg.StateDir,
		Durable: cfg.Durable, AckWait: cfg.AckWait, BatchSize: cfg.BatchSize, BatchWait: cfg.BatchWait, CheckpointEvery: cfg.CheckpointEvery,
		Source: "auditor/faults-" + strconv.Itoa(os.Getpid()), Log: log,
	})
	if err != nil {
		return err
	}
	if err := out.Encode(childMsg{Kind: "ready"}); err != nil {
		svc.Close()
		return err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-svc.Done():
			running = false
		case <-t.C:
			st := svc.Auditor().Stats()
			_ = out.Encode(childMsg{Kind: "stats", Stats: &childStats{Usage: st.Usage, Anomalies: st.Anomalies,
				LastSeq: st.LastUsageSeq, SeenSeq: st.SeenUsageSeq, Batches: st.Batches, WriteError: st.WriteErrors}})
		}
	}
	if err := svc.Close(); err != nil {
		return err
	}
	log.Info().Msg("auditor child stopped")
	return nil
}

// runQueryChild reports what each database holds.
func runQueryChild(ctx context.Context, cfg childConfig, out *json.Encoder, log zerolog.Logger) error {
	res := &QueryResult{Databases: map[string]*DBContents{}}
	stores := map[string]*store.Store{}
	backends := map[string]store.Backend{}
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	for _, db := range cfg.Databases {
		b, err := chdbstore.Open(ctx, chdbstore.Options{Path: cfg.ChDBPath, Database: db})
		if err != nil {
			return err
		}
		s, err := store.Open(ctx, b, store.Options{Logger: log, MaxResultRows: -1, QueryTimeout: 5 * time.Minute, TokenInserts: true})
		if err != nil {
			b.Close()
			return err
		}
		stores[db], backends[db] = s, b
		c, err := contents(ctx, s)
		if err != nil {
			return fmt.Errorf("database %s: %w", db, err)
		}
		res.Databases[db] = c
	}
	if a, b := cfg.CrossCheck[0], cfg.CrossCheck[1]; a != "" && b != "" {
		// Across databases: the store's analyst gate keeps queries to its
		// own, so the harness asks the backend directly.
		be := backends[a]
		if be == nil {
			return fmt.Errorf("cross check: database %s was not queried", a)
		}
		var err error
		if res.OnlyInFirst, err = backendScalar(ctx, be, onlyIn(a, b)); err != nil {
			return err
		}
		if res.OnlyInSecond, err = backendScalar(ctx, be, onlyIn(b, a)); err != nil {
			return err
		}
	}
	return out.Encode(childMsg{Kind: "result", Result: res})
}

func contents(ctx context.Context, s *store.Store) (*DBContents, error) {
	var c DBContents
	res, err := s.Query(ctx, "SELECT count(), uniqExact(event_id) FROM usage_events")
	if err != nil {
		return nil, err
	}
	if c.Rows, err = toUint(res.Rows[0][0]); err != nil {
		return nil, err
	}
	if c.Distinct, err = toUint(res.Rows[0][1]); err != nil {
		return nil, err
	}
	if c.RawRows, err = scalar(ctx, s, "SELECT count() FROM usage_events_raw"); err != nil {
		return nil, err
	}
	if c.AnomalyRows, err = scalar(ctx, s, "SELECT count() FROM anomalies"); err != nil {
		return nil, err
	}
	res, err = s.Query(ctx, "SELECT anomaly_id, toString(detector), token_id FROM anomalies ORDER BY anomaly_id")
	if err != nil {
		return nil, err
	}
	for _, r := range res.Rows {
		c.Anomalies = append(c.Anomalies, AnomalyRef{ID: fmt.Sprint(r[0]), Detector: fmt.Sprint(r[1]), TokenID: fmt.Sprint(r[2])})
	}
	return &c, nil
}

func scalar(ctx context.Context, s *store.Store, q string) (uint64, error) {
	res, err := s.Query(ctx, q)
	if err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: want one value, got %v", q, res.Rows)
	}
	return toUint(res.Rows[0][0])
}

// backendScalar runs one of the harness's own queries on a backend.
func backendScalar(ctx context.Context, b store.Backend, q string) (uint64, error) {
	out, err := b.Query(ctx, q, []store.Setting{{Name: "output_format_json_quote_64bit_integers", Value: 0}})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: want one value, got %v", q, res.Rows)
	}
	return toUint(res.Rows[0][0])
}

func toUint(v any) (uint64, error) {
	switch n := v.(type) {
	case uint64:
		return n, nil
	case int64:
		return uint64(n), nil
	case float64:
		return uint64(n), nil
	case json.Number:
		return strconv.ParseUint(n.String(), 10, 64)
	case string:
		return strconv.ParseUint(n, 10, 64)
	}
	return 0, fmt.Errorf("not a count: %v (%T)", v, v)
}
