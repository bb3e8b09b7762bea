package faults_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// envInt reads a scale override such as CORDON_FAULTS_EVENTS=200000.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("$%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestAuditorKill9WhileUsageFlows kills auditor processes with SIGKILL
// while simulated usage (with attacks) flows into JetStream, then requires
// ClickHouse to hold every event exactly once and the anomalies of an
// uninterrupted run over the same events. Scale with
// CORDON_FAULTS_EVENTS (default 20,000) and CORDON_FAULTS_KILLS (default
// 5); CORDON_FAULTS_CHECKPOINT (e.g. 200ms) overrides the auditors'
// detector checkpoint interval.
func TestAuditorKill9WhileUsageFlows(t *testing.T) {
	n := envInt(t, "CORDON_FAULTS_EVENTS", 20_000)
	kills := envInt(t, "CORDON_FAULTS_KILLS", 5)
	var checkpoint time.Duration
	if v := os.Getenv("CORDON_FAULTS_CHECKPOINT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("$CORDON_FAULTS_CHECKPOINT: %v", err)
		}
		checkpoint = d
	}
	child, err := faults.SelfCommand()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := faults.AuditorChaos(ctx, faults.AuditorChaosOptions{Child: child, Events: n, Kills: kills, CheckpointEvery: checkpoint, Dir: dir, Progress: testWriter{t}})
	if err != nil {
		for _, name := range []string{"chaos-1.log", "reference.log", "query.log"} {
			t.Logf("--- %s ---\n%s", name, tailFile(filepath.Join(dir, name), 20))
		}
		t.Fatal(err)
	}
	t.Logf("report:\n%s", rep)
	t.Logf("reference anomalies: %s", faults.ByDetector(rep.Reference.Anomalies))
	t.Logf("chaos anomalies:     %s", faults.ByDetector(rep.Chaos.Anomalies))

	if rep.Events != n || rep.Stream != uint64(n) {
		t.Fatalf("published %d events, USAGE holds %d; want %d", rep.Events, rep.Stream, n)
	}
	if rep.Kills < kills {
		t.Errorf("%d kills, want %d", rep.Kills, kills)
	}
	if rep.KillsMidBatch == 0 {
		t.Errorf("no kill hit an auditor holding unacknowledged messages")
	}
	if rep.Reference.Rows != uint64(n) || rep.Reference.Distinct != uint64(n) {
		t.Errorf("reference run: %d rows, %d distinct; want %d", rep.Reference.Rows, rep.Reference.Distinct, n)
	}
	if rep.Chaos.Rows != uint64(n) || rep.Chaos.Distinct != uint64(n) || rep.Lost != 0 || rep.Duplicates != 0 {
		t.Errorf("chaos run: %d rows, %d distinct (lost %d, duplicates %d); want exactly %d", rep.Chaos.Rows, rep.Chaos.Distinct, rep.Lost, rep.Duplicates, n)
	}
	if rep.Foreign != 0 || rep.Missing != 0 {
		t.Errorf("event ids differ from the reference run: %d only in the chaos run, %d only in the reference", rep.Foreign, rep.Missing)
	}
	if len(rep.Reference.Anomalies) == 0 {
		t.Errorf("the reference run found no anomaly: nothing to compare")
	}
	if uint64(len(rep.Chaos.Anomalies)) != rep.Chaos.AnomalyRows {
		t.Errorf("chaos run: %d anomaly rows for %d ids", rep.Chaos.AnomalyRows, len(rep.Chaos.Anomalies))
	}
	for _, a := range rep.MissedAnomalies {
		t.Errorf("anomaly missed by the chaos run: %s %s token %s", a.ID, a.Detector, a.TokenID)
	}
	for _, a := range rep.ExtraAnomalies {
		t.Errorf("anomaly only in the chaos run: %s %s token %s", a.ID, a.Detector, a.TokenID)
	}

	// The same counts, read by this process itself now that every child
	// has exited (the data path is open in one process at a time).
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: filepath.Join(dir, "chdb"), Database: faults.ChaosDatabase})
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, b, store.Options{})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Query(ctx, "SELECT count(), uniqExact(event_id) FROM usage_events")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows[0]); got != fmt.Sprintf("[%d %d]", n, n) {
		t.Errorf("parent reads count(), uniqExact(event_id) = %s, want [%d %d]", got, n, n)
	}
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// TestAuditorChaosNeedsChildMain: a child binary that does not call
// ChildMain is reported as such instead of hanging the harness.
func TestAuditorChaosNeedsChildMain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := faults.AuditorChaos(ctx, faults.AuditorChaosOptions{Child: faults.Command{Path: "/bin/true"}, Events: 2000, Kills: 1, Dir: t.TempDir()})
	if !errors.Is(err, faults.ErrNoChildMain) {
		t.Fatalf("error %v, want ErrNoChildMain", err)
	}
	t.Log(err)
}
