package auditor

import (
	"context"
	"slices"
)

// Partitions.
//
// The USAGE stream spreads usage batches over a fixed number of
// partitions by (tenant, holder) (events.UsagePartition): detection state
// lives on that key. An auditor runs the partitions an Owner gives it,
// each with its own detector state, checkpoint and row progress kept in a
// PartitionState, so a partition moves between auditor instances without
// losing baselines, re-alerting, or writing a row twice.

// Owner decides which USAGE partitions this auditor runs.
type Owner interface {
	// Run keeps ownership current until ctx ends. It sends the complete
	// sorted set of owned partitions on owned whenever it changes (first
	// at start). partitions is the stream's partition count.
	Run(ctx context.Context, partitions int, owned chan<- []int) error
	// Valid reports whether p is still owned. A partition runner asks
	// before every write it makes (rows, intent, checkpoint), so an
	// instance that lost a partition stops writing for it.
	Valid(p int) bool
}

// Releaser is an Owner that wants to know when a partition it took away
// (by leaving it out of a set sent on owned) has stopped: its runner
// wrote its last rows and final checkpoint, and writes nothing more. A
// graceful hand-off keeps Valid(p) true until then, and gives the
// partition up (deletes its lease) in Released.
type Releaser interface {
	Released(p int)
}

// PartitionState stores what a partition runner needs to resume
// anywhere: its checkpoint (detector state and the stream sequences it
// covers) and the intent of its row insert in flight. Every method is
// per partition; implementations must make Save* durable before
// returning, and may refuse a write from an instance that no longer
// owns p.
type PartitionState interface {
	// LoadCheckpoint returns the latest checkpoint of p, nil when none.
	LoadCheckpoint(ctx context.Context, p int) ([]byte, error)
	// SaveCheckpoint replaces p's checkpoint.
	SaveCheckpoint(ctx context.Context, p int, data []byte) error
	// LoadIntent returns p's last insert intent: the stream sequence
	// range [first, last] of the group written (or being written) with
	// the de-duplication token derived from it; ok false when none.
	LoadIntent(ctx context.Context, p int) (first, last uint64, ok bool, err error)
	// SaveIntent records p's next insert group before it is written.
	SaveIntent(ctx context.Context, p int, first, last uint64) error
}

// StaticOwner owns a fixed set of partitions (configuration mode): no
// takeover, every instance is told its partitions.
type StaticOwner struct {
	// Own lists the partitions to run; empty means all of them.
	Own []int
}

// Run implements Owner.
func (s StaticOwner) Run(ctx context.Context, partitions int, owned chan<- []int) error {
	var set []int
	for p := range partitions {
		if len(s.Own) == 0 || slices.Contains(s.Own, p) {
			set = append(set, p)
		}
	}
	select {
	case owned <- set:
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	return nil
}

// Valid implements Owner.
func (s StaticOwner) Valid(p int) bool { return len(s.Own) == 0 || slices.Contains(s.Own, p) }
