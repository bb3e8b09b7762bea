package auditor_test

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestAuditorThroughput (CORDON_AUDITOR_THROUGHPUT=<events>) measures the
// auditor alone draining a backlog of batches on 8 partitions: events/s
// and process CPU per event (the in-process NATS server and chDB
// included). A figure for the log, not a test of a bound; internal/bench
// owns the official ones.
func TestAuditorThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CORDON_AUDITOR_THROUGHPUT"))
	if n <= 0 {
		t.Skip("set CORDON_AUDITOR_THROUGHPUT=<events> to measure")
	}
	env := natstest.Run(t)
	envs := make([]events.Envelope, 0, n)
	at := base
	for i := range n {
		h := fmt.Sprintf("svc-%d", i%64)
		u := &events.UsageDecided{TokenID: fmt.Sprintf("019cabd9-0000-7000-8000-%012d", i%20_000), Tenant: "acme", Holder: h, KeyID: "k1",
			Enforcer: "edge-1", Service: "payments", SourceIP: fmt.Sprintf("10.0.%d.%d", i%64, i%200), Method: "GET",
			Route: "GET /invoices/{id}", Scope: "invoices:read", Resource: strconv.Itoa(i % 500), Decision: events.DecisionAllow, Reason: "ok", LatencyNS: 30_000}
		e, err := events.New("enforcer/edge-1", at, u)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, e)
		at = at.Add(5 * time.Millisecond)
	}
	last, _ := publishBatches(t, env.JS, envs, 1000)
	var an idSet
	o := partitioned(t, env.JS, openStore(t, "throughput"), t.TempDir(), nil, "tp", &an)
	o.BatchSize, o.BatchWait, o.CheckpointEvery = 20_000, 100*time.Millisecond, 5*time.Second
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	a, _, _ := run(t, o)
	waitWritten(t, last, 8, a)
	el := time.Since(start)
	var after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	st := a.Stats()
	t.Logf("%d events (%d rows) in %v: %.0f events/s, %.2f µs CPU per event (process: auditor, NATS server, chDB); %d inserts, %d anomalies",
		n, st.Usage, el.Round(time.Millisecond), float64(n)/el.Seconds(), float64(cpu.Microseconds())/float64(n), st.Batches, st.Anomalies)
}
