package auditor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestAnomaliesWrittenAgainWhenTheEngineDropsThem: anomalies raised again
// after a crash are inserted with the same rows, and the engine drops an
// insert whose rows' hash it remembers, also when the rows it remembers
// never reached the table (a crash while it committed them). The rows
// are deleted here, which keeps the engine's memory of the insert as that
// crash does: the same insert again is dropped, and the anomalies are
// written again under a token of their own.
func TestAnomaliesWrittenAgainWhenTheEngineDropsThem(t *testing.T) {
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, b := openStoreBackend(t, "anomaly_rows")
	var envs []events.Envelope
	for i := range 5 {
		e, err := events.New("auditor", base.Add(time.Duration(i)*time.Minute), &events.AnomalyDetected{
			AnomalyID: fmt.Sprintf("anomaly-%d", i), Detector: "new_network", Severity: events.SeverityHigh,
			TokenID: "tok-1", Tenant: "acme", Holder: "billing-api", EventID: "e1", EventTime: base, SourceIP: "203.0.113.9"})
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, e)
	}
	stored := func() int {
		t.Helper()
		missing, err := s.MissingAnomalies(ctx, envs)
		if err != nil {
			t.Fatal(err)
		}
		return len(envs) - len(missing)
	}
	if err := s.InsertAnomalies(ctx, envs); err != nil {
		t.Fatal(err)
	}
	if err := b.Exec(ctx, "ALTER TABLE anomalies_raw DELETE WHERE 1 SETTINGS mutations_sync = 2"); err != nil {
		t.Fatal(err)
	}
	// The engine's memory: the same insert again is dropped.
	if err := s.InsertAnomalies(ctx, envs); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n != 0 {
		t.Fatalf("%d anomalies stored by the same insert again; the test needs the engine to drop it", n)
	}
	a, err := auditor.New(auditor.Options{JS: env.JS, Store: s, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := auditor.MakeDurable(ctx, a, envs); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n != len(envs) {
		t.Fatalf("%d of %d anomalies stored after the auditor wrote them", n, len(envs))
	}
	// Written once: a second time changes nothing.
	if err := auditor.MakeDurable(ctx, a, envs); err != nil {
		t.Fatal(err)
	}
	res, err := s.Query(ctx, "SELECT count() FROM anomalies_raw")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows[0][0]); got != fmt.Sprint(len(envs)) {
		t.Fatalf("anomalies_raw holds %s rows, want %d", got, len(envs))
	}
}
