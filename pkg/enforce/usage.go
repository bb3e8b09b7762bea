package enforce

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/spool"
	"github.com/cordonhq/cordon/pkg/token"
)

// Bounds on free-form request fields copied into usage events.
const (
	maxUserAgent = 256
	maxRoute     = 256
)

// usageRecord is a decision waiting to be published. It is a value (no
// allocation on the request path); strings are formatted by the publisher.
type usageRecord struct {
	at      time.Time
	latency time.Duration
	d       Decision
	remote  netip.Addr
	agent   string
	method  string
	route   string
	scope   string
	// resource, client and device are the request's context (Request).
	resource string
	client   string
	device   string
	// count is how many decisions a folded record stands for (0 or 1: one).
	count int64
}

// publisher turns decisions into usage events on JetStream in the
// background. The request path only does a non-blocking send on ch.
type publisher struct {
	e   *Enforcer
	log zerolog.Logger // sampled
	ch  chan usageRecord
	// batch is Options.UsageBatch: the records of one usage batch, or in
	// the event format the events published before waiting for their
	// acknowledgements.
	batch int
	// chunk is the most records taken from ch at once (a linger window,
	// a drain round); peek the most spooled messages republished at once.
	chunk, peek int
	// bat groups records into usage batches (nil in the event format).
	bat *batcher
	// scratch holds the records takeQueued encodes in the event format.
	scratch []usageRecord
	// agg folds token-less denials; its records are published every
	// aggEvery (nil: every decision is its own event).
	agg      *aggregator
	aggEvery time.Duration
	// ackWait bounds the wait for one batch's acknowledgements.
	ackWait time.Duration
	// lingerFor is how long a batch waits to fill up.
	lingerFor time.Duration
	flush     chan chan struct{}
	quit      chan struct{}
	done      chan struct{}

	// clients caches the normalised client of recent user agents, addrs
	// the text of recent source addresses; only the run goroutine (encode)
	// uses them.
	clients clientCache
	addrs   addrCache

	dropped   atomic.Uint64
	published atomic.Uint64 // events
	batches   atomic.Uint64 // messages
	failed    atomic.Uint64
	spooled   atomic.Uint64 // events

	// spool keeps the events JetStream did not accept (Options.SpoolDir;
	// nil without one, and until Start opens it). failing is set when
	// JetStream refused or did not acknowledge a batch and cleared when it
	// acknowledges again: while it is set, batches go straight to the
	// spool. wake tells the spool's drainer there is work.
	spool   atomic.Pointer[spool.Spool]
	failing atomic.Bool
	wake    chan struct{}
	// spoolLog is sampled: a failing JetStream fails every batch.
	spoolLog zerolog.Logger
}

func newPublisher(e *Enforcer, buffer, batch int, linger time.Duration) *publisher {
	p := &publisher{
		e:         e,
		ch:        make(chan usageRecord, buffer),
		batch:     batch,
		ackWait:   5 * time.Second,
		lingerFor: linger,
		flush:     make(chan chan struct{}),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		clients:   clientCache{m: make(map[string]string), max: clientCacheSize},
		addrs:     addrCache{m: make(map[netip.Addr]string), max: addrCacheSize},
		wake:      make(chan struct{}, 1),
		chunk:     batch,
		peek:      batch,
	}
	p.log = e.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second})
	if e.opts.UsageFormat == UsageFormatBatch {
		p.bat = newBatcher(p)
		p.chunk = windowBatches * batch
		p.peek = spoolPeekBatches
	}
	if e.opts.SpoolDir != "" {
		p.ackWait = spoolAckWait
	}
	p.spoolLog = e.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second})
	if o := &e.opts; o.AggregateInterval > 0 {
		p.agg, p.aggEvery = newAggregator(o.AggregateSources), o.AggregateInterval
	}
	return p
}

