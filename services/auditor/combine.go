package auditor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// Combined inserts.
//
// Every insert costs the engine a fixed amount of work besides its rows:
// a part in the raw table and in each rollup, and the merges that rewrite
// them later. An auditor that owns eight partitions would pay eight of
// them where one would do. Unless Options.SeparateInserts is set, the
// groups of its partitions go to ClickHouse together: each runner saves
// its own intent as before and hands its group to the combiner; when the
// first group of an insert comes, the combiner calls for every other
// open group (closeNow), so that partitions that fill at different rates
// still write together, and the partitions close their groups on one beat
// (runner.groupWait). One combined insert is written at a time, under a
// token derived from every member's range; the next collects meanwhile.
//
// Exactly once still holds without a commit record. A member's intent
// names its own range only; the token of the insert that wrote it is
// not remembered. So a partition that resumes from an intent never
// relies on a token: it reads back which rows of the intent's range the
// table holds (Store.MissingUsage) and writes the others (writeMissing).
// Every earlier group of the partition is written (one group in flight
// per partition), and no later one was started.

// combineFactor bounds a combined insert: once the groups collected hold
// combineFactor × BatchSize rows, no more are taken (the runners wait)
// and they are written as soon as the insert before them is.
const combineFactor = 4

// combineLinger is how long the combiner waits for the groups it called
// for (they come within milliseconds: each runner closes its group when
// it is called). At most a quarter of BatchWait, so that a partition that
// has none delays the others' rows by little.
func (o *Options) combineLinger() time.Duration { return min(o.BatchWait/4, maxCombineLinger) }

// maxCombineLinger bounds combineLinger.
const maxCombineLinger = 100 * time.Millisecond

// errAbandoned ends a combined insert whose member partition was lost or
// stopped while it was retried: its token covers every member's range, so
// it cannot be written again without it. Every member stops as if lost
// (errLost); a member still owned starts again at once and writes its
// group from its intent.
var errAbandoned = fmt.Errorf("%w: a combined insert was abandoned", errLost)

// combineReq is one partition's group handed to the combiner.
type combineReq struct {
	p           int
	first, last uint64
	envs        []events.Envelope
	ctx         context.Context // the runner's write context
	done        chan error      // buffered: the combiner never blocks on it
}

// combiner collects groups into combined inserts (see above).
type combiner struct {
	a  *Auditor
	in chan *combineReq
	// running counts the partitions whose runner is running: an insert
	// that has a group of each goes without waiting out the linger.
	running atomic.Int64
	inserts atomic.Uint64 // combined inserts written (2 members or more)
	// closeNow is closed (and replaced) when the combiner calls for the
	// open groups, as an insert starts collecting: every runner with an
	// open group and none in flight closes it then, so that it joins the
	// insert. calls counts the calls, made before closeNow is closed: a
	// runner busy at the time of a call (handling a message, or its group
	// in flight) answers it when it is free.
	closeNow atomic.Pointer[chan struct{}]
	calls    atomic.Uint64
}

func newCombiner(a *Auditor) *combiner {
	c := &combiner{a: a, in: make(chan *combineReq)}
	ch := make(chan struct{})
	c.closeNow.Store(&ch)
	return c
}

// closing is closed when the runners are to close their open groups.
func (c *combiner) closing() <-chan struct{} { return *c.closeNow.Load() }

// callForGroups asks every runner to close its open group (closing).
func (c *combiner) callForGroups() {
	c.calls.Add(1)
	ch := make(chan struct{})
	close(*c.closeNow.Swap(&ch))
}

// insert hands partition p's group to the combiner and waits until it is
// written, its write fails for good, or ctx (the runner's writes') ends.
func (c *combiner) insert(ctx context.Context, p int, g *group) error {
	q := &combineReq{p: p, first: g.first, last: g.last, envs: g.envs, ctx: ctx, done: make(chan error, 1)}
	return handOver(ctx, c.in, q, q.done)
}

