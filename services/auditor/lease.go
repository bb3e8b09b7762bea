package auditor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Leases.
//
// In lease mode the auditor instances of a deployment share the USAGE
// partitions through the KV bucket events.BucketAuditorLeases, whose
// entries expire TTL after their last write (the bucket's MaxAge; its
// limit markers make an expiry visible to watchers like a delete):
//
//   - members.<instance> is each live instance's heartbeat;
//   - p.<n> names the instance that owns partition n.
//
// Every instance targets ceil(P / live members) partitions. It acquires a
// free partition with Create (which succeeds only when the key has no
// live value), renews each lease with Update on the revision it last
// wrote every TTL/3, and when it holds more than its target it tells its
// runners first (the set sent on Run's channel shrinks) and deletes the
// lease once the runner stopped (Releaser) or after HandoffTimeout. The
// KV's compare-and-set makes one owner per revision: a new owner's Create
// follows a delete or an expiry of the old owner's lease. Valid turns
// false as soon as a renewal fails or less than TTL/3 of the lease's time
// is left on this instance's clock (counted from before the renewal was
// sent, so the server never expires a lease this instance still thinks
// valid), so an instance cut off from NATS stops writing before another
// one can take over.

// Lease defaults and limits.
const (
	// DefaultLeaseTTL is how long a lease lives without renewal.
	DefaultLeaseTTL = 10 * time.Second
	// MinLeaseTTL is the shortest lease TTL (the server's marker TTLs
	// count in seconds).
	MinLeaseTTL = time.Second
	// MaxPartitions is the most USAGE partitions a deployment may have.
	MaxPartitions = 64
)

// Lease bucket keys.
const (
	leaseMemberPrefix    = "members."
	leasePartitionPrefix = "p."
)

// LeaseKey is the key of partition p's lease in events.BucketAuditorLeases.
func LeaseKey(p int) string { return leasePartitionPrefix + strconv.Itoa(p) }

// MemberKey is the heartbeat key of instance in events.BucketAuditorLeases.
func MemberKey(instance string) string { return leaseMemberPrefix + instance }

// ErrLeaseBucket is returned when the lease bucket exists with a
// configuration that does not fit the lease options.
var ErrLeaseBucket = errors.New("auditor lease bucket")

// LeaseOptions configure a LeaseOwner.
type LeaseOptions struct {
	// JS reaches the lease bucket (created when missing).
	JS jetstream.JetStream
	// Instance names this auditor instance among the others: unique per
	// process (default DefaultInstance()), a valid subject token.
	Instance string
	// TTL is a lease's life without renewal (default DefaultLeaseTTL, at
	// least MinLeaseTTL); every instance must use the bucket's.
	TTL time.Duration
	// Replicas of the bucket when it is created (default 1).
	Replicas int
	// HandoffTimeout bounds how long a partition given up waits for
	// Released before its lease is deleted anyway (default 3×TTL).
	HandoffTimeout time.Duration
	// Log receives ownership changes.
	Log zerolog.Logger
}

// DefaultInstance is a process-unique instance name: the host name, the
// process id and a random suffix.
func DefaultInstance() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "auditor"
	}
	var b strings.Builder
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	name := b.String()
	if len(name) > 32 {
		name = name[:32]
	}
	return fmt.Sprintf("%s-%d-%04x", name, os.Getpid(), rand.Uint32()&0xffff)
}

func (o LeaseOptions) withDefaults() LeaseOptions {
	if o.Instance == "" {
		o.Instance = DefaultInstance()
	}
	if o.TTL == 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.HandoffTimeout == 0 {
		o.HandoffTimeout = 3 * o.TTL
	}
	return o
}

func (o LeaseOptions) validate() error {
	switch {
	case o.JS == nil:
		return errors.New("lease owner: no JetStream")
	case o.TTL < MinLeaseTTL:
		return fmt.Errorf("lease owner: TTL %v: want at least %v", o.TTL, MinLeaseTTL)
	case o.TTL%time.Second != 0:
		return fmt.Errorf("lease owner: TTL %v: want whole seconds", o.TTL)
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("lease owner: replicas %d: want 1 to 5", o.Replicas)
	case o.HandoffTimeout <= 0:
		return fmt.Errorf("lease owner: handoff timeout %v: want a positive duration", o.HandoffTimeout)
	}
	if err := events.ValidateName(o.Instance); err != nil {
		return fmt.Errorf("lease owner: instance %q: %w", o.Instance, err)
	}
	return nil
}

