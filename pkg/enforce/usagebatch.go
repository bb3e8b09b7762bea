package enforce

import (
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/pkg/events"
)

// Usage formats (Options.UsageFormat).
const (
	// UsageFormatBatch publishes decisions in usage batches
	// (events.UsageBatchBuilder): one JetStream message per batch of a
	// (tenant, holder), the format of this release's auditors.
	UsageFormatBatch = "batch"
	// UsageFormatEvent publishes every decision as its own JSON
	// usage.decided event: for auditors older than usage batches, and to
	// roll back.
	UsageFormatEvent = "event"
)

// maxFreeBuilders bounds the batch builders kept for reuse between
// linger windows (one per (tenant, holder) of a window).
const maxFreeBuilders = 1024

// maxFreeBuilderBytes is the largest batch whose builder is kept for
// reuse (a batch of a thousand records is about 30 KiB).
const maxFreeBuilderBytes = 64 << 10

// groupKey is the (tenant, holder) a batch belongs to.
type groupKey struct{ tenant, holder string }

// batcher groups decisions by (tenant, holder) into usage batches. Only
// the publisher's run goroutine uses it (and, once that has stopped,
// shutdown).
type batcher struct {
	p      *publisher
	source string // "enforcer/<id>"
	// maxRecords and maxBytes bound one batch (Options.UsageBatch and
	// Options.UsageBatchBytes).
	maxRecords, maxBytes int

	open map[groupKey]*events.UsageBatchBuilder
	free []*events.UsageBatchBuilder
	// msgs are the batches finished since the last take.
	msgs []pending
	// records counts the records added since the last take.
	records int
	u       events.UsageDecided
}

func newBatcher(p *publisher) *batcher {
	o := &p.e.opts
	return &batcher{
		p:          p,
		source:     "enforcer/" + o.ID,
		maxRecords: o.UsageBatch,
		maxBytes:   o.UsageBatchBytes,
		open:       make(map[groupKey]*events.UsageBatchBuilder),
	}
}

// recordBound is an upper bound of what adding u grows a batch by.
func recordBound(u *events.UsageDecided) int {
	n := 3*10 + 13*3
	for _, s := range [...]string{u.TokenID, u.KeyID, u.Service, u.SourceIP, u.UserAgent, u.Method, u.Route, u.Scope, u.Decision, u.Reason, u.Resource, u.Client, u.Device} {
		n += len(s)
	}
	return n
}

// add encodes r into the batch of its (tenant, holder); a batch it
// fills (on records or bytes) is finished into msgs. A record that cannot
// be encoded is counted failed and logged.
func (w *batcher) add(r *usageRecord) {
	u := &w.u
	w.p.decided(r, u)
	k := groupKey{u.Tenant, u.Holder}
	b := w.open[k]
	if b != nil && (b.Full() || b.Size()+recordBound(u) > w.maxBytes) {
		w.finish(k, b)
		b = nil
	}
	if b == nil {
		var err error
		if b, err = w.builder(u.Tenant, u.Holder); err != nil {
			w.p.fail(1, err)
			return
		}
		w.open[k] = b
	}
	if err := b.Add(r.at, u); err != nil {
		w.p.fail(1, err)
		if b.Len() == 0 {
			delete(w.open, k)
			w.release(b)
		}
		return
	}
	w.records++
	if b.Len() >= w.maxRecords || b.Full() {
		w.finish(k, b)
	}
}

// builder returns a builder reset for a batch of (tenant, holder).
func (w *batcher) builder(tenant, holder string) (*events.UsageBatchBuilder, error) {
	var b *events.UsageBatchBuilder
	if n := len(w.free); n > 0 {
		b, w.free = w.free[n-1], w.free[:n-1]
	} else {
		b = new(events.UsageBatchBuilder)
	}
	if err := b.Reset(w.source, tenant, w.p.e.opts.ID, holder); err != nil {
		w.release(b)
		return nil, err
	}
	return b, nil
}

