package enforce

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// The denylist broadcast, enforcer side. Revoker replicas (origins)
// publish every denylist change on core NATS and a heartbeat every
// interval (pkg/events, broadcast.go). The enforcer applies a change as
// soon as it arrives, whatever the bucket says, and keeps per origin the
// frontier f: every change of that origin numbered up to f is applied. A
// change beyond f+1 opens a gap, filled by asking the origin for the
// missed changes (a resync) or, when it cannot say, by the bucket: once
// the bucket watch has applied every revision up to a heartbeat's KVRev
// and the heartbeat's complete list of pending changes is applied, f is
// the heartbeat's Seq.
//
// Freshness: while an origin is live (heard within max(8 intervals, 2s)),
// the view is current as of the oldest, over the origins, of the arrival
// time of the origin's latest heartbeat at which f reached its Seq. An
// origin that went silent with a gap keeps the view stale until the
// bucket fills it. An origin first heard counts as current as the view
// was at that moment, until a resync or a complete heartbeat settles it
// (so that a replica's restart neither refreshes nor stalls the view).
// With no origin live, the bucket's own freshness (watch
// and probe) applies, still capped by silent origins with a gap; with no
// origin ever heard, nothing changes for library users without a revoker.

// Bounds and timings of the broadcast listener.
const (
	// liveMin and liveIntervals: an origin is live while heard within
	// max(liveIntervals × its interval, liveMin).
	liveMin       = 2 * time.Second
	liveIntervals = 8
	// maxOriginInterval caps the interval an origin claims.
	maxOriginInterval = time.Minute
	// maxOrigins bounds the origins tracked at once.
	maxOrigins = 256
	// maxSeen bounds the out-of-order sequence numbers kept per origin;
	// past it the gap is left to a resync or the bucket.
	maxSeen = 4096
	// maxMarks bounds the heartbeats kept per origin while f is behind.
	maxMarks = 64
	// resyncTimeout is how long a resync request waits for its reply;
	// resyncEvery how often a gap is asked for again.
	resyncTimeout = 2 * time.Second
	resyncEvery   = time.Second
	// forgetFilled and forgetGapped: a silent origin without a gap is
	// forgotten after forgetFilled; one with a gap the bucket never filled
	// after forgetGapped (logged), so that a revoker that died for good
	// does not keep a fail-closed enforcer stale forever.
	forgetFilled = time.Minute
	forgetGapped = 5 * time.Minute
	// broadcastTick is how often the listener re-evaluates origins without
	// a message (liveness, bucket fills).
	broadcastTick = 100 * time.Millisecond
	// broadcastQueue bounds the messages waiting for the listener; past
	// it the NATS client drops them (a gap, filled as any other).
	broadcastQueue = 8192
)

// originState is what the enforcer knows of one revoker replica.
type originState struct {
	name string
	// f is the frontier: every change numbered up to f is applied.
	f uint64
	// seq is the highest sequence number announced (change or heartbeat);
	// maxChange the highest change received.
	seq, maxChange uint64
	// seen holds the changes beyond f+1 already applied.
	seen     map[uint64]struct{}
	interval time.Duration
	// lastHeard is when the origin was last heard; baseAt (Unix
	// nanoseconds) how current the view was when it was first heard.
	lastHeard time.Time
	baseAt    int64
	// currentAt is the arrival of the latest heartbeat at which f had
	// reached its Seq (zero: none yet).
	currentAt time.Time
	// marks are heartbeats (Seq, arrival) received while f was behind,
	// oldest first.
	marks []hbMark
	// The latest heartbeat: its Seq, KVRev, arrival, and whether its
	// complete pending list has been applied.
	hbSeq, hbKVRev uint64
	hbComplete     bool
	// A pending list split over several heartbeats (More) counts only
	// when every part of it was received: prevMore is the More of the
	// last heartbeat, chainSeq/chainOK the run being received.
	prevMore   bool
	chainSeq   uint64
	chainOK    bool
	resyncing  bool
	lastResync time.Time
}

