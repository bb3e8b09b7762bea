package auditor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Shared knowledge between auditor instances.
//
// Every partition's detector reports what it learns that the others need
// (a network entered a holder's baseline; an address space entered a
// tenant's; a tenant became learnt: detect.Shared) to the instance's
// Knowledge. It writes each fact to the KV bucket
// events.BucketAuditorKnowledge and feeds what every instance wrote back
// to its own detectors. A key is one fact, its value the event time it
// was learnt at (Unix seconds, decimal); the earliest time wins (create,
// or compare-and-set to an earlier time).
//
// A fact counts in a judgement only detect.ShareDelay of event time after
// it was learnt, and a detector about to answer "unknown" first waits at
// its partition's gate until every other partition has read that far
// (its mark: the event time it has read up to, or the stream sequence it
// has read every message of its own up to). This instance's partitions
// report their progress here as they read; other instances' marks come
// through the bucket, each written after the facts learnt before it. So
// when a fact arrives never changes what is raised.
//
// Facts are written in the background, retried while NATS is away, and
// re-derived from a partition's checkpoint when it is restored (a fact a
// killed instance had not written yet is written by the next owner).

// knowledgeQueue bounds the facts waiting to be written. Facts are rare
// (a network or address space learnt for the first time); one that does
// not fit is counted and derived again at the partition's next restore.
const knowledgeQueue = 1 << 16

// Knowledge relays detect.Shared facts between instances (see above).
type Knowledge struct {
	shared *detect.Shared
	kv     jetstream.KeyValue
	log    zerolog.Logger
	queue  chan detect.Fact

	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Progress of the partitions (the gate): this instance's own, and
	// the latest every instance wrote (remote).
	local  [events.MaxUsagePartitions]partProgress
	mu     sync.Mutex
	remote [events.MaxUsagePartitions]mark
	moved  chan struct{} // closed and replaced when a mark moves
	// waiters counts the gates waiting; marks wake them only then.
	waiters atomic.Int32
	// wait bounds one wait at the gate (ShareWait).
	wait time.Duration
	// parts is the stream's partition count (Gate).
	parts atomic.Int32

	written, received, dropped, invalid, waits, gaveUp atomic.Uint64
}

// mark is how far a partition has read: every event of its own up to
// event time T (Unix seconds), and every message of its own up to stream
// sequence Seq.
type mark struct {
	T   int64
	Seq uint64
}

// partProgress is a partition's progress as this instance's runner
// reports it.
type partProgress struct {
	judging atomic.Uint64                   // stream sequence of the message being judged
	t       atomic.Int64                    // mark.T
	seq     atomic.Uint64                   // mark.Seq
	done    atomic.Pointer[<-chan struct{}] // the runner's end
	poke    chan struct{}                   // Poked
	// sent is the mark last written to the bucket (the writer's own).
	sent mark
}

// KnowledgeBucketConfig is the knowledge bucket's configuration.
func KnowledgeBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      events.BucketAuditorKnowledge,
		Description: "Cordon auditor: what the partitions' detectors learnt that the others use (networks of workloads, tenants' address spaces)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// OpenKnowledge opens the knowledge bucket (creating it when missing),
