package enforce

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Request is what Check decides on.
type Request struct {
	// Token is the bearer token string; empty means none was presented.
	Token string
	// Method and Route are the HTTP method and the matched route pattern
	// ("/invoices/{id}"); they are reported in the usage event.
	Method string
	Route  string
	// Resource is the concrete resource the request named, reported in the
	// usage event (events.UsageDecided.Resource): the values of the
	// route's path parameters in pattern order joined by "/" ("42" for
	// /invoices/{id} on /invoices/42). The middleware sets it; a caller of
	// Check may. It is cut to events.MaxResourceLen bytes.
	Resource string
	// Scope is the scope the route requires. An empty scope is never
	// covered: every route must name one.
	Scope string
	// RemoteAddr is the client address.
	RemoteAddr netip.Addr
	// UserAgent is reported in the usage event.
	UserAgent string
	// Client is the caller's client family and major version, reported in
	// the usage event. Empty, the usage publisher derives it from
	// UserAgent with events.NormalizeClient (off the request path); a
	// caller of Check that knows better may set it. It is cut to
	// events.MaxClientLen bytes.
	Client string
	// Device is the lowercase hex SHA-256 thumbprint of the client
	// certificate (token.Thumbprint), empty when none was presented. It is
	// checked against the token's device binding and reported in the usage
	// event (a value of another form is not reported).
	Device string
	// Time is when the request is used; zero means now.
	Time time.Time
}

// Decision is the outcome of Check. The identity fields are filled when the
// token's signature verified (KeyID also for an unknown key or a bad
// signature); they are never the token string.
type Decision struct {
	Allow   bool
	Reason  Reason
	TokenID string
	Tenant  string
	Holder  string
	KeyID   string
}

// cachedToken is a verified token and the key that verified it, stamped
// with the keyring generation at which that key was last seen current.
// aud caches the token's audience check for this enforcer's service
// (Options.Service never changes), which a decision would otherwise read
// from the token's audience list each time.
type cachedToken struct {
	tok *token.Token
	key ed25519.PublicKey
	gen atomic.Uint64
	aud bool
}

// rejected is a negative cache entry.
type rejected struct {
	reason Reason
	kid    string
	gen    uint64
}

// negativeMaxLen bounds the token strings kept by the negative cache.
const negativeMaxLen = 2048

// Enforcer decides on requests locally. It is safe for concurrent use.
type Enforcer struct {
	opts Options
	log  zerolog.Logger
	deny zerolog.Logger // sampled, for per-request deny logs

	keys   *token.Keyring
	keyGen atomic.Uint64 // bumped after every keyring change
	keysMu sync.Mutex    // serialises keyring changes with their generation

	cache *clockCache[*cachedToken]
	neg   *clockCache[rejected]
	thr   *throttle // nil when throttling is off
	dl    *denylist
	fresh freshness
	bcast atomic.Pointer[broadcast] // nil until Start

	routes *compiledRoutes
	usage  *publisher

	decisions   atomic.Uint64
	denied      atomic.Uint64
	quarantined atomic.Uint64 // denials with ReasonQuarantined
	steppedUp   atomic.Uint64 // denials with ReasonStepUpRequired
	canaries    canaryCounters
	cacheMisses atomic.Uint64
	keysRev     atomic.Uint64

	startOnce sync.Once
	started   atomic.Bool
	// publishing is set once the usage publisher runs (Flush needs it).
	publishing atomic.Bool
	closeOnce  sync.Once
	stop       chan struct{}
	// rewatch asks both bucket watches to start over (see probe).
	rewatchKeys, rewatchDeny chan struct{}
	wg                       sync.WaitGroup
}