type hbMark struct {
	seq uint64
	at  time.Time
}

// broadcast is the listener of the denylist broadcast.
type broadcast struct {
	e   *Enforcer
	nc  *nats.Conn
	ctx context.Context
	log zerolog.Logger // sampled

	mu      sync.Mutex
	origins map[string]*originState

	changes, duplicates, gaps            atomic.Uint64
	resyncOK, resyncFallback, bucketFill atomic.Uint64
	bad                                  atomic.Uint64
	live                                 atomic.Int64
}

// listenBroadcast subscribes to the denylist broadcast on nc and starts
// the listener. It returns once the server has the subscriptions, so
// nothing broadcast after it returns is missed.
func (e *Enforcer) listenBroadcast(ctx context.Context, nc *nats.Conn) error {
	ch := make(chan *nats.Msg, broadcastQueue)
	var subs []*nats.Subscription
	unsubscribe := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	// One channel for both subjects keeps a change and the heartbeat sent
	// after it in the order the revoker published them.
	for _, subj := range []string{events.SubjectDenyChange, events.SubjectDenyHeartbeat} {
		s, err := nc.ChanSubscribe(subj, ch)
		if err != nil {
			unsubscribe()
			return fmt.Errorf("subscribe to %s: %w", subj, err)
		}
		subs = append(subs, s)
	}
	fctx, fcancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok { // FlushWithContext requires one
		fctx, fcancel = context.WithTimeout(ctx, 10*time.Second)
	}
	err := nc.FlushWithContext(fctx)
	fcancel()
	if err != nil {
		unsubscribe()
		return fmt.Errorf("subscribe to the denylist broadcast: %w", err)
	}
	bctx, cancel := context.WithCancel(context.Background())
	b := &broadcast{
		e: e, nc: nc, ctx: bctx,
		log:     e.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second}),
		origins: map[string]*originState{},
	}
	e.bcast.Store(b)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer cancel()
		defer unsubscribe()
		b.run(ch)
	}()
	return nil
}

func (b *broadcast) run(ch <-chan *nats.Msg) {
	tick := time.NewTicker(broadcastTick)
	defer tick.Stop()
	for {
		select {
		case <-b.e.stop:
			return
		case m := <-ch:
			b.handle(m.Subject, m.Data, time.Now())
		case now := <-tick.C:
			b.tick(now)
		}
	}
}