// loads every fact it holds and starts following it and writing what this
// instance's detectors learn. Close stops it.
func OpenKnowledge(ctx context.Context, js jetstream.JetStream, o KnowledgeOptions) (*Knowledge, error) {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Wait == 0 {
		o.Wait = DefaultShareWait
	}
	replicas, log := o.Replicas, o.Log
	k := &Knowledge{log: log, queue: make(chan detect.Fact, knowledgeQueue), moved: make(chan struct{}), wait: o.Wait}
	for p := range k.local {
		k.local[p].poke = make(chan struct{}, 1)
	}
	k.shared = detect.NewShared(func(f detect.Fact) {
		select {
		case k.queue <- f:
		default:
			k.dropped.Add(1)
		}
	})
	rctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	err := natsconn.Retry(rctx, log, "bucket "+events.BucketAuditorKnowledge, func(ctx context.Context) (err error) {
		k.kv, err = openKV(ctx, js, KnowledgeBucketConfig(replicas))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open knowledge bucket %s: %w", events.BucketAuditorKnowledge, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	k.cancel = stop
	w, err := k.kv.WatchAll(runCtx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("follow knowledge bucket %s: %w", events.BucketAuditorKnowledge, err)
	}
	// The facts already written are loaded before any detector runs, so
	// a restarted instance judges as the one before it did.
	loaded := make(chan struct{})
	k.wg.Add(2)
	go func() {
		defer k.wg.Done()
		defer func() { _ = w.Stop() }()
		k.follow(runCtx, w, loaded)
	}()
	go func() {
		defer k.wg.Done()
		k.write(runCtx)
	}()
	select {
	case <-loaded:
	case <-rctx.Done():
		k.Close()
		return nil, fmt.Errorf("load knowledge bucket %s: %w", events.BucketAuditorKnowledge, rctx.Err())
	}
	return k, nil
}

// KnowledgeOptions configure OpenKnowledge.
type KnowledgeOptions struct {
	// Replicas of the bucket when created (default 1).
	Replicas int
	// Wait bounds one wait at a partition's gate (default
	// DefaultShareWait).
	Wait time.Duration
	Log  zerolog.Logger
}

// DefaultShareWait is how long a partition waits, at most, for another
// that does not move before judging without its latest facts.
const DefaultShareWait = time.Minute

// markEvery paces the writing of marks to the bucket. A replay or a
// catch-up waits on other instances' marks: at 100 ms, two and four
// instances read the scale-out suite's usage at 0.51 to 0.58× one
// instance's rate; at 20 ms, 0.89 to 0.97×, for the same CPU per event.
const markEvery = 20 * time.Millisecond

// Shared is what the detectors share (detect.Engine.Share).
func (k *Knowledge) Shared() *detect.Shared { return k.shared }

// Gate is partition p's gate (of parts partitions): detect.Engine.Share.
func (k *Knowledge) Gate(p, parts int) detect.Gate {
	k.parts.Store(int32(parts))
	return &gate{k: k, p: p, parts: parts}
}

// alone reports whether this instance runs every partition: no other
// instance needs its marks.
func (k *Knowledge) alone() bool {
	parts := int(k.parts.Load())
	for q := 0; q < parts && q < events.MaxUsagePartitions; q++ {
		d := k.local[q].done.Load()
		if d == nil {
			return false
		}
		select {
		case <-*d:
			return false
		default:
		}
	}
	return parts > 0
}

// Reading ties partition p's gate to its runner: a wait ends when done
// closes.
func (k *Knowledge) Reading(p int, done <-chan struct{}) {
	if k == nil || p < 0 || p >= events.MaxUsagePartitions {
		return
	}
	k.local[p].done.Store(&done)
}

// Judging records that partition p's runner judges the message at stream
// sequence seq next: it has judged every message of its own before it
// (its consumer delivers in stream order).
func (k *Knowledge) Judging(p int, seq uint64) {
	if k == nil || p < 0 || p >= events.MaxUsagePartitions {
		return
	}
	pp := &k.local[p]
	pp.judging.Store(seq)
	if seq > 0 && seq-1 > pp.seq.Load() {
		pp.seq.Store(seq - 1)
		k.wake()
	}
}

// Poked receives when a gate waits on partition p: its
// runner then checks at once whether it has caught up (CaughtUp), instead
// of at its idle pace.
func (k *Knowledge) Poked(p int) <-chan struct{} {
	if k == nil || p < 0 || p >= events.MaxUsagePartitions {
		return nil
	}
	return k.local[p].poke
}

// Read records that partition p has judged every event of its own up to
// event time t (Unix seconds). Facts its detector learnt from them are
// queued already: they are written before the mark.
func (k *Knowledge) Read(p int, t int64) {
	if k == nil || p < 0 || p >= events.MaxUsagePartitions {
		return
	}
	if pp := &k.local[p]; t > pp.t.Load() {
		pp.t.Store(t)
		k.wake()
	}
}

// CaughtUp records that partition p has judged every message of its own
// up to stream sequence seq. When usage is live (some partition has read
// events of the last ShareDelay), a caught-up partition has also read
// every event of its own up to a minute ago (liveSlack): an idle
// partition holds no other up.
func (k *Knowledge) CaughtUp(p int, seq uint64) {
	if k == nil || p < 0 || p >= events.MaxUsagePartitions {
		return
	}
	pp := &k.local[p]
	moved := false
	if seq > pp.seq.Load() {
		pp.seq.Store(seq)
		moved = true
	}
	now := time.Now().Unix()
	if live := now - liveSlack; k.latest() >= now-int64(detect.ShareDelay/time.Second) && live > pp.t.Load() {
		pp.t.Store(live)
		moved = true
	}
	if moved {
		k.wake()
	}
}

// liveSlack is how late, at most, usage of live traffic is taken to reach
// the stream (an enforcer's batching and retries).
const liveSlack = 60

// latest is the furthest event time any partition has read.
func (k *Knowledge) latest() int64 {
	var t int64
	for q := range k.local {
		t = max(t, k.local[q].t.Load())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range k.remote {
		t = max(t, m.T)
	}
	return t
}

// wake wakes the waiting gates.
func (k *Knowledge) wake() {
	if k.waiters.Load() == 0 {
		return
	}
	k.mu.Lock()
	close(k.moved)
	k.moved = make(chan struct{})
	k.mu.Unlock()
}

// progress is partition q's mark: the furthest of this instance's and
// the bucket's.
func (k *Knowledge) progress(q int) mark {
	pp := &k.local[q]
	m := mark{T: pp.t.Load(), Seq: pp.seq.Load()}
	k.mu.Lock()
	r := k.remote[q]
	k.mu.Unlock()
	return mark{T: max(m.T, r.T), Seq: max(m.Seq, r.Seq)}
}

// gate is one partition's detect.Gate.
type gate struct {
	k        *Knowledge
	p, parts int
	// ready: every other partition has read up to this event time (a
	// cache: a wait is needed only past it).
	ready int64
	// stale: a partition given up on, at the mark it had; it counts as
	// ready until its mark moves.
	stale map[int]mark
}

// Wait returns once every other partition has judged every event of its
// own up to t − ShareDelay (or every message of its own before the one
// being judged), or has not moved for KnowledgeOptions.Wait.
func (g *gate) Wait(t int64) {
	need := t - int64(detect.ShareDelay/time.Second)
	if need <= g.ready || g.parts <= 1 {
		return
	}
	k := g.k
	var deadline *time.Timer
	waited := false
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
		if waited {
			k.waiters.Add(-1)
		}
	}()
	for {
		k.mu.Lock()
		moved := k.moved
		k.mu.Unlock()
		behind, low := g.behind(need)
		if len(behind) == 0 {
			g.ready = low
			return
		}
		if !waited {
			waited = true
			k.waiters.Add(1)
			k.waits.Add(1)
			deadline = time.NewTimer(k.wait)
			// Partitions of this instance that may just be idle check
			// now whether they caught up.
			for _, q := range behind {
				select {
				case k.local[q].poke <- struct{}{}:
				default:
				}
			}
			continue // a mark may have moved before the count rose
		}
		var done <-chan struct{}
		if d := k.local[g.p].done.Load(); d != nil {
			done = *d
		}
		select {
		case <-moved:
		case <-done:
			return
		case <-deadline.C:
			if g.stale == nil {
				g.stale = map[int]mark{}
			}
			for _, q := range behind {
				g.stale[q] = k.progress(q)
			}
			k.gaveUp.Add(1)
			k.log.Warn().Int("partition", g.p).Ints("behind", behind).Time("event_time", time.Unix(t, 0)).Dur("waited", k.wait).
				Msg("partitions did not read up to a day before this partition's events in time: judging without their latest facts until they move")
			return
		}
	}
}

// behind lists the other partitions that have read neither up to event
// time need nor past the message being judged (stale ones aside), and
// the lowest event time all of them have read.
func (g *gate) behind(need int64) (behind []int, low int64) {
	k := g.k
	judging := k.local[g.p].judging.Load()
	// Live usage: what counts was learnt over a day ago, and a partition
	// no instance has run yet has learnt nothing then.
	live := need >= time.Now().Unix()-2*int64(detect.ShareDelay/time.Second)
	low = need
	for q := 0; q < g.parts; q++ {
		if q == g.p {
			continue
		}
		m := k.progress(q)
		low = min(low, m.T)
		if m.T >= need || judging != 0 && m.Seq >= judging || live && m == (mark{}) {
			continue
		}
		if s, ok := g.stale[q]; ok && s == m {
			continue
		}
		delete(g.stale, q)
		behind = append(behind, q)
	}
	return behind, low
}

// KnowledgeStats count the facts of one instance.
type KnowledgeStats struct {
	// Facts is how many facts the instance holds (its own and others').
	Facts int `json:"facts"`
	// Written is how many it wrote to the bucket (new, or earlier).
	Written uint64 `json:"written"`
	// Received is how many updates of the bucket it read.
	Received uint64 `json:"received"`
	// Dropped is how many did not fit the write queue (derived again at
	// the partition's next restore).
	Dropped uint64 `json:"dropped"`
	// Invalid is how many entries of the bucket it could not read.
	Invalid uint64 `json:"invalid"`
	// Waits is how many times a partition waited for others to read
	// further; GaveUp how many of those waits ran out.
	Waits  uint64 `json:"waits"`
	GaveUp uint64 `json:"gave_up"`
}

// Stats returns the instance's counts.
func (k *Knowledge) Stats() KnowledgeStats {
	if k == nil {
		return KnowledgeStats{}
	}
	return KnowledgeStats{Facts: k.shared.Len(), Written: k.written.Load(), Received: k.received.Load(),
		Dropped: k.dropped.Load(), Invalid: k.invalid.Load(), Waits: k.waits.Load(), GaveUp: k.gaveUp.Load()}
}

// Close stops following and writing; facts not written yet are derived
// again from the partitions' checkpoints by whoever restores them.
func (k *Knowledge) Close() {
	if k.cancel != nil {
		k.cancel()
	}
	k.wg.Wait()
}

// follow feeds every entry of the bucket to the Shared; loaded is closed
// once the entries present at the start are in.
func (k *Knowledge) follow(ctx context.Context, w jetstream.KeyWatcher, loaded chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if strings.HasPrefix(e.Key(), markPrefix) {
				q, m, err := parseMark(e.Key(), e.Value())
				if err != nil {
					k.invalid.Add(1)
					k.log.Warn().Err(err).Msg("knowledge bucket: entry skipped")
					continue
				}
				k.mu.Lock()
				r := &k.remote[q]
				r.T, r.Seq = max(r.T, m.T), max(r.Seq, m.Seq)
				k.mu.Unlock()
				k.wake()
				continue
			}
			f, err := ParseFact(e.Key(), e.Value())
			if err != nil {
				k.invalid.Add(1)
				k.log.Warn().Err(err).Msg("knowledge bucket: entry skipped")
				continue
			}
			k.received.Add(1)
			k.shared.Add(f)
		}
	}
}