func (w *batcher) release(b *events.UsageBatchBuilder) {
	// A builder keeps its buffers: keep only those of ordinary batches.
	if len(w.free) < maxFreeBuilders && b.Size() <= maxFreeBuilderBytes {
		w.free = append(w.free, b)
	}
}

// finish closes the batch of k into msgs (a batch that cannot be encoded
// has its records counted failed).
func (w *batcher) finish(k groupKey, b *events.UsageBatchBuilder) {
	delete(w.open, k)
	defer w.release(b)
	n := b.Len()
	subject, id, data, err := b.Finish(make([]byte, 0, b.Size()))
	if err != nil {
		w.p.fail(n, err)
		return
	}
	w.msgs = append(w.msgs, pending{subject: subject, data: data, id: id.String(), events: n})
}

// take finishes every open batch and returns all the finished ones; the
// batcher starts over empty (the slice is the caller's).
func (w *batcher) take() []pending {
	for k, b := range w.open {
		w.finish(k, b)
	}
	msgs := w.msgs
	w.msgs, w.records = nil, 0
	return msgs
}

// encodeBatches encodes recs into batches.
func (w *batcher) encodeBatches(recs []usageRecord) []pending {
	for i := range recs {
		w.add(&recs[i])
	}
	return w.take()
}

// spooledEvents is the number of decisions a spooled message carries: a
// batch's records, or one. ub is reused.
func spooledEvents(subject string, data []byte, ub *events.UsageBatch) int {
	if strings.Count(subject, ".") != 4 { // cordon.usage.<tenant>.<enforcer>: one event
		return 1
	}
	if err := events.DecodeUsageBatch(subject, data, ub); err != nil {
		return 1
	}
	return ub.Len()
}

// checkUsageFormat validates the usage format options (withDefaults).
func checkUsageFormat(o *Options) error {
	switch o.UsageFormat {
	case "":
		o.UsageFormat = DefaultUsageFormat
	case UsageFormatBatch, UsageFormatEvent:
	default:
		return fmt.Errorf("%w: usage format %q: want %q or %q", ErrConfig, o.UsageFormat, UsageFormatBatch, UsageFormatEvent)
	}
	if o.UsageBatchBytes == 0 {
		o.UsageBatchBytes = DefaultUsageBatchBytes
	}
	if o.UsageBatchBytes < minUsageBatchBytes || o.UsageBatchBytes > events.UsageBatchMaxBytes {
		return fmt.Errorf("%w: usage batch bytes %d: want %d..%d", ErrConfig, o.UsageBatchBytes, minUsageBatchBytes, events.UsageBatchMaxBytes)
	}
	if o.UsageFormat == UsageFormatBatch && o.UsageBatch > events.UsageBatchMaxRecords {
		return fmt.Errorf("%w: usage batch %d: a batch holds at most %d records", ErrConfig, o.UsageBatch, events.UsageBatchMaxRecords)
	}
	return nil
}

// minUsageBatchBytes is the smallest Options.UsageBatchBytes.
const minUsageBatchBytes = 1 << 10

// spoolSegmentBytes is the segment size of the usage spool: the spool's
// own default (a sixteenth of its bound, at most 16 MiB), set explicitly
// because a batch must fit in one segment (see batchBytes).
func spoolSegmentBytes(maxBytes int64) int64 {
	return min(maxBytes/16, 16<<20)
}

// batchBytes is the bound of one batch: Options.UsageBatchBytes, or less
// when a spool's segment could not hold a batch of that size.
func batchBytes(o *Options) int {
	n := o.UsageBatchBytes
	if o.SpoolDir != "" {
		// A spool record is the data plus its subject, id and a header.
		n = min(n, int(spoolSegmentBytes(o.SpoolMaxBytes))-512)
	}
	return max(n, minUsageBatchBytes)
}