// enqueue hands a decision to the publisher without ever blocking: when
// the buffer is full the event is dropped and counted. A denial that names
// no token is folded into its source's event for the interval instead.
func (p *publisher) enqueue(req *Request, d *Decision, at time.Time, latency time.Duration) {
	r := usageRecord{at: at, latency: latency, d: *d, remote: req.RemoteAddr, agent: req.UserAgent, method: req.Method,
		route: req.Route, scope: req.Scope, resource: req.Resource, client: req.Client, device: req.Device}
	if p.agg != nil && folded(d) {
		p.agg.add(r)
		return
	}
	select {
	case p.ch <- r:
	default:
		p.dropped.Add(1)
	}
}

// run publishes until quit is closed, then drains what is queued; the
// folded events go out every aggEvery, on Flush and on Close.
func (p *publisher) run(js jetstream.JetStream) {
	defer close(p.done)
	if sp := p.spool.Load(); sp != nil {
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			p.drainSpool(js, sp)
		}()
		defer func() {
			<-drained
			p.closeSpool()
		}()
	}
	var batch []usageRecord // the event format's linger window
	if p.bat == nil {
		batch = make([]usageRecord, 0, p.batch)
	}
	var tick <-chan time.Time
	if p.agg != nil {
		t := time.NewTicker(p.aggEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case r := <-p.ch:
			if p.bat != nil {
				p.window(js, r)
				continue
			}
			batch = append(batch[:0], r)
			batch = p.linger(batch)
			p.publish(js, p.encodeAll(batch))
		case <-tick:
			p.publishFolded(js)
		case ack := <-p.flush:
			p.publishFolded(js)
			p.drain(js, time.Time{})
			close(ack)
		case <-p.quit:
			p.publishFolded(js)
			p.drain(js, time.Now().Add(closeDrain))
			return
		}
	}
}

// publishFolded publishes the aggregator's events of the interval.
func (p *publisher) publishFolded(js jetstream.JetStream) {
	if p.agg == nil {
		return
	}
	recs := p.agg.take()
	for len(recs) > 0 {
		n := min(len(recs), p.chunk)
		p.publish(js, p.encodeAll(recs[:n]))
		recs = recs[n:]
	}
}

// windowBatches is how many full batches' worth of records one linger
// window takes at most (Options.UsageBatch each) before it is published.
const windowBatches = 16

// spoolPeekBatches is how many spooled batches the drainer republishes at
// once (at most UsageBatchMaxBytes each).
const spoolPeekBatches = 16

// window publishes the decisions of one linger window in usage batches:
// from first on, each record goes into the batch of its (tenant, holder)
// until the window has lasted UsageLinger, holds chunk records, or a
// Flush or Close ends it. A batch that fills up on the way (UsageBatch
// records or UsageBatchBytes) is sent at once; at the end every open
// batch is finished and the acknowledgements of all are awaited.
func (p *publisher) window(js jetstream.JetStream, first usageRecord) {
	w := p.bat
	w.add(&first)
	sent := p.send(js, w.msgs, 0)
	var ack chan struct{}
	if p.lingerFor <= 0 {
		for w.records < p.chunk {
			select {
			case r := <-p.ch:
				w.add(&r)
				sent = p.send(js, w.msgs, sent)
				continue
			default:
			}
			break
		}
	} else {
		t := time.NewTimer(p.lingerFor)
		defer t.Stop()
	loop:
		for w.records < p.chunk {
			select {
			case r := <-p.ch:
				w.add(&r)
				p.gather(w)
				sent = p.send(js, w.msgs, sent)
			case <-t.C:
				break loop
			case ack = <-p.flush:
				// What was decided before the Flush joins this window's
				// batches rather than a batch of its own after it.
				p.gather(w)
				break loop
			case <-p.quit:
				break loop
			}
		}
	}
	p.publish(js, w.take())
	if ack != nil { // the Flush that ended the window
		p.publishFolded(js)
		p.drain(js, time.Time{})
		close(ack)
	}
}

