package enforce

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// freshness tracks when the denylist view was last known current: either
// a watched entry arrived with nothing left pending behind it, or a probe
// of the bucket's last revision (taken at some instant) has been applied.
// Once a revoker's broadcast has been heard, the broadcast decides (see
// broadcast.go): mode and bcastAt are set by the broadcast listener.
type freshness struct {
	created time.Time
	at      atomic.Int64 // Unix nanoseconds; 0 = never

	// mode is modeBucket (at alone), modeBroadcast (bcastAt alone) or
	// modeCapped (the older of at and bcastAt).
	mode    atomic.Int32
	bcastAt atomic.Int64 // Unix nanoseconds; 0 = never
	// probed is the bucket's last revision at the latest probe.
	probed atomic.Uint64

	mu        sync.Mutex
	applied   uint64
	targetSeq uint64
	targetAt  time.Time
	hasTarget bool
}

func (f *freshness) markCurrent(t time.Time) {
	n := t.UnixNano()
	for {
		old := f.at.Load()
		if old >= n || f.at.CompareAndSwap(old, n) {
			return
		}
	}
}

// onApplied records that every revision up to rev is applied.
func (f *freshness) onApplied(rev uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = max(f.applied, rev)
	if f.hasTarget && f.applied >= f.targetSeq {
		f.markCurrent(f.targetAt)
		f.hasTarget = false
	}
}

// onProbe records that at instant at, the bucket's last revision was seq.
func (f *freshness) onProbe(seq uint64, at time.Time) {
	f.probed.Store(max(f.probed.Load(), seq))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied >= seq {
		f.markCurrent(at)
		f.hasTarget = false
		return
	}
	if !f.hasTarget { // an older pending target is met sooner; keep it
		f.targetSeq, f.targetAt, f.hasTarget = seq, at, true
	}
}

// appliedRev is the last denylist revision applied.
func (f *freshness) appliedRev() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// Modes of freshness.
const (
	modeBucket int32 = iota
	modeBroadcast
	modeCapped
)

// effective is the instant the view is known current as of (Unix
// nanoseconds, 0 = never).
func (f *freshness) effective() int64 {
	kv := f.at.Load()
	if kv == 0 {
		return 0 // the bucket was never synced
	}
	switch f.mode.Load() {
	case modeBroadcast:
		return f.bcastAt.Load()
	case modeCapped:
		return min(kv, f.bcastAt.Load())
	}
	return kv
}

func (f *freshness) currentAt() time.Time {
	n := f.effective()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (f *freshness) staleness(now time.Time) time.Duration {
	n := f.effective()
	if n == 0 {
		return now.Sub(f.created)
	}
	return time.Duration(now.UnixNano() - n)
}

func (f *freshness) staleAt(now time.Time, limit time.Duration) bool {
	n := f.effective()
	return n == 0 || now.UnixNano()-n > int64(limit)
}

// sink receives the entries of one watched bucket. During a replay
// (between begin and commit) entries go to a staging view that commit
// swaps in whole; afterwards they apply to the live view.
type sink interface {
	begin()
	put(key string, value []byte, rev uint64, live bool) error
	del(key string, rev uint64, live bool) error
	commit(rev uint64)
}

// Start loads the keys and denylist buckets, waits until both are
// replayed (or ctx ends), and keeps watching them until Close. Only keys
// endorsed by one of Options.TrustAnchors are taken from the keys bucket;
// Start fails without a trust anchor. With usage
// events on, it also starts the background publisher on js. The caller
// should Close the enforcer even when Start fails.
func (e *Enforcer) Start(ctx context.Context, js jetstream.JetStream) error {
	if !e.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	select {
	case <-e.stop:
		return ErrClosed
	default:
	}
	if len(e.opts.TrustAnchors) == 0 {
		return fmt.Errorf("start enforcer: %w: %w (configure the issuer's trust anchor, `--trust-anchor`)", ErrConfig, token.ErrNoAnchor)
	}
	keysKV, err := js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		return fmt.Errorf("start enforcer: open bucket %s: %w", events.BucketKeys, err)
	}
	denyKV, err := js.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		return fmt.Errorf("start enforcer: open bucket %s: %w", events.BucketDenylist, err)
	}
	if e.usage != nil {
		if err := e.usage.openSpool(); err != nil {
			return fmt.Errorf("start enforcer: %w", err)
		}
		e.publishing.Store(true)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.usage.run(js)
		}()
	}
	// Listen to the broadcast before replaying the bucket, so that no
	// change falls between the replay and the subscription.
	if err := e.listenBroadcast(ctx, js.Conn()); err != nil {
		return fmt.Errorf("start enforcer: %w", err)
	}
	keysReady, denyReady := make(chan struct{}), make(chan struct{})
	e.wg.Add(3)
	go e.watch(events.BucketKeys, keysKV, &keySink{e: e, known: map[string]struct{}{}}, keysReady, e.rewatchKeys, false)
	go e.watch(events.BucketDenylist, denyKV, &denySink{e: e}, denyReady, e.rewatchDeny, true)
	go e.probe(js)
	for _, ready := range []chan struct{}{keysReady, denyReady} {
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("start enforcer: initial sync: %w", ctx.Err())
		}
	}
	e.log.Info().Int("keys", e.keys.Len()).Int("deny_entries", e.dl.len()).
		Uint64("denylist_revision", e.dl.revision.Load()).Msg("enforcer synced")
	return nil
}