// handOver sends q to the goroutine reading in and waits for its answer
// on done, or for ctx's end.
func handOver[T any](ctx context.Context, in chan<- T, q T, done <-chan error) error {
	select {
	case in <- q:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run collects and writes combined inserts until stop is closed. One
// combined insert is written at a time: while it is, the next collects
// the groups that close meanwhile, and when it ends, its members' next
// groups are called for too, so that every insert carries as many
// partitions as it can. Collecting starts at the first group that closes
// on its own (beat, size, caught up): the others are called for then, and
// the insert goes, once none is being written, when every running
// partition sent its group, combineLinger after the last call, or at
// combineFactor × BatchSize rows.
func (c *combiner) run(stop <-chan struct{}) {
	o := &c.a.o
	var (
		batch   []*combineReq
		rows    int
		expired bool // combineLinger passed since the last call
		busy    bool // an insert is being written
	)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	written := make(chan struct{}, 1)
	call := func() {
		c.callForGroups()
		linger.Reset(o.combineLinger())
		expired = false
	}
	for {
		full := rows >= combineFactor*o.BatchSize
		if len(batch) > 0 && !busy && (full || expired || int64(len(batch)) >= c.running.Load()) {
			busy = true
			go func(b []*combineReq) {
				c.write(b)
				written <- struct{}{}
			}(batch)
			batch, rows, expired = nil, 0, false
			linger.Stop()
			continue
		}
		in := c.in
		if full {
			in = nil // the runners wait: memory stays bounded
		}
		select {
		case <-stop:
			return
		case q := <-in:
			if len(batch) == 0 {
				call()
			}
			batch = append(batch, q)
			rows += len(q.envs)
		case <-linger.C:
			expired = true
		case <-written:
			busy = false
			if len(batch) > 0 {
				call() // the members of the insert just written may join
			}
		}
	}
}

// write writes batch as one insert, retrying until it succeeds or a
// member is lost or its writes end (errAbandoned: the others write their
// groups again from their intents).
func (c *combiner) write(batch []*combineReq) {
	a := c.a
	live := batch[:0]
	for _, q := range batch {
		if !a.owner.Valid(q.p) {
			q.done <- errLost
			continue
		}
		live = append(live, q)
	}
	if len(live) == 0 {
		return
	}
	// The insert ends when a member's writes end (its runner stopped and
	// ShutdownGrace ran out): the others then write their groups again.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	for _, q := range live {
		stop := context.AfterFunc(q.ctx, func() { cancel(fmt.Errorf("partition %d stopped: %w", q.p, errAbandoned)) })
		defer stop()
	}
	token, envs := combinedToken(a.usageEpoch, live), live[0].envs
	if len(live) > 1 {
		n := 0
		for _, q := range live {
			n += len(q.envs)
		}
		envs = make([]events.Envelope, 0, n)
		for _, q := range live {
			envs = append(envs, q.envs...)
		}
	}
	err := a.retry(ctx, len(envs), func() error {
		for _, q := range live {
			if !a.owner.Valid(q.p) {
				return fmt.Errorf("partition %d lost: %w", q.p, errAbandoned)
			}
		}
		a.writeSem <- struct{}{}
		defer func() { <-a.writeSem }()
		return a.o.Store.InsertUsageOnce(ctx, token, envs)
	})
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errAbandoned) {
			err = cause
		}
		if len(live) > 1 && errors.Is(err, errLost) {
			a.o.Log.Warn().Err(err).Int("groups", len(live)).Int("rows", len(envs)).
				Msg("combined insert abandoned: its partitions write their groups again from their intents")
		}
	} else {
		a.batches.Add(1)
		if len(live) > 1 {
			c.inserts.Add(1)
		}
	}
	for _, q := range live {
		q.done <- err
	}
}

// combinedToken is the de-duplication token of one insert of the groups
// of qs, of the USAGE stream of epoch: a lone group keeps its partition's
// token (groupToken); several are named by a hash of every member's
// partition and range, in partition order whatever the order they came in
// (a list of them would outgrow store.MaxDedupTokenLen with many
// partitions).
func combinedToken(epoch string, qs []*combineReq) string {
	if len(qs) == 1 {
		return groupToken(epoch, qs[0].p, qs[0].first, qs[0].last)
	}
	var b strings.Builder
	for _, q := range slices.SortedFunc(slices.Values(qs), func(x, y *combineReq) int { return cmp.Compare(x.p, y.p) }) {
		fmt.Fprintf(&b, "p%d:%d-%d,", q.p, q.first, q.last)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return fmt.Sprintf("usage:%s:c%d:%s", epoch, len(qs), hex.EncodeToString(sum[:16]))
}
