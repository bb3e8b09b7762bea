package alert

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// Options configures a Dispatcher.
type Options struct {
	// Sinks receive every alert; none makes the dispatcher only track groups.
	Sinks []Sink
	// Log receives delivery failures (never URLs or keys).
	Log zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Source names this Cordon instance in alerts.
	Source string
	// MaxAttempts bounds the delivery attempts of one notification
	// (default 6).
	MaxAttempts int
	// Backoff is the delay before the first retry; it doubles on each
	// further one up to MaxBackoff (defaults 500ms and 30s).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// SendTimeout bounds one delivery attempt (default 10s).
	SendTimeout time.Duration
	// QueueSize bounds the notifications waiting per sink; beyond it new
	// ones are dropped and counted (default 1024).
	QueueSize int
	// MaxGroups bounds the open alerts; beyond it the least recently
	// updated one is forgotten without a resolve (default 10000).
	MaxGroups int
	// MaxObservations bounds the anomalies kept per alert (default 10).
	MaxObservations int
	// SweepEvery is how often alerts past their ResolveAt are resolved
	// (default 1s).
	SweepEvery time.Duration
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = o.Backoff
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 10 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxGroups <= 0 {
		o.MaxGroups = 10_000
	}
	if o.MaxObservations <= 0 {
		o.MaxObservations = 10
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Second
	}
}

// Notice is one anomaly to alert on, with what Cordon decided about it.
type Notice struct {
	TokenID    string
	Tenant     string
	Holder     string
	BreakGlass bool
	// Observation is the anomaly.
	Observation Observation
	// Severity is the severity to alert with (the policy may raise the
	// anomaly's, e.g. to critical for a break-glass token).
	Severity string
	// Outcome, Rule and Action say what Cordon did and why.
	Outcome Outcome
	Rule    string
	Action  string
	// ResolveAt, when set, resolves the alert on its own at that time
	// (the token's expiry, or a quiet period for a dead token) with
	// ResolveReason.
	ResolveAt     time.Time
	ResolveReason string
}

// Dispatcher groups alerts per token and delivers them to its sinks in
// the background. It is safe for concurrent use; Notify and Resolve never
// block on a receiver.
type Dispatcher struct {
	o      Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	groups map[string]*group
	gen    uint64

	queues  []*queue
	evicted atomic.Uint64
	closed  atomic.Bool
}

type group struct {
	alert      Alert
	gen        uint64
	resolveAt  time.Time
	resolveWhy string
}

// NewDispatcher starts a dispatcher with one delivery worker per sink.
func NewDispatcher(o Options) *Dispatcher {
	o.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{o: o, ctx: ctx, cancel: cancel, groups: map[string]*group{}}
	for _, s := range o.Sinks {
		q := &queue{sink: s, max: o.QueueSize, firing: map[uint64]*item{}, wake: make(chan struct{}, 1)}
		d.queues = append(d.queues, q)
		d.wg.Add(1)
		go d.worker(q)
	}
	d.wg.Add(1)
	go d.sweeper()
	return d
}

// Notify opens the token's alert, or updates it with another anomaly, and
// queues the new state for every sink. A notice repeating an anomaly id
// already in the alert (a redelivery) is ignored.
func (d *Dispatcher) Notify(n Notice) {
	if d.closed.Load() {
		return
	}
	now := d.o.Now()
	d.mu.Lock()
	g := d.groups[n.TokenID]
	if g == nil {
		if len(d.groups) >= d.o.MaxGroups {
			d.evictLocked()
		}
		d.gen++
		g = &group{gen: d.gen, alert: Alert{
			TokenID: n.TokenID, Tenant: n.Tenant, Holder: n.Holder, StartsAt: now, Source: d.o.Source,
		}}
		d.groups[n.TokenID] = g
	} else if id := n.Observation.AnomalyID; id != "" {
		for _, o := range g.alert.Observations {
			if o.AnomalyID == id {
				d.mu.Unlock()
				return
			}
		}
	}
	a := &g.alert
	a.Status = StatusFiring
	a.BreakGlass = a.BreakGlass || n.BreakGlass
	if events.SeverityRank(n.Severity) > events.SeverityRank(a.Severity) {
		a.Severity = n.Severity
	}
	a.Outcome, a.Rule, a.Action = n.Outcome, n.Rule, n.Action
	a.Observations = append(a.Observations, n.Observation)
	if over := len(a.Observations) - d.o.MaxObservations; over > 0 {
		a.Observations = append(a.Observations[:0:0], a.Observations[over:]...)
	}
	a.Count++
	a.UpdatedAt = now
	g.resolveAt, g.resolveWhy = n.ResolveAt, n.ResolveReason
	snap, gen := a.clone(), g.gen
	d.mu.Unlock()
	d.enqueue(snap, gen)
}

