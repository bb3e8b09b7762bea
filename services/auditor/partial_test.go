package auditor_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// halfCommit is a store whose third usage insert commits half of its rows
// under the insert's token and then "crashes" (errCrash from then on): the
// engine remembers the token, as chDB's de-duplication log does when the
// process dies between logging an insert's part and committing it.
type halfCommit struct {
	*store.Store
	cancel  context.CancelFunc
	mu      sync.Mutex
	inserts int
	crashed bool
	token   string
}

func (h *halfCommit) InsertUsageOnce(ctx context.Context, token string, evs []events.Envelope) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.crashed {
		return errCrash
	}
	if h.inserts++; h.inserts < 3 || len(evs) < 2 {
		return h.Store.InsertUsageOnce(ctx, token, evs)
	}
	if err := h.Store.InsertUsageOnce(ctx, token, evs[:len(evs)/2]); err != nil {
		return err
	}
	h.crashed, h.token = true, token
	h.cancel()
	return errCrash
}

// TestReplayWritesRowsTheEngineDropped: an auditor dies during an insert
// that the engine committed in part while remembering its token. The
// auditor after it replays the group from its intent: the insert with
// the token is dropped as a duplicate, and the rows it held that are not
// stored are written again, once. The other partitions' writes fail from
// the crash on: each keeps its failed group's intent (the shutdown does
// not write the open group over it, which made the next start take the
// failed group's rows for written), and every event lands exactly once.
func TestReplayWritesRowsTheEngineDropped(t *testing.T) {
	env := natstest.Run(t)
	last, ids := publishBatches(t, env.JS, simulated(t, 3000), 150)
	slices.Sort(ids)
	s := openStore(t, "partial")
	dir := filepath.Join(t.TempDir(), "state")
	var an idSet
	o := partitioned(t, env.JS, s, dir, nil, "partial", &an)
	o.BatchSize = 200
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	half := &halfCommit{Store: s, cancel: cancel}
	first := o
	first.Store = half
	a1, err := auditor.New(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.Run(ctx); err != nil && !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v", err)
	}
	if !half.crashed {
		t.Fatal("no third insert: nothing was half committed")
	}
	a2, _, _ := run(t, o)
	waitWritten(t, last, 8, a2)
	got, rows := rowIDs(t, s)
	if !slices.Equal(slices.Compact(got), ids) {
		t.Fatalf("%d distinct row ids, want %d (the half-committed group was %s)", len(slices.Compact(got)), len(ids), half.token)
	}
	if rows != uint64(len(ids)) {
		t.Fatalf("raw rows %d, want %d: rows written twice", rows, len(ids))
	}
}