// LeaseBucketConfig is the lease bucket's configuration for a TTL and a
// replica count.
func LeaseBucketConfig(ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         events.BucketAuditorLeases,
		Description:    "Cordon auditor partition leases and instance heartbeats",
		History:        1,
		TTL:            ttl,
		LimitMarkerTTL: ttl,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
	}
}

// openTimeout bounds opening (or creating) the lease and state buckets:
// requests lost while a cluster forms are sent again meanwhile.
const openTimeout = time.Minute

// openKV opens the KV bucket cfg names, creating it with cfg when missing
// (another instance may create it at the same moment). Callers retry it.
func openKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	return kv, err
}

// OpenLeaseBucket opens the lease bucket, creating it when missing. An
// existing bucket must have the same TTL and keep limit markers.
func OpenLeaseBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	var (
		kv jetstream.KeyValue
		st jetstream.KeyValueStatus
	)
	rctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	err := natsconn.Retry(rctx, zerolog.Nop(), "bucket "+events.BucketAuditorLeases, func(ctx context.Context) (err error) {
		if kv, err = openKV(ctx, js, LeaseBucketConfig(ttl, replicas)); err != nil {
			return err
		}
		// Instances starting together: the bucket another one created a
		// moment ago may not be known to every server of a cluster yet.
		st, err = kv.Status(ctx)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("status: %w: %w", natsconn.ErrNotVisibleYet, err)
		}
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %s: %w", events.BucketAuditorLeases, err)
	}
	if st.TTL() != ttl {
		return nil, fmt.Errorf("%w %s: its TTL is %v, this auditor's lease TTL %v: every instance must use the bucket's", ErrLeaseBucket, events.BucketAuditorLeases, st.TTL(), ttl)
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok && s.LimitMarkerTTL() == 0 {
		return nil, fmt.Errorf("%w %s: it keeps no limit markers, so an expired lease would go unseen", ErrLeaseBucket, events.BucketAuditorLeases)
	}
	return kv, nil
}

// LeaseOwner is the Owner of lease mode: it shares the partitions with
// the other instances through the lease bucket.
type LeaseOwner struct {
	o LeaseOptions

	mu     sync.Mutex
	leases map[int]*lease
	// released are partitions the pipeline stopped (Released).
	released []int
	wake     chan struct{}

	acquired, lost, handedOff atomic.Uint64
}

var (
	_ Owner    = (*LeaseOwner)(nil)
	_ Releaser = (*LeaseOwner)(nil)
	_ Fence    = (*LeaseOwner)(nil)
)

// lease is a partition this instance holds.
type lease struct {
	rev        uint64    // the revision last written
	epoch      uint64    // the revision of the Create: grows with every owner
	validUntil time.Time // on this instance's clock
	leaving    time.Time // when it was given up (zero: kept)
}

// NewLeaseOwner returns a lease owner; Run starts it.
func NewLeaseOwner(o LeaseOptions) (*LeaseOwner, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &LeaseOwner{o: o, leases: map[int]*lease{}, wake: make(chan struct{}, 1)}, nil
}

// Instance is this owner's instance name.
func (l *LeaseOwner) Instance() string { return l.o.Instance }

// TTL is the lease TTL.
func (l *LeaseOwner) TTL() time.Duration { return l.o.TTL }

// Valid implements Owner: p's lease is held, its last renewal succeeded
// and more than TTL/3 of it is left.
func (l *LeaseOwner) Valid(p int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.leases[p]
	return ls != nil && time.Now().Before(ls.validUntil)
}

// Epoch returns the revision at which this instance acquired p: every new
// owner of p has a larger one, so state written under a smaller epoch is a
// former owner's. ok is false when p is not held.
func (l *LeaseOwner) Epoch(p int) (epoch uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ls := l.leases[p]; ls != nil {
		return ls.epoch, true
	}
	return 0, false
}

