package enforce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/spool"
)

// The usage spool (Options.SpoolDir). When JetStream does not acknowledge
// a usage message (a batch, or one event in the event format) within the
// ack wait (a leader election, a partition, the cluster down), the
// publisher writes the message to an on-disk spool unchanged (subject,
// message id, data) instead of counting it failed, and sends every later
// message straight there until JetStream answers again, so that it keeps
// emptying its in-memory buffer and no decision is dropped for a full
// buffer. A drainer republishes the spooled messages, oldest first, with
// their original message ids, and takes them out of the spool once
// JetStream has acknowledged them.
//
// JetStream de-duplicates a message id within the USAGE stream's
// duplicate window (20 minutes): a message whose first publish did land
// although its acknowledgement was lost is stored once. A batch's event
// ids are derived from its batch id, so one spooled for longer than the
// window whose first publish landed is stored twice with the same event
// ids; the auditor skips batch ids it has seen and writes usage to
// ClickHouse idempotently by event id, so it is counted once there.

const (
	// spoolAckWait bounds the wait for a batch's acknowledgements when a
	// spool is configured: an unacknowledged batch is spooled (and retried
	// by the drainer, de-duplicated) rather than holding up the buffer.
	spoolAckWait = time.Second
	// spoolRetryMin and spoolRetryMax bound the drainer's back-off while
	// JetStream does not accept the spooled events.
	spoolRetryMin = 250 * time.Millisecond
	spoolRetryMax = 5 * time.Second
)

// openSpool opens Options.SpoolDir (Start): what a previous run left in it
// is republished once the publisher runs.
func (p *publisher) openSpool() error {
	o := &p.e.opts
	if o.SpoolDir == "" || p.spool.Load() != nil {
		return nil
	}
	sp, err := spool.Open(spool.Options{Dir: o.SpoolDir, MaxBytes: o.SpoolMaxBytes, SegmentBytes: spoolSegmentBytes(o.SpoolMaxBytes), Log: p.e.log})
	if err != nil {
		return fmt.Errorf("usage spool: %w", err)
	}
	p.spool.Store(sp)
	st := sp.Stats()
	p.e.log.Info().Str("spool", o.SpoolDir).Int64("max_bytes", st.MaxBytes).Int64("pending", st.Pending).
		Msg("usage spool open: events JetStream does not acknowledge wait here to be republished")
	return nil
}