// New returns an enforcer with an empty keyring and denylist. Add keys
// with Start (watching the keys bucket) or AddKey.
func New(o Options) (*Enforcer, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Enforcer{
		opts:  o,
		log:   o.Log.With().Str("enforcer", o.ID).Str("service", o.Service).Logger(),
		keys:  token.NewKeyring(),
		cache: newClockCache[*cachedToken](o.CacheSize),
		neg:   newClockCache[rejected](o.NegativeCacheSize),
		dl:    newDenylist(),
		stop:  make(chan struct{}),

		rewatchKeys: make(chan struct{}, 1),
		rewatchDeny: make(chan struct{}, 1),
	}
	e.fresh.created = time.Now()
	if o.ThrottleBurst > 0 {
		e.thr = newThrottle(o.ThrottleBurst, o.ThrottleWindow, o.ThrottleCooldown, o.ThrottleSources)
	}
	e.deny = e.log.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second})
	if o.Routes != nil {
		if e.routes, err = compileRoutes(o.Routes); err != nil {
			return nil, err
		}
	}
	if !o.DisableUsage {
		e.usage = newPublisher(e, o.UsageBuffer, o.UsageBatch, o.UsageLinger)
	}
	return e, nil
}

// Options returns the enforcer's options with defaults filled in.
func (e *Enforcer) Options() Options { return e.opts }

// AddKey makes pub verify tokens signed under kid. Start keeps the keyring
// in step with the keys bucket; AddKey is for embedding without NATS.
func (e *Enforcer) AddKey(kid string, pub ed25519.PublicKey) error {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	if err := e.keys.Add(kid, pub); err != nil {
		return err
	}
	e.keyGen.Add(1)
	return nil
}

// RetireKey removes kid: tokens it signed are denied with
// ReasonUnknownKey, including tokens already in the cache.
func (e *Enforcer) RetireKey(kid string) {
	e.keysMu.Lock()
	defer e.keysMu.Unlock()
	e.keys.Remove(kid)
	e.keyGen.Add(1)
}

// Check decides on one request and reports the decision as a usage event.
// It makes no network call and never blocks on publishing.
func (e *Enforcer) Check(req *Request) Decision {
	start := time.Now()
	now := req.Time
	if now.IsZero() {
		now = start
	}
	d := e.decide(req, now, start)
	e.record(req, &d, now, start)
	return d
}

// checkUnrouted reports a request the middleware denies before matching a
// route (ReasonBadPath) or that matched none (ReasonNoRoute): it is denied,
// but a token that verifies still names who sent it.
func (e *Enforcer) checkUnrouted(req *Request, reason Reason) Decision {
	start := time.Now()
	now := req.Time
	if now.IsZero() {
		now = start
	}
	d := Decision{Reason: reason}
	if req.Token != "" {
		if c, r, kid := e.verify(req.Token, req.RemoteAddr, start); c != nil && r == "" {
			t := c.tok
			d.TokenID, d.Tenant, d.Holder, d.KeyID = t.ID, t.Tenant, t.Holder, t.KeyID
		} else {
			d.KeyID = kid
		}
	}
	e.record(req, &d, now, start)
	return d
}

func (e *Enforcer) record(req *Request, d *Decision, now, start time.Time) {
	e.decisions.Add(1)
	if !d.Allow {
		e.denied.Add(1)
		switch d.Reason {
		case ReasonQuarantined:
			e.quarantined.Add(1)
		case ReasonStepUpRequired:
			e.steppedUp.Add(1)
		}
		e.deny.Debug().Str("reason", string(d.Reason)).Str("token_id", d.TokenID).
			Str("route", req.Route).Str("method", req.Method).Msg("request denied")
	}
	if e.usage != nil {
		e.usage.enqueue(req, d, now, time.Since(start))
	}
}