// Released implements Releaser.
func (l *LeaseOwner) Released(p int) {
	l.mu.Lock()
	l.released = append(l.released, p)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// LeaseStats are a lease owner's counters.
type LeaseStats struct {
	// Acquired counts leases created, Lost those whose renewal failed,
	// HandedOff those given up to rebalance or at the end.
	Acquired, Lost, HandedOff uint64
}

// Stats returns the owner's counters.
func (l *LeaseOwner) Stats() LeaseStats {
	return LeaseStats{Acquired: l.acquired.Load(), Lost: l.lost.Load(), HandedOff: l.handedOff.Load()}
}

// leaseRun is the state of one Run.
type leaseRun struct {
	*LeaseOwner
	kv         jetstream.KeyValue
	partitions int
	value      []byte
	memberRev  uint64
	// view is the bucket as the watch shows it: key → value.
	view  map[string]string
	ready bool
	// pending is the owned set not yet sent; dirty says it changed.
	pending []int
	dirty   bool
}

// Run implements Owner: it joins the members, takes its share of the
// partitions and keeps it current until ctx ends; it then gives every
// lease up (Valid turns false first) and leaves.
func (l *LeaseOwner) Run(ctx context.Context, partitions int, owned chan<- []int) error {
	if partitions < 1 || partitions > MaxPartitions {
		return fmt.Errorf("lease owner: %d partitions: want 1 to %d", partitions, MaxPartitions)
	}
	kv, err := OpenLeaseBucket(ctx, l.o.JS, l.o.TTL, l.o.Replicas)
	if err != nil {
		return err
	}
	r := &leaseRun{LeaseOwner: l, kv: kv, partitions: partitions, value: []byte(l.o.Instance), view: map[string]string{}}
	defer r.leave()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch lease bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	// The first set is sent even when empty, as Owner promises.
	r.dirty = true
	tick := time.NewTicker(l.o.TTL / 3)
	defer tick.Stop()
	for {
		var send chan<- []int
		if r.dirty {
			send = owned
		}
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("lease bucket watch ended")
			}
			if e == nil {
				r.ready = true
				r.step(ctx, true)
				continue
			}
			if r.apply(e) && r.ready {
				r.step(ctx, false)
			}
		case <-tick.C:
			r.resync(ctx)
			r.step(ctx, true)
		case <-l.wake:
			r.step(ctx, false)
		case send <- r.pending:
			r.dirty = false
		}
	}
}

// apply records a watched entry; it reports whether the partition or
// member set changed in a way that may free or need partitions.
func (r *leaseRun) apply(e jetstream.KeyValueEntry) bool {
	k := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		_, had := r.view[k]
		delete(r.view, k)
		return had
	}
	old, had := r.view[k]
	r.view[k] = string(e.Value())
	return !had || old != string(e.Value())
}

// resync replaces the view with the keys the bucket holds: a watch that
// missed an expiry (its consumer recreated across a leader change) would
// otherwise keep a dead member or a free partition in the view forever.
func (r *leaseRun) resync(ctx context.Context) {
	if !r.ready {
		return
	}
	cctx, cancel := r.opCtx(ctx)
	defer cancel()
	lister, err := r.kv.ListKeys(cctx)
	if err != nil {
		return
	}
	defer func() { _ = lister.Stop() }()
	view := map[string]string{}
	for k := range lister.Keys() {
		view[k] = r.view[k]
	}
	if cctx.Err() != nil {
		return // incomplete
	}
	r.view = view
}

// step hands off and acquires; on the renewal schedule (renew) it first
// heartbeats and renews every lease.
func (r *leaseRun) step(ctx context.Context, renew bool) {
	if ctx.Err() != nil {
		return
	}
	if renew {
		r.heartbeat(ctx)
		r.renew(ctx)
	}
	r.handOff(ctx)
	if r.ready {
		r.balance(ctx)
	}
}

func (r *leaseRun) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.o.TTL/3)
}