// toSpool writes msgs to the spool and wakes the drainer; cause is why
// JetStream did not take them (nil: it is known to be failing).
func (p *publisher) toSpool(sp *spool.Spool, msgs []pending, cause error) {
	if len(msgs) == 0 {
		return
	}
	recs := make([]spool.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = spool.Record{Subject: m.subject, ID: m.id, Data: m.data}
	}
	n := eventsOf(msgs)
	if _, err := sp.Append(recs...); err != nil {
		p.failed.Add(uint64(n))
		p.log.Error().Err(err).Int("events", n).Int("messages", len(msgs)).Uint64("failed_total", p.failed.Load()).Msg("usage events neither published nor spooled")
		return
	}
	p.spooled.Add(uint64(n))
	if cause != nil {
		p.spoolLog.Warn().Err(cause).Int("events", n).Int("messages", len(msgs)).Str("spool", sp.Dir()).
			Msg("jetstream did not acknowledge usage events: spooled, to be republished")
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// drainSpool republishes the spooled events in order until quit: a batch
// at a time, taken out of the spool only once every event of it is
// acknowledged; while JetStream does not accept them it backs off.
func (p *publisher) drainSpool(js jetstream.JetStream, sp *spool.Spool) {
	retry := spoolRetryMin
	var ub events.UsageBatch
	for {
		select {
		case <-p.quit:
			return
		default:
		}
		if sp.Stats().Pending == 0 {
			select {
			case <-p.wake:
			case <-p.quit:
				return
			}
			continue
		}
		recs, next, err := sp.Peek(p.peek)
		if err == nil && len(recs) == 0 {
			err = errors.New("spool has pending events but none could be read")
		}
		if err == nil {
			if err = p.republish(js, recs); err == nil {
				p.republished(recs, &ub)
				err = sp.Commit(next)
				p.failing.Store(false)
			} else if refused(err) {
				err = p.oneByOne(js, sp, len(recs), &ub)
			}
		}
		if err == nil {
			retry = spoolRetryMin
			continue
		}
		p.failing.Store(true)
		p.spoolLog.Warn().Err(err).Int64("pending", sp.Stats().Pending).Dur("retry_in", retry).Msg("spooled usage events not republished yet")
		t := time.NewTimer(retry)
		select {
		case <-t.C:
		case <-p.quit:
			t.Stop()
			return
		}
		retry = min(2*retry, spoolRetryMax)
	}
}

// refused reports whether JetStream refused a message for what it is (a
// bad request, too large): retrying it would block the spool for ever.
func refused(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.Code == 400 || api.Code == 413)
}

// republished counts the spooled messages recs JetStream acknowledged.
func (p *publisher) republished(recs []spool.Record, ub *events.UsageBatch) {
	n := 0
	for i := range recs {
		n += spooledEvents(recs[i].Subject, recs[i].Data, ub)
	}
	p.published.Add(uint64(n))
	p.batches.Add(uint64(len(recs)))
}

// oneByOne republishes up to n spooled messages one at a time, after
// JetStream refused one of them, until it has found and dropped (counted
// failed) the refused one.
func (p *publisher) oneByOne(js jetstream.JetStream, sp *spool.Spool, n int, ub *events.UsageBatch) error {
	for range n {
		recs, next, err := sp.Peek(1)
		if err != nil || len(recs) == 0 {
			return err
		}
		err = p.republish(js, recs)
		if err != nil && !refused(err) {
			return err
		}
		if err != nil {
			p.failed.Add(uint64(spooledEvents(recs[0].Subject, recs[0].Data, ub)))
			p.log.Error().Err(err).Str("subject", recs[0].Subject).Str("msg_id", recs[0].ID).
				Msg("jetstream refused a spooled usage message: dropped from the spool")
			return sp.Commit(next)
		}
		p.republished(recs, ub)
		if err := sp.Commit(next); err != nil {
			return err
		}
	}
	return nil
}

// republish publishes recs with their original message ids and waits for
// every acknowledgement. The first goes synchronously: a JetStream that
// does not answer then leaves no asynchronous publish waiting.
func (p *publisher) republish(js jetstream.JetStream, recs []spool.Record) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.ackWait)
	defer cancel()
	msg := func(r *spool.Record) *nats.Msg { return &nats.Msg{Subject: r.Subject, Data: r.Data} }
	if _, err := js.PublishMsg(ctx, msg(&recs[0]), jetstream.WithMsgID(recs[0].ID)); err != nil {
		return fmt.Errorf("republish spooled usage: %w", err)
	}
	futs := make([]jetstream.PubAckFuture, 0, len(recs)-1)
	for i := 1; i < len(recs); i++ {
		f, err := js.PublishMsgAsync(msg(&recs[i]), jetstream.WithMsgID(recs[i].ID))
		if err != nil {
			return fmt.Errorf("republish spooled usage: %w", err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("republish spooled usage: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("republish spooled usage: no acknowledgement within %v", p.ackWait)
		}
	}
	return nil
}

// shutdown ends the spool once the publisher has stopped (Close): the
// events still queued (an enforcer closed before it started publishing)
// are spooled rather than dropped, and the spool is written to disk.
func (p *publisher) shutdown() {
	if p.e.opts.SpoolDir == "" {
		return
	}
	if len(p.ch) > 0 {
		if err := p.openSpool(); err != nil {
			p.log.Error().Err(err).Int("events", len(p.ch)).Msg("usage events queued at close dropped")
			p.dropped.Add(uint64(len(p.ch)))
			return
		}
		sp := p.spool.Load()
		for len(p.ch) > 0 {
			msgs, _ := p.takeQueued(p.chunk)
			p.toSpool(sp, msgs, nil)
		}
	}
	p.closeSpool()
}

// closeSpool writes the spool to disk and releases its directory.
func (p *publisher) closeSpool() {
	if sp := p.spool.Load(); sp != nil {
		if err := sp.Close(); err != nil {
			p.log.Error().Err(err).Msg("close usage spool")
		}
	}
}

// spoolStats fills the spool's lines of s.
func (p *publisher) spoolStats(s *Stats) {
	sp := p.spool.Load()
	if sp == nil {
		return
	}
	st := sp.Stats()
	s.UsageSpooled = p.spooled.Load()
	s.UsageSpoolDropped = st.Dropped
	s.UsageSpoolCorrupt = st.Corrupt
	s.UsageSpoolPending = st.Pending
	s.UsageSpoolBytes = st.PendingBytes
}

// spoolMinBytes is the smallest spool bound Options accepts.
const spoolMinBytes = 64 << 10

// reliefEvery is how often the publisher, while it waits for a batch's
// acknowledgements, checks whether its buffer needs relieving.
const reliefEvery = 10 * time.Millisecond

// relieve spools queued events while the publisher waits for a batch's
// acknowledgements and its buffer is more than half full, down to a
// quarter: a JetStream that stops answering (a leader election) then costs
// a disk write, never a decision dropped for a full buffer. These events
// may be republished before the batch being waited for, when that one is
// spooled in its turn.
func (p *publisher) relieve() {
	sp := p.spool.Load()
	if sp == nil || len(p.ch) <= cap(p.ch)/2 {
		return
	}
	for n := len(p.ch) - cap(p.ch)/4; n > 0; {
		msgs, k := p.takeQueued(min(n, p.chunk))
		if k == 0 {
			return
		}
		n -= k
		p.toSpool(sp, msgs, nil)
	}
}