// gather adds what is queued to the window's batches without
// waiting, up to the window's chunk.
func (p *publisher) gather(w *batcher) {
	for w.records < p.chunk {
		select {
		case r := <-p.ch:
			w.add(&r)
		default:
			return
		}
	}
}

// send publishes msgs[from:] asynchronously (publish awaits their
// acknowledgements) and returns len(msgs); while JetStream is failing
// with a spool, it leaves them to publish.
func (p *publisher) send(js jetstream.JetStream, msgs []pending, from int) int {
	if p.spool.Load() != nil && p.failing.Load() {
		return from
	}
	for i := from; i < len(msgs); i++ {
		p.sendOne(js, &msgs[i])
	}
	return len(msgs)
}

func (p *publisher) sendOne(js jetstream.JetStream, m *pending) {
	m.fut, m.err = js.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id))
	m.sent = true
}

// linger collects records into batch until it is full or linger has
// passed since the first one, so that a steady trickle of decisions is
// published in batches (fewer writes and wake-ups) rather than one by one.
func (p *publisher) linger(batch []usageRecord) []usageRecord {
	batch = p.fill(batch, p.batch)
	if len(batch) >= p.batch || p.lingerFor <= 0 {
		return batch
	}
	t := time.NewTimer(p.lingerFor)
	defer t.Stop()
	for len(batch) < p.batch {
		select {
		case r := <-p.ch:
			batch = append(batch, r)
			batch = p.fill(batch, p.batch)
		case <-t.C:
			return batch
		case <-p.quit:
			return batch
		}
	}
	return batch
}