// write writes each fact the detectors learn, and every markEvery the
// marks of the partitions that moved — after the facts learnt before them
// — retrying while NATS is away.
func (k *Knowledge) write(ctx context.Context) {
	tick := time.NewTicker(markEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-k.queue:
			if !k.retry(ctx, "fact", func() error { return k.put(ctx, f) }) {
				return
			}
		case <-tick.C:
			// The marks are read first: a fact learnt before a mark
			// moved is queued before, so it is written before the mark.
			var marks [events.MaxUsagePartitions]mark
			for q := range k.local {
				marks[q] = mark{T: k.local[q].t.Load(), Seq: k.local[q].seq.Load()}
			}
			for drained := false; !drained; {
				select {
				case f := <-k.queue:
					if !k.retry(ctx, "fact", func() error { return k.put(ctx, f) }) {
						return
					}
				default:
					drained = true
				}
			}
			if k.alone() {
				continue // every partition's progress is local
			}
			now := time.Now().Unix()
			for q, m := range marks {
				pp := &k.local[q]
				if !markDue(pp.sent, m, now) {
					continue
				}
				key, val := MarkKey(q), fmt.Appendf(nil, "%d:%d", m.T, m.Seq)
				if !k.retry(ctx, "mark", func() error { _, err := k.kv.Put(ctx, key, val); return err }) {
					return
				}
				pp.sent = m
			}
		}
	}
}