// Resolve resolves the token's open alert, saying why, and reports whether
// there was one.
func (d *Dispatcher) Resolve(tokenID, why string) bool {
	return d.resolve(tokenID, why, time.Time{})
}

// ResolveOpenedBefore resolves the token's open alert only if it opened no
// later than at: a revocation at `at` ends the alerts it answers, not an
// alert about use of the token after it was revoked.
func (d *Dispatcher) ResolveOpenedBefore(tokenID, why string, at time.Time) bool {
	return d.resolve(tokenID, why, at)
}

func (d *Dispatcher) resolve(tokenID, why string, openedBy time.Time) bool {
	if d.closed.Load() {
		return false
	}
	d.mu.Lock()
	g := d.groups[tokenID]
	if g == nil || !openedBy.IsZero() && g.alert.StartsAt.After(openedBy) {
		d.mu.Unlock()
		return false
	}
	delete(d.groups, tokenID)
	now := d.o.Now()
	a := &g.alert
	a.Status, a.EndsAt, a.UpdatedAt, a.Resolution = StatusResolved, now, now, why
	snap, gen := a.clone(), g.gen
	d.mu.Unlock()
	d.enqueue(snap, gen)
	return true
}

// Open returns a copy of the token's open alert.
func (d *Dispatcher) Open(tokenID string) (Alert, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.groups[tokenID]
	if g == nil {
		return Alert{}, false
	}
	return g.alert.clone(), true
}

// evictLocked forgets the least recently updated group.
func (d *Dispatcher) evictLocked() {
	var oldest *group
	for _, g := range d.groups {
		if oldest == nil || g.alert.UpdatedAt.Before(oldest.alert.UpdatedAt) {
			oldest = g
		}
	}
	if oldest != nil {
		delete(d.groups, oldest.alert.TokenID)
		d.evicted.Add(1)
	}
}

func (d *Dispatcher) sweeper() {
	defer d.wg.Done()
	t := time.NewTicker(d.o.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		now := d.o.Now()
		type due struct{ token, why string }
		var list []due
		d.mu.Lock()
		for id, g := range d.groups {
			if !g.resolveAt.IsZero() && !now.Before(g.resolveAt) {
				list = append(list, due{id, g.resolveWhy})
			}
		}
		d.mu.Unlock()
		for _, x := range list {
			d.Resolve(x.token, x.why)
		}
	}
}

// SinkStats counts one sink's deliveries.
type SinkStats struct {
	// Sent notifications, Retries made, Failed notifications given up
	// after MaxAttempts or a permanent error, Dropped on a full queue.
	Sent, Retries, Failed, Dropped uint64
	// Queued is the number of notifications waiting.
	Queued int
}

// Stats is a snapshot of the dispatcher's state.
type Stats struct {
	// Open is the number of open alerts (bounded by MaxGroups).
	Open int
	// Evicted counts open alerts forgotten over the bound.
	Evicted uint64
	// Sinks holds per-sink counters by sink name.
	Sinks map[string]SinkStats
}

