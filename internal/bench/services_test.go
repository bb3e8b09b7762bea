package bench

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/cordonhq/cordon/services/auditor"
)

// TestServicesSmoke runs, small, what the suites run through the service
// packages: a revocation reaching enforcers through the revoker service,
// the whole embedded system's detection to denial, and a deferred auditor
// draining a backlog. The figures are make bench's; here they only have to
// come out.
func TestServicesSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS, chDB and the services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Run("revocation propagation", func(t *testing.T) {
		samples, err := propagation(ctx, io.Discard, 2, 5)
		if err != nil || len(samples) != 5 {
			t.Fatalf("%d samples: %v", len(samples), err)
		}
	})
	t.Run("detection to denial", func(t *testing.T) {
		samples, err := detectionToDenial(ctx, 2, 2, false)
		if err != nil || len(samples) != 2 {
			t.Fatalf("%d samples: %v", len(samples), err)
		}
	})
	t.Run("deferred auditor drains a backlog", func(t *testing.T) {
		const db, events = "bench_smoke_backlog", 3000
		defer dropBenchDatabase(db)
		w, err := newUsageWorkload(events, 100, time.Now().Add(-time.Hour), time.Millisecond, 3)
		if err != nil {
			t.Fatal(err)
		}
		p, err := benchPipeline(ctx, db, nil, auditor.Config{}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if p.Auditor != nil {
			t.Fatal("the auditor runs before StartAuditor")
		}
		last, err := w.publish(ctx, p.JS, 0, len(w.envs))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.StartAuditor(ctx); err != nil {
			t.Fatal(err)
		}
		if err := waitAuditor(ctx, p.Auditor, last, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if n, err := p.Store.CountUsage(ctx); err != nil || n != events {
			t.Fatalf("%d rows (%v), want %d", n, err, events)
		}
	})
}