// decide runs the checks in the documented order. now is the request's
// time, wall the enforcer's clock (for the denylist's staleness).
func (e *Enforcer) decide(req *Request, now, wall time.Time) Decision {
	if req.Token == "" {
		return Decision{Reason: ReasonMissing}
	}
	c, reason, kid := e.verify(req.Token, req.RemoteAddr, wall)
	if c == nil {
		return Decision{Reason: reason, KeyID: kid}
	}
	t := c.tok
	d := Decision{TokenID: t.ID, Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID}
	if reason != "" { // a cached token whose key was retired
		d.Reason = reason
		return d
	}
	sec := now.Unix()
	leeway := int64(e.opts.Leeway / time.Second)
	switch {
	case sec+leeway < t.NotBefore:
		d.Reason = ReasonNotYetValid
	case sec-leeway >= t.Expiry:
		d.Reason = ReasonExpired
	case e.opts.FailClosed && e.opts.MaxStaleness > 0 && e.fresh.staleAt(wall, e.opts.MaxStaleness):
		d.Reason = ReasonDenylistStale
	case e.dl.revoked(t):
		d.Reason = ReasonRevoked
		if h, ok := e.dl.canary(t); ok {
			e.tripCanary(req, t, h, now)
		}
	case !c.aud: // t.HasAudience(e.opts.Service)
		d.Reason = ReasonWrongAudience
	case req.Scope == "" || !t.HasScope(req.Scope):
		d.Reason = ReasonScopeMissing
	case !t.AllowsAddr(req.RemoteAddr):
		d.Reason = ReasonSourceNetwork
	case t.Environment != "" && t.Environment != e.opts.Environment:
		d.Reason = ReasonEnvironment
	case !t.AllowsTime(now):
		d.Reason = ReasonTimeWindow
	case !t.AllowsDevice(req.Device):
		d.Reason = ReasonDeviceBinding
	default:
		// The graduated response's restrictions (ReasonOK at once while
		// no token is restricted).
		d.Reason = e.dl.restricted(t, req, now)
		d.Allow = d.Reason == ReasonOK
	}
	return d
}

// verify returns the verified token for s, presented by src at wall. A
// non-nil token with a reason is a cached token whose signing key has been
// retired since. A nil token comes with the reason and, when readable and
// well formed, the key id its header claims. A token not verified before
// is refused with ReasonThrottled, unverified, while src is throttled, and
// a failed verification counts against src.
func (e *Enforcer) verify(s string, src netip.Addr, wall time.Time) (*cachedToken, Reason, string) {
	gen := e.keyGen.Load()
	if c, ok := e.cache.get(s); ok {
		if c.gen.Load() == gen {
			return c, "", ""
		}
		key, ok := e.keys.Key(c.tok.KeyID)
		if !ok {
			return c, ReasonUnknownKey, ""
		}
		if bytes.Equal(key, c.key) {
			c.gen.Store(gen)
			return c, "", ""
		}
		// The key id now names another key: verify again below.
	} else if e.thr.blocked(src, wall) {
		return nil, ReasonThrottled, ""
	} else if n, ok := e.neg.get(s); ok && n.gen == gen {
		return nil, n.reason, n.kid
	}
	e.cacheMisses.Add(1)
	t, key, reason, kid := e.verifySlow(s)
	if t == nil {
		e.thr.fail(src, wall)
		if len(s) <= negativeMaxLen {
			e.neg.put(strings.Clone(s), rejected{reason: reason, kid: kid, gen: gen})
		}
		return nil, reason, kid
	}
	c := &cachedToken{tok: t, key: key, aud: t.HasAudience(e.opts.Service)}
	c.gen.Store(gen)
	e.cache.put(strings.Clone(s), c)
	return c, "", ""
}

func (e *Enforcer) verifySlow(s string) (*token.Token, ed25519.PublicKey, Reason, string) {
	u, err := token.Parse(s)
	if err != nil {
		return nil, nil, ReasonMalformed, ""
	}
	kid := ""
	if events.ValidateName(u.KeyID) == nil {
		kid = u.KeyID
	}
	key, ok := e.keys.Key(u.KeyID)
	if !ok {
		return nil, nil, ReasonUnknownKey, kid
	}
	t, err := u.Verify(key)
	if err != nil {
		if errors.Is(err, token.ErrBadSignature) {
			return nil, nil, ReasonBadSignature, kid
		}
		return nil, nil, ReasonMalformed, kid
	}
	return t, key, "", ""
}