// Stats returns a snapshot of the counters.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	s := Stats{Open: len(d.groups), Evicted: d.evicted.Load(), Sinks: map[string]SinkStats{}}
	d.mu.Unlock()
	for _, q := range d.queues {
		q.mu.Lock()
		n := len(q.items)
		q.mu.Unlock()
		prev := s.Sinks[q.sink.Name()]
		s.Sinks[q.sink.Name()] = SinkStats{
			Sent: prev.Sent + q.sent.Load(), Retries: prev.Retries + q.retries.Load(),
			Failed: prev.Failed + q.failed.Load(), Dropped: prev.Dropped + q.dropped.Load(), Queued: prev.Queued + n,
		}
	}
	return s
}

// Flush waits until every queued notification was delivered or given up,
// or ctx ends.
func (d *Dispatcher) Flush(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		idle := true
		for _, q := range d.queues {
			q.mu.Lock()
			if len(q.items) > 0 || q.busy {
				idle = false
			}
			q.mu.Unlock()
		}
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close stops the workers; queued notifications not yet delivered are
// abandoned (Flush first to wait for them).
func (d *Dispatcher) Close() {
	if d.closed.Swap(true) {
		return
	}
	d.cancel()
	d.wg.Wait()
}

// queue is one sink's ordered backlog.
type queue struct {
	sink Sink
	max  int
	wake chan struct{}

	mu     sync.Mutex
	items  []*item
	firing map[uint64]*item // group generation → its queued, unsent firing item
	busy   bool

	sent, retries, failed, dropped atomic.Uint64
}

type item struct {
	a   Alert
	gen uint64
}

func (d *Dispatcher) enqueue(a Alert, gen uint64) {
	for _, q := range d.queues {
		q.push(d, a.clone(), gen)
	}
}

func (q *queue) push(d *Dispatcher, a Alert, gen uint64) {
	q.mu.Lock()
	if a.Status == StatusFiring {
		if it := q.firing[gen]; it != nil {
			it.a = a // an unsent update is replaced by the newer state
			q.mu.Unlock()
			return
		}
	}
	if len(q.items) >= q.max {
		q.mu.Unlock()
		q.dropped.Add(1)
		d.o.Log.Warn().Str("sink", q.sink.Name()).Str("token_id", a.TokenID).Str("status", string(a.Status)).
			Msg("alert queue full, notification dropped")
		return
	}
	it := &item{a: a, gen: gen}
	q.items = append(q.items, it)
	if a.Status == StatusFiring {
		q.firing[gen] = it
	} else {
		delete(q.firing, gen) // later updates must not jump ahead of the resolve
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) pop() *item {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.busy = false
		return nil
	}
	it := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	if q.firing[it.gen] == it {
		delete(q.firing, it.gen)
	}
	q.busy = true
	return it
}

func (d *Dispatcher) worker(q *queue) {
	defer d.wg.Done()
	for {
		it := q.pop()
		if it == nil {
			select {
			case <-d.ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		d.deliver(q, it)
		if d.ctx.Err() != nil {
			return
		}
	}
}

// deliver sends one notification, retrying transient failures with
// exponential back-off up to MaxAttempts.
func (d *Dispatcher) deliver(q *queue, it *item) {
	log := d.o.Log.With().Str("sink", q.sink.Name()).Str("token_id", it.a.TokenID).Str("status", string(it.a.Status)).Logger()
	wait := d.o.Backoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(d.ctx, d.o.SendTimeout)
		retry, err := q.sink.Send(ctx, &it.a)
		cancel()
		if err == nil {
			q.sent.Add(1)
			log.Debug().Int("attempt", attempt).Msg("alert delivered")
			return
		}
		if d.ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return
		}
		if !retry || attempt >= d.o.MaxAttempts {
			q.failed.Add(1)
			log.Error().Err(err).Int("attempt", attempt).Bool("transient", retry).Msg("alert delivery failed, giving up")
			return
		}
		q.retries.Add(1)
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("alert delivery failed, retrying")
		t := time.NewTimer(wait)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, d.o.MaxBackoff)
	}
}