// heartbeat writes members.<instance>.
func (r *leaseRun) heartbeat(ctx context.Context) {
	cctx, cancel := r.opCtx(ctx)
	defer cancel()
	key := MemberKey(r.o.Instance)
	var err error
	if r.memberRev != 0 {
		var rev uint64
		if rev, err = r.kv.Update(cctx, key, r.value, r.memberRev); err == nil {
			r.memberRev = rev
			return
		}
	}
	rev, cerr := r.kv.Create(cctx, key, r.value)
	if cerr != nil {
		// A write whose reply was lost (a timeout, or a server that
		// applied it while the cluster settled) left the heartbeat at a
		// later revision than memberRev: carry on from there instead of
		// letting it expire, which would shrink every instance's target.
		if rev, ok := r.ownWrite(ctx, key, r.memberRev); ok {
			r.memberRev = rev
			return
		}
		if ctx.Err() == nil {
			r.o.Log.Warn().Err(errors.Join(err, cerr)).Str("instance", r.o.Instance).Msg("lease heartbeat failed")
		}
		r.memberRev = 0
		return
	}
	r.memberRev = rev
	r.view[key] = r.o.Instance
}

// renew updates every held lease on the revision it last wrote, all at
// once, so that a slow server delays them by one round trip, not one per
// lease.
func (r *leaseRun) renew(ctx context.Context) {
	// Those being given up too: their runner may still be writing.
	held := r.held(true)
	type result struct {
		p         int
		rev, nrev uint64
		sent      time.Time
		err       error
	}
	results := make([]result, len(held))
	var wg sync.WaitGroup
	for i, p := range held {
		r.mu.Lock()
		results[i] = result{p: p, rev: r.leases[p].rev}
		r.mu.Unlock()
		wg.Add(1)
		go func(res *result) {
			defer wg.Done()
			cctx, cancel := r.opCtx(ctx)
			defer cancel()
			res.sent = time.Now()
			res.nrev, res.err = r.kv.Update(cctx, LeaseKey(res.p), r.value, res.rev)
			if lostReply(res.err) {
				// The renewal may have been applied: if so the lease is
				// still this instance's, at a later revision.
				if rev, ok := r.ownWrite(ctx, LeaseKey(res.p), res.rev); ok {
					res.nrev, res.err = rev, nil
				}
			}
		}(&results[i])
	}
	wg.Wait()
	for _, res := range results {
		if res.err != nil {
			if ctx.Err() != nil {
				return
			}
			r.lost.Add(1)
			r.o.Log.Warn().Err(res.err).Int("partition", res.p).Str("instance", r.o.Instance).Msg("lease renewal failed: partition lost")
			r.drop(ctx, res.p, res.rev)
			continue
		}
		r.mu.Lock()
		if ls := r.leases[res.p]; ls != nil {
			ls.rev = res.nrev
			ls.validUntil = res.sent.Add(r.o.TTL - r.o.TTL/3)
		}
		r.mu.Unlock()
	}
}

// handOff deletes the leases given up whose runner stopped (or waited
// longer than HandoffTimeout).
func (r *leaseRun) handOff(ctx context.Context) {
	r.mu.Lock()
	released := r.released
	r.released = nil
	var due []int
	now := time.Now()
	for p, ls := range r.leases {
		if !ls.leaving.IsZero() && (slices.Contains(released, p) || now.Sub(ls.leaving) >= r.o.HandoffTimeout) {
			due = append(due, p)
		}
	}
	r.mu.Unlock()
	slices.Sort(due)
	for _, p := range due {
		r.mu.Lock()
		rev := r.leases[p].rev
		r.mu.Unlock()
		r.handedOff.Add(1)
		r.o.Log.Info().Int("partition", p).Str("instance", r.o.Instance).Msg("lease handed off")
		r.drop(ctx, p, rev)
	}
}