// markDue says whether a partition's mark is worth writing: its event
// time moved a minute or more; or, while it reads events older than half
// a ShareDelay (a replay, a catch-up), its caught-up sequence moved. Live,
// other partitions need no more than a mark of the last day.
func markDue(sent, m mark, now int64) bool {
	if m == sent {
		return false
	}
	return m.T-sent.T >= 60 || m.Seq > sent.Seq && m.T < now-int64(detect.ShareDelay/time.Second)/2
}

// retry runs put until it succeeds; false when ctx ended first.
func (k *Knowledge) retry(ctx context.Context, what string, put func() error) bool {
	for attempt := 0; ; attempt++ {
		err := put()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if attempt%10 == 0 {
			k.log.Warn().Err(err).Int("attempt", attempt+1).Msg("knowledge bucket: " + what + " not written yet; retrying")
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)):
		}
	}
}

// markPrefix starts the keys of partitions' marks.
const markPrefix = "mark.p"

// MarkKey is partition p's mark key in the knowledge bucket; its value is
// "<event time>:<stream sequence>" (mark).
func MarkKey(p int) string { return markPrefix + strconv.Itoa(p) }

// parseMark reads a mark entry back.
func parseMark(key string, value []byte) (int, mark, error) {
	num, ok := strings.CutPrefix(key, markPrefix)
	p, err := strconv.Atoi(num)
	if !ok || err != nil || p < 0 || p >= events.MaxUsagePartitions || strconv.Itoa(p) != num {
		return 0, mark{}, fmt.Errorf("knowledge %q: not %s<partition>", key, markPrefix)
	}
	ts, seqs, ok := strings.Cut(string(value), ":")
	t, err1 := strconv.ParseInt(ts, 10, 64)
	seq, err2 := strconv.ParseUint(seqs, 10, 64)
	// Only the writer's own form: no sign, no leading zero.
	if !ok || err1 != nil || err2 != nil || t < 0 || strconv.FormatInt(t, 10) != ts || strconv.FormatUint(seq, 10) != seqs {
		return 0, mark{}, fmt.Errorf("knowledge %q: value %q is not <event time>:<stream sequence>", key, value)
	}
	return p, mark{T: t, Seq: seq}, nil
}

