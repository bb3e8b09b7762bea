package faults_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
)

// judgeScaleOut fails t for every run that lost, duplicated, added or
// missed a row or an anomaly against the first run, or whose victim's
// partitions were not re-owned, and logs every instance's CPU per event.
func judgeScaleOut(t *testing.T, rep *faults.ScaleOutReport) {
	t.Helper()
	t.Logf("%d events in %d messages (batches %v)", rep.Events, rep.Messages, rep.Batches)
	for _, r := range rep.Runs {
		t.Logf("%s", r)
		t.Logf("%s: CPU per event over all instances %.2f µs (%.2f without start-up); anomalies %s", r.ScaleOutRunSpec,
			float64(r.CPUPerEvent(rep.Events).Nanoseconds())/1e3, float64(r.WorkCPUPerEvent(rep.Events).Nanoseconds())/1e3, faults.ByDetector(r.Contents.Anomalies))
		if r.Lost != 0 || r.Duplicates != 0 || r.Contents.Distinct != uint64(rep.Events) {
			t.Errorf("%s: %d distinct of %d events, %d raw rows (lost %d, duplicated %d)", r.ScaleOutRunSpec, r.Contents.Distinct, rep.Events, r.Contents.RawRows, r.Lost, r.Duplicates)
		}
		if r.Foreign != 0 || r.Missing != 0 {
			t.Errorf("%s: event ids differ from %s: %d only here, %d only there", r.ScaleOutRunSpec, rep.Runs[0].ScaleOutRunSpec, r.Foreign, r.Missing)
		}
		if len(r.Contents.Anomalies) == 0 {
			t.Errorf("%s: no anomaly: the attacks went unseen, nothing to compare", r.ScaleOutRunSpec)
		}
		if uint64(len(r.Contents.Anomalies)) != r.Contents.AnomalyRows {
			t.Errorf("%s: %d anomaly rows for %d ids", r.ScaleOutRunSpec, r.Contents.AnomalyRows, len(r.Contents.Anomalies))
		}
		for _, a := range r.MissedAnomalies {
			t.Errorf("%s: anomaly missed: %s %s token %s", r.ScaleOutRunSpec, a.ID, a.Detector, a.TokenID)
		}
		for _, a := range r.ExtraAnomalies {
			t.Errorf("%s: extra anomaly: %s %s token %s", r.ScaleOutRunSpec, a.ID, a.Detector, a.TokenID)
		}
		if r.Kill && (len(r.VictimPartitions) == 0 || !r.Reowned || !r.MidRun) {
			t.Errorf("%s: the victim held %v, re-owned %v, killed mid-run %v: want some partitions, all re-owned, killed before it caught up (raise CORDON_FAULTS_EVENTS)",
				r.ScaleOutRunSpec, r.VictimPartitions, r.Reowned, r.MidRun)
		}
	}
}

func runScaleOut(t *testing.T, runs []faults.ScaleOutRunSpec, shared bool) *faults.ScaleOutReport {
	t.Helper()
	child, err := faults.SelfCommand()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := envInt(t, "CORDON_FAULTS_EVENTS", 20_000)
	rep, err := faults.ScaleOut(ctx, t, faults.ScaleOutOptions{Child: child, Events: n, Runs: runs, Dir: dir, Progress: testWriter{t}, Shared: shared})
	if err != nil {
		t.Logf("--- chshim.log ---\n%s", tailFile(filepath.Join(dir, "chshim.log"), 20))
		// Every instance's log, the last run's first: who held what.
		logs, _ := filepath.Glob(filepath.Join(dir, "run*.log"))
		slices.Reverse(logs)
		for _, path := range logs {
			t.Logf("--- %s ---\n%s", filepath.Base(path), tailFile(path, 40))
		}
		t.Fatal(err)
	}
	return rep
}

// TestScaleOutOneInstance runs the scale-out harness's machinery — a
// three-node cluster of nats-server processes, the shim child owning
// chDB, an auditor child writing through the chserver backend — with one
// instance, twice, and requires every event exactly once and the same
// rows and anomalies in both runs.
func TestScaleOutOneInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nats-server clusters and child processes; skipped with -short")
	}
	judgeScaleOut(t, runScaleOut(t, []faults.ScaleOutRunSpec{{Instances: 1}, {Instances: 1}}, false))
}