// watch follows one bucket until Close, re-watching (and replaying into a
// fresh view) whenever the watch ends or rewatch says it fell behind.
func (e *Enforcer) watch(bucket string, kv jetstream.KeyValue, s sink, ready chan struct{}, rewatch <-chan struct{}, isDeny bool) {
	defer e.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.stop
		cancel()
	}()
	log := e.log.With().Str("bucket", bucket).Logger()
	signalled := false
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-e.stop:
			return
		default:
		}
		t0 := time.Now()
		w, err := kv.WatchAll(ctx)
		if err != nil {
			log.Warn().Err(err).Dur("retry_in", backoff).Msg("watch bucket")
			select {
			case <-e.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.begin()
		live := false
		var maxRev uint64
		closed := false
		for !closed {
			select {
			case <-e.stop:
				_ = w.Stop()
				return
			case <-rewatch:
				// The server holding the watch's consumer went away (node
				// loss, restart) and the client would only notice after
				// its heartbeat checks; replaying from the bucket now is
				// seconds faster and never misses an entry.
				log.Warn().Msg("bucket watch fell behind the bucket, watching again")
				closed = true
			case ent, ok := <-w.Updates():
				if !ok {
					closed = true
					break
				}
				if ent == nil {
					s.commit(maxRev)
					live = true
					if isDeny {
						e.fresh.onApplied(maxRev)
						e.fresh.markCurrent(t0)
					}
					if !signalled {
						close(ready)
						signalled = true
					}
					continue
				}
				rev := ent.Revision()
				maxRev = max(maxRev, rev)
				var err error
				switch ent.Operation() {
				case jetstream.KeyValuePut:
					err = s.put(ent.Key(), ent.Value(), rev, live)
				case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
					err = s.del(ent.Key(), rev, live)
				}
				if err != nil {
					log.Error().Err(err).Uint64("revision", rev).Msg("apply bucket entry")
				}
				if live && isDeny {
					e.fresh.onApplied(rev)
					if ent.Delta() == 0 {
						e.fresh.markCurrent(time.Now())
					}
				}
			}
		}
		log.Warn().Msg("bucket watch ended, watching again")
		_ = w.Stop()
		select {
		case <-e.stop:
			return
		case <-time.After(backoff):
		}
	}
}

// keySink keeps the keyring in step with the keys bucket.
type keySink struct {
	e       *Enforcer
	known   map[string]struct{} // kids added from the bucket
	staging map[string]ed25519.PublicKey
}

func (k *keySink) begin() { k.staging = map[string]ed25519.PublicKey{} }

func (k *keySink) put(key string, value []byte, rev uint64, live bool) error {
	pub, err := k.e.opts.TrustAnchors.VerifyKeyRecord(key, value)
	if !live {
		if err == nil {
			k.staging[key] = pub
		}
		return err
	}
	k.e.keysRev.Store(max(k.e.keysRev.Load(), rev))
	if err != nil {
		// The bucket's record for this id no longer vouches for the key
		// it replaced: fail closed, as a replay would.
		if _, ok := k.known[key]; ok {
			delete(k.known, key)
			k.e.RetireKey(key)
		}
		return err
	}
	k.known[key] = struct{}{}
	if err := k.e.AddKey(key, pub); err != nil {
		return err
	}
	k.e.log.Info().Str("kid", key).Msg("key published")
	return nil
}

func (k *keySink) del(key string, rev uint64, live bool) error {
	if !live {
		delete(k.staging, key)
		return nil
	}
	k.e.keysRev.Store(max(k.e.keysRev.Load(), rev))
	delete(k.known, key)
	k.e.RetireKey(key)
	k.e.log.Info().Str("kid", key).Msg("key retired")
	return nil
}