// fill adds queued records to batch without waiting, up to limit.
func (p *publisher) fill(batch []usageRecord, limit int) []usageRecord {
	for len(batch) < limit {
		select {
		case r := <-p.ch:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// closeDrain bounds how long Close keeps publishing queued events.
const closeDrain = 5 * time.Second

// drain publishes everything queued now, until deadline (none if zero);
// what is left at the deadline goes to the spool, or is counted as dropped
// without one.
func (p *publisher) drain(js jetstream.JetStream, deadline time.Time) {
	for n := len(p.ch); n > 0; n = min(n, len(p.ch)) {
		if !deadline.IsZero() && time.Now().After(deadline) {
			if p.spool.Load() != nil {
				p.failing.Store(true) // the rest goes to the spool
				deadline = time.Time{}
			} else {
				p.dropped.Add(uint64(len(p.ch)))
				return
			}
		}
		msgs, k := p.takeQueued(min(n, p.chunk))
		if k == 0 {
			return
		}
		n -= k
		p.publish(js, msgs)
	}
}

// takeQueued takes up to limit queued records without waiting and
// encodes them into messages; k is how many it took. Usage batches take
// the records straight into their builders.
func (p *publisher) takeQueued(limit int) (msgs []pending, k int) {
	if w := p.bat; w != nil {
		for ; k < limit; k++ {
			select {
			case r := <-p.ch:
				w.add(&r)
				continue
			default:
			}
			break
		}
		return w.take(), k
	}
	p.scratch = p.fill(p.scratch[:0], limit)
	return p.encodeAll(p.scratch), len(p.scratch)
}

// pending is one message to publish: a usage batch, or one event in the
// event format.
type pending struct {
	subject string
	data    []byte
	id      string
	events  int  // decisions it carries
	sent    bool // published once already (window)
	fut     jetstream.PubAckFuture
	err     error // of PublishAsync itself
}

// eventsOf is the number of decisions msgs carry.
func eventsOf(msgs []pending) int {
	n := 0
	for i := range msgs {
		n += msgs[i].events
	}
	return n
}

// publish sends msgs asynchronously (those not sent yet), waits for their
// acknowledgements and retries failures once with the same message id
// (JetStream de-duplicates). With a spool, the messages JetStream does
// not acknowledge in one attempt go to the spool instead (its drainer
// retries them), and while JetStream is failing every message goes
// straight there.
func (p *publisher) publish(js jetstream.JetStream, msgs []pending) {
	if len(msgs) == 0 {
		return
	}
	attempts := 2
	if sp := p.spool.Load(); sp != nil {
		if p.failing.Load() {
			p.toSpool(sp, msgs, nil)
			return
		}
		attempts = 1
	}
	for attempt := 0; attempt < attempts && len(msgs) > 0; attempt++ {
		for i := range msgs {
			if attempt > 0 || !msgs[i].sent {
				p.sendOne(js, &msgs[i])
			}
		}
		retry, lastErr := p.awaitAcks(msgs)
		if sp := p.spool.Load(); sp != nil && len(retry) > 0 {
			p.failing.Store(true)
			p.toSpool(sp, retry, lastErr)
			return
		}
		if len(retry) > 0 && attempt == attempts-1 {
			n := eventsOf(retry)
			p.failed.Add(uint64(n))
			p.log.Warn().Err(lastErr).Int("events", n).Int("messages", len(retry)).Uint64("failed_total", p.failed.Load()).Msg("usage events not published")
		}
		msgs = retry
	}
}

// awaitAcks waits for the acknowledgements of msgs, for ackWait in all,
// and returns the messages to retry and the last error. With a spool, it
// keeps relieving the buffer meanwhile (relieve).
func (p *publisher) awaitAcks(msgs []pending) (retry []pending, lastErr error) {
	timeout := time.NewTimer(p.ackWait)
	defer timeout.Stop()
	var valve <-chan time.Time
	if sp := p.spool.Load(); sp != nil {
		t := time.NewTicker(reliefEvery)
		defer t.Stop()
		valve = t.C
	}
	timedOut := false
	for _, m := range msgs {
		if m.fut == nil {
			lastErr = m.err
			retry = append(retry, m)
			continue
		}
		if err := p.awaitAck(m.fut, timeout.C, valve, &timedOut); err != nil {
			lastErr = err
			retry = append(retry, m)
			continue
		}
		p.published.Add(uint64(m.events))
		p.batches.Add(1)
	}
	return retry, lastErr
}

// awaitAck waits for one acknowledgement until timeout (once *timedOut is
// set, it takes only what has arrived), relieving the buffer at every
// tick of valve.
func (p *publisher) awaitAck(f jetstream.PubAckFuture, timeout, valve <-chan time.Time, timedOut *bool) error {
	for !*timedOut {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-timeout:
			*timedOut = true
		case <-valve:
			p.relieve()
		}
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	default:
		return fmt.Errorf("no acknowledgement within %v", p.ackWait)
	}
}

// encodeAll encodes records into messages: usage batches, or one event
// each in the event format. A record that does not encode is counted
// failed and logged.
func (p *publisher) encodeAll(batch []usageRecord) []pending {
	if p.bat != nil {
		return p.bat.encodeBatches(batch)
	}
	msgs := make([]pending, 0, len(batch))
	for i := range batch {
		subject, data, id, err := p.encode(&batch[i])
		if err != nil {
			p.fail(1, err)
			continue
		}
		msgs = append(msgs, pending{subject: subject, data: data, id: id, events: 1})
	}
	return msgs
}

// fail counts n decisions that could not be encoded.
func (p *publisher) fail(n int, err error) {
	p.failed.Add(uint64(n))
	p.log.Error().Err(err).Int("events", n).Uint64("failed_total", p.failed.Load()).Msg("encode usage")
}

// encode builds the usage event of a record (the event format).
func (p *publisher) encode(r *usageRecord) (subject string, data []byte, id string, err error) {
	var u events.UsageDecided
	p.decided(r, &u)
	env, err := events.New("enforcer/"+p.e.opts.ID, r.at, &u)
	if err != nil {
		return "", nil, "", err
	}
	b, err := events.Encode(env)
	if err != nil {
		return "", nil, "", err
	}
	return events.UsageSubject(u.Tenant, p.e.opts.ID), b, env.MsgID(), nil
}

// decided fills u with the usage event of a record: request fields
// clipped and redacted, the client normalised.
func (p *publisher) decided(r *usageRecord, u *events.UsageDecided) {
	o := &p.e.opts
	ip := r.remote
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	decision := events.DecisionDeny
	if r.d.Allow {
		decision = events.DecisionAllow
	}
	agent := clip(redactToken(r.agent), maxUserAgent)
	client := r.client
	if client == "" {
		client = p.clients.get(agent)
	}
	*u = events.UsageDecided{
		TokenID:   r.d.TokenID,
		Tenant:    r.d.Tenant,
		Holder:    r.d.Holder,
		KeyID:     r.d.KeyID,
		Enforcer:  o.ID,
		Service:   o.Service,
		SourceIP:  p.addrs.get(ip),
		UserAgent: agent,
		Method:    orDash(clip(r.method, 16)),
		Route:     orDash(clip(redactToken(r.route), maxRoute)),
		Scope:     r.scope,
		Decision:  decision,
		Reason:    string(r.d.Reason),
		LatencyNS: int64(r.latency),
		Resource:  fit(redactToken(r.resource), events.MaxResourceLen),
		Client:    fit(redactToken(client), events.MaxClientLen),
	}
	if isThumbprint(r.device) {
		u.Device = r.device
	}
	if r.count > 1 {
		u.Count = min(r.count, events.MaxUsageCount)
	}
	if u.Tenant != "" && events.ValidateName(u.Tenant) != nil {
		u.Tenant = "" // not a subject token: publish under "_"
	}
}

// flushWait asks the publisher to publish everything queued so far.
func (p *publisher) flushWait(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case p.flush <- ack:
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("flush usage: %w", ctx.Err())
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush usage: %w", ctx.Err())
	}
}

// redactToken cuts s where a Cordon token would start: a client that puts
// its token in the path or the user agent must not have it recorded.
func redactToken(s string) string {
	if i := strings.Index(s, token.Prefix); i >= 0 {
		return s[:i] + redactedValue
	}
	return s
}

// isThumbprint reports whether s is a lowercase hex SHA-256 thumbprint,
// the only form a usage event carries.
func isThumbprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// clientCacheSize bounds the user agents whose normalised client is kept.
const clientCacheSize = 1024

// clientCache remembers events.NormalizeClient per user agent: a browser's
// user agent costs a few hundred nanoseconds to read, and an enforcer sees
// few distinct ones. Full, it starts over. Not safe for concurrent use.
type clientCache struct {
	m   map[string]string
	max int
}

// get returns the normalised client of ua (at most maxUserAgent bytes).
func (c *clientCache) get(ua string) string {
	if v, ok := c.m[ua]; ok {
		return v
	}
	if len(c.m) >= c.max {
		clear(c.m)
	}
	ua = strings.Clone(ua) // do not keep the request's header alive
	v := events.NormalizeClient(ua)
	c.m[ua] = v
	return v
}

// addrCacheSize bounds the source addresses whose text is kept.
const addrCacheSize = 4096

// addrCache remembers the text of source addresses (unmapped): formatting
// one costs more than looking it up, and a source makes many requests.
// Full, it starts over. Not safe for concurrent use.
type addrCache struct {
	m   map[netip.Addr]string
	max int
}

// get returns the text of ip.Unmap().
func (c *addrCache) get(ip netip.Addr) string {
	if v, ok := c.m[ip]; ok {
		return v
	}
	if len(c.m) >= c.max {
		clear(c.m)
	}
	v := ip.Unmap().String()
	c.m[ip] = v
	return v
}

// fit is clip for a field whose length is checked after decoding: invalid
// UTF-8 is replaced first (as JSON encoding would, growing the text).
func fit(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return clip(s, n)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