// put writes a fact unless the bucket holds it at the same or an earlier
// time.
func (k *Knowledge) put(ctx context.Context, f detect.Fact) error {
	key := FactKey(f)
	val := []byte(strconv.FormatInt(f.Time, 10))
	for range 5 {
		_, err := k.kv.Create(ctx, key, val)
		if err == nil {
			k.written.Add(1)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		e, err := k.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if held, err := ParseFact(key, e.Value()); err == nil && held.Time <= f.Time {
			return nil
		}
		if _, err := k.kv.Update(ctx, key, val, e.Revision()); err == nil {
			k.written.Add(1)
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		// Someone wrote it meanwhile: read again.
	}
	return fmt.Errorf("knowledge %s: kept changing", key)
}

// FactKey is a fact's key in the knowledge bucket:
// "net.<hash>", "space.<tenant hash>.<4|6>.<space>" or "learnt.<tenant
// hash>", in hexadecimal.
func FactKey(f detect.Fact) string {
	switch f.Kind {
	case detect.FactWorkNetwork:
		return "net." + strconv.FormatUint(f.Key, 16)
	case detect.FactTenantLearnt:
		return "learnt." + strconv.FormatUint(f.Tenant, 16)
	}
	fam := "4"
	if f.V6 {
		fam = "6"
	}
	return "space." + strconv.FormatUint(f.Tenant, 16) + "." + fam + "." + strconv.FormatUint(f.Key, 16)
}

// ParseFact reads a knowledge bucket entry back (FactKey, and the time in
// Unix seconds).
func ParseFact(key string, value []byte) (detect.Fact, error) {
	var f detect.Fact
	t, err := strconv.ParseInt(string(value), 10, 64)
	if err != nil || t <= 0 {
		return f, fmt.Errorf("knowledge %q: time %q is not positive Unix seconds", key, value)
	}
	f.Time = t
	parts := strings.Split(key, ".")
	hex := func(s string) (uint64, bool) {
		v, err := strconv.ParseUint(s, 16, 64)
		return v, err == nil && len(s) <= 16
	}
	var ok1, ok2 bool
	switch {
	case len(parts) == 2 && parts[0] == "net":
		f.Kind = detect.FactWorkNetwork
		f.Key, ok1 = hex(parts[1])
		ok2 = true
	case len(parts) == 2 && parts[0] == "learnt":
		f.Kind = detect.FactTenantLearnt
		f.Tenant, ok1 = hex(parts[1])
		ok2 = true
	case len(parts) == 4 && parts[0] == "space" && (parts[2] == "4" || parts[2] == "6"):
		f.Kind = detect.FactTenantSpace
		f.Tenant, ok1 = hex(parts[1])
		f.Key, ok2 = hex(parts[3])
		f.V6 = parts[2] == "6"
	}
	if !ok1 || !ok2 {
		return detect.Fact{}, fmt.Errorf("knowledge %q: not net.<hash>, space.<tenant>.<4|6>.<space> or learnt.<tenant>", key)
	}
	return f, nil
}