func (k *keySink) commit(rev uint64) {
	for kid := range k.known {
		if _, ok := k.staging[kid]; !ok {
			k.e.RetireKey(kid)
			delete(k.known, kid)
		}
	}
	for kid, pub := range k.staging {
		if err := k.e.AddKey(kid, pub); err != nil {
			k.e.log.Error().Err(err).Str("kid", kid).Msg("add key")
			continue
		}
		k.known[kid] = struct{}{}
	}
	k.staging = nil
	k.e.keysRev.Store(max(k.e.keysRev.Load(), rev))
}

// denySink keeps the denylist in step with the denylist bucket.
type denySink struct {
	e       *Enforcer
	staging *denySet
}

func (d *denySink) begin() { d.staging = newDenySet() }

func (d *denySink) put(key string, value []byte, rev uint64, live bool) error {
	if !live {
		return d.staging.put(key, value, time.Now())
	}
	return d.e.dl.apply(key, value, false, rev, time.Now())
}

func (d *denySink) del(key string, rev uint64, live bool) error {
	if !live {
		return d.staging.remove(key)
	}
	return d.e.dl.apply(key, nil, true, rev, time.Now())
}

func (d *denySink) commit(rev uint64) {
	d.e.dl.replace(d.staging, rev)
	d.staging = nil
}

// probe asks JetStream for the denylist's last revision every
// ProbeInterval, so that a quiet denylist is still known current, and warns
// when the view grows older than MaxStaleness.
func (e *Enforcer) probe(js jetstream.JetStream) {
	defer e.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.stop
		cancel()
	}()
	stream := "KV_" + events.BucketDenylist
	subject := "$KV." + events.BucketDenylist + ".>"
	tick := time.NewTicker(e.opts.ProbeInterval)
	defer tick.Stop()
	var failing, stale bool
	var st jetstream.Stream
	var err error
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		at := time.Now()
		pctx, pcancel := context.WithTimeout(ctx, max(e.opts.ProbeInterval, time.Second))
		if st == nil {
			st, err = js.Stream(pctx, stream)
			if err != nil {
				st = nil
				err = fmt.Errorf("open stream %s: %w", stream, err)
			}
		}
		var seq uint64
		if st != nil {
			seq, err = lastSeq(pctx, st, subject)
		}
		pcancel()
		switch {
		case err != nil && !failing:
			failing = true
			e.log.Warn().Err(err).Msg("denylist probe failed")
		case err == nil:
			if failing {
				failing = false
				e.log.Info().Msg("denylist probe recovered")
			}
			e.fresh.onProbe(seq, at)
			if seq > e.fresh.appliedRev() && e.stillBehind(seq) {
				for _, ch := range []chan struct{}{e.rewatchDeny, e.rewatchKeys} {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
		if e.opts.MaxStaleness > 0 {
			age := e.fresh.staleness(time.Now())
			switch {
			case age > e.opts.MaxStaleness && !stale:
				stale = true
				e.log.Warn().Dur("staleness", age).Bool("fail_closed", e.opts.FailClosed).Msg("denylist view is stale")
			case age <= e.opts.MaxStaleness && stale:
				stale = false
				e.log.Info().Msg("denylist view is current again")
			}
		}
	}
}

// behindGrace is how long a revision the probe saw may stay undelivered by
// a healthy watch (normally it arrives within milliseconds).
const behindGrace = 200 * time.Millisecond

// stillBehind waits behindGrace and reports whether the watch has still not
// delivered revision seq: then its consumer is gone (node loss, server
// restart) and the watch should start over.
func (e *Enforcer) stillBehind(seq uint64) bool {
	select {
	case <-e.stop:
		return false
	case <-time.After(behindGrace):
	}
	return e.fresh.appliedRev() < seq
}

// lastSeq is the sequence of the newest message on subject in s (0 when
// there is none).
func lastSeq(ctx context.Context, s jetstream.Stream, subject string) (uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last message of %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// Flush publishes every usage event queued so far and waits for their
// acknowledgements (or ctx).
func (e *Enforcer) Flush(ctx context.Context) error {
	if e.usage == nil {
		return nil
	}
	if !e.publishing.Load() {
		return errors.New("flush usage: enforcer not started")
	}
	return e.usage.flushWait(ctx)
}

// Close stops the watches, publishes the queued usage events (for at most
// a few seconds) and releases the enforcer. It is safe to call twice.
func (e *Enforcer) Close() error {
	e.closeOnce.Do(func() {
		close(e.stop)
		if e.usage != nil {
			close(e.usage.quit)
		}
		e.wg.Wait()
		if e.usage != nil {
			e.usage.shutdown()
		}
	})
	return nil
}
