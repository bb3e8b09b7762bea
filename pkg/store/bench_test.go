package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// BenchmarkInsertUsage measures insert throughput: 4 goroutines (and, for
// comparison, 1) each inserting batches of 2,000 usage events into the full
// schema (raw table and rollups). One benchmark op is one batch; rows/s
// is the figure to compare (docs/schema.md keeps the figures measured on the
// development machine).
func BenchmarkInsertUsage(b *testing.B) {
	const batchSize = 2000
	for _, e := range engines() {
		if e.name == "chserver-over-shim" {
			continue // a test device, not a deployment: its speed means nothing
		}
		for _, workers := range []int{4, 1} {
			b.Run(fmt.Sprintf("%s/workers=%d", e.name, workers), func(b *testing.B) {
				benchInsert(b, e, workers, batchSize)
			})
		}
	}
}

// benchInsert inserts b.N batches of batchSize distinct usage events from
// workers goroutines and reports rows/s.
func benchInsert(b *testing.B, e engine, workers, batchSize int) {
	s, _ := openStore(b, e, fmt.Sprintf("bench%d", dbSeq.Add(1)), store.Options{})
	// Distinct events for every batch, built before the clock runs.
	batches := make([][]events.Envelope, b.N)
	tokens := []string{newID(), newID(), newID(), newID()}
	for i := range batches {
		batches[i] = genUsage(b, batchSize, tokens, []string{"billing", "search"}, time.Now().Add(-24*time.Hour)).events
	}
	work := make(chan []events.Envelope)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for batch := range work {
				if err := s.InsertUsage(b.Context(), batch); err != nil {
					errs <- err
					for range work { // drain so the feeder does not block
					}
					return
				}
			}
		}()
	}
	for _, batch := range batches {
		work <- batch
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*batchSize)/elapsed.Seconds(), "rows/s")
}