// handle applies one broadcast message received at now.
func (b *broadcast) handle(subject string, data []byte, now time.Time) {
	switch subject {
	case events.SubjectDenyChange:
		c, err := events.DecodeDenyChange(data)
		if err != nil {
			b.reject(subject, err)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		o := b.origin(c.Origin, now)
		if o == nil {
			return
		}
		b.apply(o, &c, now, true)
		b.advance(o)
		b.maybeResync(o, now)
		b.recompute(now)
	case events.SubjectDenyHeartbeat:
		h, err := events.DecodeDenyHeartbeat(data)
		if err != nil {
			b.reject(subject, err)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		o := b.origin(h.Origin, now)
		if o == nil {
			return
		}
		b.heartbeat(o, &h, now)
		b.recompute(now)
	}
}

func (b *broadcast) reject(subject string, err error) {
	b.bad.Add(1)
	b.log.Warn().Err(err).Str("subject", subject).Msg("denylist broadcast rejected")
}

// origin returns the state of name, heard at now, creating it (nil when
// too many origins are tracked).
func (b *broadcast) origin(name string, now time.Time) *originState {
	o := b.origins[name]
	if o == nil {
		if len(b.origins) >= maxOrigins {
			b.reject("origin "+name, fmt.Errorf("more than %d revoker origins at once", maxOrigins))
			return nil
		}
		o = &originState{name: name, seen: map[uint64]struct{}{}, interval: time.Second, prevMore: true,
			baseAt: min(b.e.fresh.effective(), now.UnixNano())}
		b.origins[name] = o
		b.e.log.Info().Str("origin", name).Msg("denylist broadcast origin heard")
	}
	o.lastHeard = now
	return o
}

// apply applies one change of o. counted says whether it comes from the
// broadcast itself (duplicates and gaps are counted) rather than a
// heartbeat's pending list or a resync reply.
func (b *broadcast) apply(o *originState, c *events.DenyChange, now time.Time, counted bool) {
	if applied, err := b.e.dl.applyBroadcast(c.Key, c.Value, c.KVRev, now); err != nil {
		if !applied { // a key that revokes nothing
			b.bad.Add(1)
		}
		b.log.Error().Err(err).Str("origin", o.name).Uint64("seq", c.Seq).Msg("apply broadcast change")
	}
	_, seen := o.seen[c.Seq]
	if c.Seq <= o.f || seen {
		if counted {
			b.duplicates.Add(1)
		}
		return
	}
	if counted && c.Seq > max(o.maxChange, o.f)+1 {
		b.gaps.Add(1)
	}
	o.maxChange = max(o.maxChange, c.Seq)
	o.seq = max(o.seq, c.Seq)
	b.changes.Add(1)
	if len(o.seen) < maxSeen {
		o.seen[c.Seq] = struct{}{}
	}
}

// heartbeat applies a heartbeat of o received at now.
func (b *broadcast) heartbeat(o *originState, h *events.DenyHeartbeat, now time.Time) {
	o.interval = min(h.Interval, maxOriginInterval)
	o.seq = max(o.seq, h.Seq)
	for i := range h.Pending {
		b.apply(o, &h.Pending[i], now, false)
	}
	if !o.prevMore {
		o.chainSeq, o.chainOK = h.Seq, true
	} else if h.Seq != o.chainSeq {
		o.chainOK = false
	}
	o.prevMore = h.More
	o.hbSeq, o.hbKVRev = h.Seq, h.KVRev
	o.hbComplete = !h.More && o.chainOK && o.chainSeq == h.Seq
	o.marks = append(o.marks, hbMark{seq: h.Seq, at: now})
	if len(o.marks) > maxMarks {
		o.marks = append(o.marks[:0], o.marks[len(o.marks)-maxMarks:]...)
	}
	b.advance(o)
	b.fillFromBucket(o)
	b.maybeResync(o, now)
}

// advance moves o's frontier over the changes applied out of order and
// settles the heartbeats it now covers.
func (b *broadcast) advance(o *originState) {
	for {
		if _, ok := o.seen[o.f+1]; !ok {
			break
		}
		delete(o.seen, o.f+1)
		o.f++
	}
	n := 0
	for _, m := range o.marks {
		if m.seq <= o.f {
			if m.at.After(o.currentAt) {
				o.currentAt = m.at
			}
			continue
		}
		o.marks[n] = m
		n++
	}
	o.marks = o.marks[:n]
}

// setFrontier moves o's frontier to at least f.
func (b *broadcast) setFrontier(o *originState, f uint64) {
	if f <= o.f {
		return
	}
	o.f = f
	for s := range o.seen {
		if s <= f {
			delete(o.seen, s)
		}
	}
	b.advance(o)
}

// fillFromBucket fills o's gap from the bucket when it can: the bucket
// watch has applied every revision up to the latest heartbeat's KVRev and
// that heartbeat's complete pending list is applied.
func (b *broadcast) fillFromBucket(o *originState) {
	if o.hbComplete && o.f < o.hbSeq && b.e.dl.revision.Load() >= o.hbKVRev {
		b.bucketFill.Add(1)
		b.setFrontier(o, o.hbSeq)
	}
}

// maybeResync asks o for the changes after its frontier when there is a
// gap, at most one request at a time and one per resyncEvery.
func (b *broadcast) maybeResync(o *originState, now time.Time) {
	if o.f >= o.seq || o.resyncing || now.Sub(o.lastResync) < resyncEvery {
		return
	}
	o.resyncing, o.lastResync = true, now
	name, from := o.name, o.f+1
	b.e.wg.Add(1)
	go func() {
		defer b.e.wg.Done()
		b.resync(name, from)
	}()
}

// resync requests origin's changes from sequence from and applies the
// reply; without a complete reply the gap is left to the bucket, whose
// watch is restarted when it is behind the origin's last heartbeat.
func (b *broadcast) resync(name string, from uint64) {
	req, _ := json.Marshal(events.DenyResyncRequest{From: from}) // cannot fail
	ctx, cancel := context.WithTimeout(b.ctx, resyncTimeout)
	msg, err := b.nc.RequestWithContext(ctx, events.SubjectDenyResyncPrefix+name, req)
	cancel()
	var rep events.DenyResyncReply
	if err == nil {
		if rep, err = events.DecodeDenyResyncReply(name, msg.Data); err != nil {
			b.reject(events.SubjectDenyResyncPrefix+name, err)
		}
	}
	select {
	case <-b.e.stop:
		return
	default:
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.origins[name]
	if o == nil {
		return
	}
	o.resyncing = false
	if err == nil {
		for i := range rep.Changes {
			b.apply(o, &rep.Changes[i], now, false)
		}
		o.seq = max(o.seq, rep.Seq)
		b.advance(o)
	}
	if err == nil && rep.Complete {
		b.resyncOK.Add(1)
	} else {
		b.resyncFallback.Add(1)
		b.log.Warn().Err(err).Str("origin", name).Uint64("from", from).Bool("complete", rep.Complete).
			Msg("denylist resync incomplete, filling from the bucket")
		b.fillFromBucket(o)
		// Watch again only when the bucket holds what the watch has not
		// delivered (the probe saw it): a bucket that is itself behind
		// (JetStream down) is not helped by a replay.
		if applied := b.e.dl.revision.Load(); o.f < o.seq && applied < o.hbKVRev && b.e.fresh.probed.Load() >= o.hbKVRev {
			select {
			case b.e.rewatchDeny <- struct{}{}:
			default:
			}
		}
	}
	b.recompute(now)
}

// tick re-evaluates every origin at now: bucket fills, repeated resyncs,
// liveness.
func (b *broadcast) tick(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, o := range b.origins {
		b.fillFromBucket(o)
		b.maybeResync(o, now)
	}
	b.recompute(now)
}

func liveWindow(interval time.Duration) time.Duration {
	return max(liveIntervals*interval, liveMin)
}

// recompute sets the enforcer's freshness from the origins at now and
// forgets origins silent for long.
func (b *broadcast) recompute(now time.Time) {
	fr := &b.e.fresh
	if len(b.origins) == 0 {
		fr.mode.Store(modeBucket)
		b.live.Store(0)
		return
	}
	var nlive int64
	c := int64(math.MaxInt64)
	for name, o := range b.origins {
		silent := now.Sub(o.lastHeard)
		live := silent <= liveWindow(o.interval)
		gap := o.f < o.seq
		if live {
			nlive++
		}
		switch {
		case !live && !gap:
			if silent > forgetFilled {
				delete(b.origins, name)
			}
			continue
		case !live && silent > forgetGapped:
			b.e.log.Warn().Str("origin", name).Uint64("frontier", o.f).Uint64("seq", o.seq).
				Msg("forgetting a silent denylist origin whose gap was never filled")
			delete(b.origins, name)
			continue
		}
		if o.currentAt.IsZero() {
			// Not yet current with this origin since it was first
			// heard (a resync or a complete heartbeat settles it): the
			// view is as current as it was then, and that instant
			// ages until the origin settles.
			c = min(c, o.baseAt)
			continue
		}
		c = min(c, o.currentAt.UnixNano())
	}
	b.live.Store(nlive)
	switch {
	case nlive == 0 && c == math.MaxInt64:
		fr.mode.Store(modeBucket)
	case nlive == 0:
		fr.bcastAt.Store(c)
		fr.mode.Store(modeCapped)
	default:
		fr.bcastAt.Store(c)
		fr.mode.Store(modeBroadcast)
	}
}