// TestScaleOutAcceptance: one, two and four auditor instances sharing the
// partitions by leases write the same rows and raise the same anomalies;
// with four, one SIGKILLed mid-run loses, duplicates, misses and adds
// nothing, and its partitions are re-owned. Two instances given their
// partitions by --partitions, stopped (SIGSTOP) while every message is
// published and then resumed to catch up, do the same. Polls to
// completion.
func TestScaleOutAcceptance(t *testing.T) {
	if !faults.PartitionedAuditor {
		t.Skip("the auditor has no lease mode yet (auditor.Config): set faults.PartitionedAuditor and wire scaleOutLease once the partitioned pipeline (WP4) is merged")
	}
	if testing.Short() {
		t.Skip("runs nats-server clusters and child processes; skipped with -short")
	}
	rep := runScaleOut(t, []faults.ScaleOutRunSpec{{Instances: 1}, {Instances: 2}, {Instances: 4}, {Instances: 4, Kill: true}, {Instances: 2, Backlog: true}}, false)
	judgeScaleOut(t, rep)
	for _, r := range rep.Runs {
		if !r.Backlog {
			continue
		}
		for _, i := range r.Instances {
			if i.Events == 0 {
				t.Errorf("%s: %s wrote no event: want its partitions'", r.ScaleOutRunSpec, i.Name)
			}
		}
	}
}

// TestScaleOutRefusals: malformed runs, and several instances while the
// auditor has no lease mode, are refused before anything starts.
func TestScaleOutRefusals(t *testing.T) {
	child, err := faults.SelfCommand()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		runs []faults.ScaleOutRunSpec
		want string
	}{
		{"no instance", []faults.ScaleOutRunSpec{{Instances: 0}}, "want 1 to 16 instances"},
		{"kill alone", []faults.ScaleOutRunSpec{{Instances: 1, Kill: true}}, "needs a survivor"},
		{"kill in a backlog", []faults.ScaleOutRunSpec{{Instances: 2, Kill: true, Backlog: true}}, "does not use"},
	}
	if !faults.PartitionedAuditor {
		tests = append(tests, struct {
			name string
			runs []faults.ScaleOutRunSpec
			want string
		}{"several without lease mode", []faults.ScaleOutRunSpec{{Instances: 2}}, "no lease mode"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := faults.ScaleOut(context.Background(), t, faults.ScaleOutOptions{Child: child, Runs: tt.runs})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
			if tt.name == "several without lease mode" && !errors.Is(err, faults.ErrNoLeaseMode) {
				t.Fatalf("error %v, want ErrNoLeaseMode", err)
			}
		})
	}
}

// TestScaleOutSharedDurable exercises the harness's several children and
// its mid-run kill before lease mode exists: two of today's auditors
// share one durable consumer, one is killed with SIGKILL once a third of
// the events are written, and the survivor's redeliveries complete the
// rows: every event id of the one-instance run, none lost. (Anomalies are
// not compared: each of today's instances detects over the whole stream.)
func TestScaleOutSharedDurable(t *testing.T) {
	if faults.PartitionedAuditor {
		t.Skip("lease mode exists: TestScaleOutAcceptance covers several instances")
	}
	if testing.Short() {
		t.Skip("runs nats-server clusters and child processes; skipped with -short")
	}
	rep := runScaleOut(t, []faults.ScaleOutRunSpec{{Instances: 1}, {Instances: 2, Kill: true}}, true)
	for _, r := range rep.Runs {
		t.Logf("%s", r)
		if r.Lost != 0 || r.Contents.Distinct != uint64(rep.Events) || r.Foreign != 0 || r.Missing != 0 {
			t.Errorf("%s: %d distinct of %d events (lost %d), %d foreign, %d missing", r.ScaleOutRunSpec, r.Contents.Distinct, rep.Events, r.Lost, r.Foreign, r.Missing)
		}
	}
	kill := rep.Runs[1]
	if kill.Victim == "" || !kill.MidRun || !kill.Instances[1].Killed || kill.Instances[1].Events == 0 || kill.Instances[0].Events == 0 {
		t.Errorf("kill run: victim %q (mid-run %v), instances %+v: want the second killed mid-run after writing, the first writing too", kill.Victim, kill.MidRun, kill.Instances)
	}
}