// balance gives up partitions beyond the target and acquires free ones
// below it.
func (r *leaseRun) balance(ctx context.Context) {
	members := 0
	for k := range r.view {
		if strings.HasPrefix(k, leaseMemberPrefix) {
			members++
		}
	}
	if _, self := r.view[MemberKey(r.o.Instance)]; !self {
		members++
	}
	target := (r.partitions + members - 1) / members
	kept := r.held(false)
	switch {
	case len(kept) > target:
		// Give up the highest: they go to the instances that joined.
		give := kept[target:]
		r.mu.Lock()
		now := time.Now()
		for _, p := range give {
			r.leases[p].leaving = now
		}
		r.mu.Unlock()
		r.o.Log.Info().Ints("partitions", give).Int("target", target).Int("members", members).Str("instance", r.o.Instance).Msg("giving partitions up")
		r.changed()
	case len(kept) < target:
		n := len(kept)
		for p := range r.partitions {
			if n >= target {
				break
			}
			if _, taken := r.view[LeaseKey(p)]; taken || r.holds(p) {
				continue
			}
			sent := time.Now()
			cctx, cancel := r.opCtx(ctx)
			rev, err := r.kv.Create(cctx, LeaseKey(p), r.value)
			cancel()
			if lostReply(err) {
				// The create may have been applied: then p is this
				// instance's, or it would sit unowned until it expires.
				if own, ok := r.ownWrite(ctx, LeaseKey(p), 0); ok {
					rev, err = own, nil
				}
			}
			if err != nil {
				if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
					r.o.Log.Warn().Err(err).Int("partition", p).Str("instance", r.o.Instance).Msg("lease acquisition failed")
				}
				continue
			}
			r.mu.Lock()
			r.leases[p] = &lease{rev: rev, epoch: rev, validUntil: sent.Add(r.o.TTL - r.o.TTL/3)}
			r.mu.Unlock()
			r.view[LeaseKey(p)] = r.o.Instance
			r.acquired.Add(1)
			n++
			r.o.Log.Info().Int("partition", p).Uint64("epoch", rev).Str("instance", r.o.Instance).Msg("lease acquired")
			r.changed()
		}
	}
}

// lostReply reports whether err leaves it unknown if a write was applied:
// the request or its reply was lost, or timed out.
func lostReply(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

// ownWrite reads key and reports its revision when it holds this
// instance's value at a revision after after: a write of this instance
// whose reply was lost. Only this instance writes its own name, so
// nothing else can have put it there; the caller's compare-and-set
// continues from that revision.
func (r *leaseRun) ownWrite(ctx context.Context, key string, after uint64) (uint64, bool) {
	cctx, cancel := r.opCtx(ctx)
	defer cancel()
	e, err := r.kv.Get(cctx, key)
	if err != nil || e.Operation() != jetstream.KeyValuePut || string(e.Value()) != string(r.value) || e.Revision() <= after {
		return 0, false
	}
	return e.Revision(), true
}

// held returns the held partitions, sorted: those kept, or with leaving
// also those being given up.
func (r *leaseRun) held(leaving bool) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, 0, len(r.leases))
	for p, ls := range r.leases {
		if leaving || ls.leaving.IsZero() {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func (r *leaseRun) holds(p int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases[p] != nil
}

// drop forgets p's lease (Valid turns false at once) and deletes it if it
// is still at rev, so another instance may take it without waiting for it
// to expire.
func (r *leaseRun) drop(ctx context.Context, p int, rev uint64) {
	r.mu.Lock()
	ls := r.leases[p]
	delete(r.leases, p)
	r.mu.Unlock()
	if ls != nil && ls.leaving.IsZero() {
		r.changed()
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.TTL/3)
	defer cancel()
	if err := r.kv.Delete(cctx, LeaseKey(p), jetstream.LastRevision(rev)); err == nil {
		delete(r.view, LeaseKey(p))
	}
}

// changed queues the current kept set for Run's channel.
func (r *leaseRun) changed() {
	r.pending = r.held(false)
	r.dirty = true
}

// leave gives every lease up and deletes the heartbeat, within one TTL
// however many leases it holds.
func (r *leaseRun) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.TTL)
	defer cancel()
	for _, p := range r.held(true) {
		r.mu.Lock()
		rev := r.leases[p].rev
		r.mu.Unlock()
		r.handedOff.Add(1)
		r.drop(ctx, p, rev)
	}
	if r.memberRev != 0 {
		cctx, cancel := r.opCtx(ctx)
		defer cancel()
		_ = r.kv.Delete(cctx, MemberKey(r.o.Instance), jetstream.LastRevision(r.memberRev))
	}
	r.o.Log.Info().Str("instance", r.o.Instance).Msg("left the auditor leases")
}
