package auditor

import (
	"context"
	"time"
)

// Combined anomaly writes.
//
// Each partition publishes its anomalies at once and makes them durable in
// the store at most AnomalyWait later: an insert and a read-back of the
// rows (makeDurable). Written apart, an auditor of eight partitions paid
// eight inserts and eight read-backs every AnomalyWait under a steady
// trickle of anomalies, each with the engine's fixed cost of a part.
// Unless Options.SeparateInserts is set, the partitions hand their
// anomalies to the auditor's anomaly writer instead, which writes what
// comes within anomalyLinger of the first as one insert and one
// read-back. A runner flushes anomalyFlushWait after its first pending
// anomaly, so that an anomaly still waits at most AnomalyWait.
//
// Nothing about exactly once changes: an anomaly's row is the same
// whichever insert carries it, and the table collapses copies of a row
// (ReplacingMergeTree, read FINAL).

// anomalyLinger is how long the anomaly writer collects the partitions'
// anomalies from the first it is given.
func (o *Options) anomalyLinger() time.Duration { return o.AnomalyWait / 2 }

// anomalyFlushWait is how long a runner keeps its first pending anomaly
// before it makes it durable: AnomalyWait, less the writer's linger when
// the partitions write together.
func (o *Options) anomalyFlushWait() time.Duration {
	if o.SeparateInserts {
		return o.AnomalyWait
	}
	return o.AnomalyWait - o.anomalyLinger()
}

// anomalyReq is one partition's pending anomalies handed to the writer.
type anomalyReq struct {
	anoms []pendingAnomaly
	ctx   context.Context // the runner's (or its writes')
	done  chan error      // buffered: the writer never blocks on it
}

// anomalyWriter writes the anomalies of every partition of an auditor
// together (see above).
type anomalyWriter struct {
	a  *Auditor
	in chan *anomalyReq
}

func newAnomalyWriter(a *Auditor) *anomalyWriter {
	return &anomalyWriter{a: a, in: make(chan *anomalyReq)}
}

// write hands anoms to the writer and waits until they are durable or ctx
// ends. The writer no longer touches them once it has answered; after ctx
// ended it may still, until it notices (the runner is stopping then, and
// only appends to the slice past its length).
func (w *anomalyWriter) write(ctx context.Context, anoms []pendingAnomaly) error {
	q := &anomalyReq{anoms: anoms, ctx: ctx, done: make(chan error, 1)}
	return handOver(ctx, w.in, q, q.done)
}

// run collects and writes until stop is closed, one insert at a time: the
// anomalies handed over while one is written go in the next, which waits
// out anomalyLinger from its first request (or goes at once, once it holds
// maxPendingAnomalies).
func (w *anomalyWriter) run(stop <-chan struct{}) {
	var (
		batch   []*anomalyReq
		n       int
		expired bool
		busy    bool
	)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	written := make(chan struct{}, 1)
	for {
		full := n >= maxPendingAnomalies
		if len(batch) > 0 && !busy && (expired || full) {
			busy = true
			go func(b []*anomalyReq) {
				w.writeBatch(b)
				written <- struct{}{}
			}(batch)
			batch, n, expired = nil, 0, false
			linger.Stop()
			continue
		}
		in := w.in
		if full {
			in = nil // the runners wait: memory stays bounded
		}
		select {
		case <-stop:
			// Every runner has stopped: the members of an insert in
			// flight have ended, so it ends soon.
			if busy {
				<-written
			}
			for _, q := range batch {
				q.done <- context.Canceled
			}
			return
		case q := <-in:
			if len(batch) == 0 {
				linger.Reset(w.a.o.anomalyLinger())
			}
			batch = append(batch, q)
			n += len(q.anoms)
		case <-linger.C:
			expired = true
		case <-written:
			busy = false
		}
	}
}

// writeBatch makes every member's anomalies durable in one insert and one
// read-back, retrying until it succeeds. A member whose context ends is
// answered with its error and the others are written without it.
func (w *anomalyWriter) writeBatch(batch []*anomalyReq) {
	for len(batch) > 0 {
		live := batch[:0]
		for _, q := range batch {
			if err := q.ctx.Err(); err != nil {
				q.done <- err
				continue
			}
			live = append(live, q)
		}
		batch = live
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		groups := make([][]pendingAnomaly, len(batch))
		stops := make([]func() bool, len(batch))
		for i, q := range batch {
			groups[i] = q.anoms
			stops[i] = context.AfterFunc(q.ctx, cancel)
		}
		err := w.a.makeDurable(ctx, groups...)
		for _, s := range stops {
			s()
		}
		cancel()
		if err == nil {
			for _, q := range batch {
				q.done <- nil
			}
			return
		}
		// Only a member's end stops makeDurable: the loop answers it and
		// writes the others again.
	}
}