// Stats is a snapshot of the enforcer's counters and bounds.
type Stats struct {
	// Decisions and Denied count Check calls and denies since New.
	Decisions uint64
	Denied    uint64
	// CacheEntries of CacheCapacity verified tokens are cached; CacheMisses
	// counts decisions that had to parse and verify.
	CacheEntries  int
	CacheCapacity int
	CacheMisses   uint64
	// NegativeEntries of NegativeCapacity rejected token strings are cached.
	NegativeEntries  int
	NegativeCapacity int
	// Throttled counts decisions refused with ReasonThrottled (without
	// verification); ThrottleSources of ThrottleCapacity sources have
	// recent failed verifications on record; ThrottleEvictions records were
	// dropped to stay within the bound.
	Throttled         uint64
	ThrottleSources   int
	ThrottleCapacity  int
	ThrottleEvictions uint64
	// Aggregated counts the denials folded into per-source usage events;
	// AggregateEntries of AggregateCapacity entries wait for the end of the
	// interval; AggregateOverflow counts the denials folded into the "other"
	// entries (source 0.0.0.0) because the table was full.
	Aggregated        uint64
	AggregateEntries  int
	AggregateCapacity int
	AggregateOverflow uint64
	// Keys is the number of verification keys; KeysRevision the last
	// applied revision of the keys bucket.
	Keys         int
	KeysRevision uint64
	// DenyEntries is the number of denylist entries; DenylistRevision the
	// last applied revision (KV sequence) of the denylist bucket, and
	// DenylistCurrentAt when the view was last known to be current.
	DenyEntries       int
	DenylistRevision  uint64
	DenylistCurrentAt time.Time
	// The graduated response: Quarantined tokens are restricted to
	// reads from their known networks (step narrow) and SteppedUp tokens
	// to their bound device (step step_up), counting the restrictions in
	// force now (those that ended wait in DenyEntries for their delete).
	// QuarantineDenials and StepUpDenials count the decisions they denied
	// (ReasonQuarantined, ReasonStepUpRequired).
	Quarantined       int
	SteppedUp         int
	QuarantineDenials uint64
	StepUpDenials     uint64
	// The denylist broadcast (revokers' core-NATS changes and heartbeats,
	// see Options.MaxStaleness): BroadcastChanges were applied (changes
	// not seen before), BroadcastDuplicates arrived again, BroadcastGaps
	// opened in an origin's sequence; BroadcastResyncs were answered in
	// full by the origin, BroadcastResyncFallbacks were not (no reply, or
	// incomplete: the bucket fills the gap) and BroadcastBucketFills
	// closed a gap from the bucket; BroadcastBad messages were rejected
	// (malformed, invalid, too many origins); BroadcastOrigins revoker
	// replicas are live. DenyUnconfirmed entries put by a broadcast wait
	// for the bucket to confirm them.
	BroadcastChanges         uint64
	BroadcastDuplicates      uint64
	BroadcastGaps            uint64
	BroadcastResyncs         uint64
	BroadcastResyncFallbacks uint64
	BroadcastBucketFills     uint64
	BroadcastBad             uint64
	BroadcastOrigins         int
	DenyUnconfirmed          int
	// UsageQueued events wait in a buffer of UsageCapacity; UsageDropped
	// were dropped because it was full; UsagePublished were acknowledged
	// by JetStream, in UsageBatches messages (batches, or one per event in
	// the event format); UsageFailed could not be published.
	// CanaryTrips counts decisions on canary tokens (each reported on
	// events.CanarySubject); CanaryReportsLost those NATS did not take.
	CanaryTrips       uint64
	CanaryReportsLost uint64
	UsageQueued       int
	UsageCapacity     int
	UsageDropped      uint64
	UsagePublished    uint64
	UsageBatches      uint64
	UsageFailed       uint64
	// With a spool (Options.SpoolDir): UsageSpooled events were written to
	// it because JetStream did not acknowledge them. Since it was opened,
	// counted in messages (batches, or events in the event format):
	// UsageSpoolDropped were dropped from it, oldest first, because it was
	// full; UsageSpoolCorrupt torn or corrupt tails were cut off when it was
	// opened; UsageSpoolPending messages (UsageSpoolBytes bytes) wait in it
	// to be republished. A republished event counts in UsagePublished (one
	// the spool dropped while it was being republished counts in both).
	UsageSpooled      uint64
	UsageSpoolDropped uint64
	UsageSpoolCorrupt uint64
	UsageSpoolPending int64
	UsageSpoolBytes   int64
}

// Stats returns a snapshot of the enforcer's counters.
func (e *Enforcer) Stats() Stats {
	s := Stats{
		Decisions:         e.decisions.Load(),
		Denied:            e.denied.Load(),
		CacheEntries:      e.cache.len(),
		CacheCapacity:     e.cache.capacity(),
		CacheMisses:       e.cacheMisses.Load(),
		NegativeEntries:   e.neg.len(),
		NegativeCapacity:  e.neg.capacity(),
		Keys:              e.keys.Len(),
		KeysRevision:      e.keysRev.Load(),
		DenyEntries:       e.dl.len(),
		DenylistRevision:  e.dl.revision.Load(),
		DenylistCurrentAt: e.fresh.currentAt(),
		CanaryTrips:       e.canaries.trips.Load(),
		CanaryReportsLost: e.canaries.lost.Load(),
	}
	s.DenyUnconfirmed = e.dl.unconfirmedLen()
	s.Quarantined, s.SteppedUp = e.dl.inForce(time.Now())
	s.QuarantineDenials = e.quarantined.Load()
	s.StepUpDenials = e.steppedUp.Load()
	if b := e.bcast.Load(); b != nil {
		s.BroadcastChanges = b.changes.Load()
		s.BroadcastDuplicates = b.duplicates.Load()
		s.BroadcastGaps = b.gaps.Load()
		s.BroadcastResyncs = b.resyncOK.Load()
		s.BroadcastResyncFallbacks = b.resyncFallback.Load()
		s.BroadcastBucketFills = b.bucketFill.Load()
		s.BroadcastBad = b.bad.Load()
		s.BroadcastOrigins = int(b.live.Load())
	}
	if e.thr != nil {
		s.Throttled = e.thr.refused.Load()
		s.ThrottleSources = e.thr.len()
		s.ThrottleCapacity = e.thr.max
		s.ThrottleEvictions = e.thr.evicted.Load()
	}
	if e.usage != nil && e.usage.agg != nil {
		a := e.usage.agg
		s.Aggregated = a.decisions.Load()
		s.AggregateEntries = a.len()
		s.AggregateCapacity = a.max
		s.AggregateOverflow = a.overflow.Load()
	}
	if e.usage != nil {
		s.UsageQueued = len(e.usage.ch)
		s.UsageCapacity = cap(e.usage.ch)
		s.UsageDropped = e.usage.dropped.Load()
		s.UsagePublished = e.usage.published.Load()
		s.UsageBatches = e.usage.batches.Load()
		s.UsageFailed = e.usage.failed.Load()
		e.usage.spoolStats(&s)
	}
	return s
}

// UsageDropped is the number of usage events dropped because the buffer
// was full.
func (e *Enforcer) UsageDropped() uint64 {
	if e.usage == nil {
		return 0
	}
	return e.usage.dropped.Load()
}

// CacheLen is the number of verified tokens cached.
func (e *Enforcer) CacheLen() int { return e.cache.len() }

// DenylistRevision is the last applied revision of the denylist bucket.
func (e *Enforcer) DenylistRevision() uint64 { return e.dl.revision.Load() }

// KeysRevision is the last applied revision of the keys bucket.
func (e *Enforcer) KeysRevision() uint64 { return e.keysRev.Load() }

// DenylistCurrentAt reports when the denylist view was last known to be
// current: every revocation written before that instant has been applied.
// It is zero until the first sync.
func (e *Enforcer) DenylistCurrentAt() time.Time { return e.fresh.currentAt() }

// DenylistStaleness is how long ago the view was last known current (the
// time since New when it never was).
func (e *Enforcer) DenylistStaleness() time.Duration { return e.fresh.staleness(time.Now()) }
