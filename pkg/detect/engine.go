package detect

import (
	"crypto/sha256"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"

	// Zone data ships with the binary: odd_hours must not depend on the
	// host having tzdata installed.
	_ "time/tzdata"
)

// Detector names: stable strings carried in AnomalyDetected.Detector.
const (
	NewNetwork     = "new_network"
	OddHours       = "odd_hours"
	ScopeProbing   = "scope_probing"
	UseAfterRevoke = "use_after_revoke"
	VolumeSpike    = "volume_spike"
	MultiNetwork   = "multi_network"
)

type detectorID uint8

const (
	detNewNetwork detectorID = iota
	detOddHours
	detScopeProbing
	detUseAfterRevoke
	detVolumeSpike
	detMultiNetwork
	numDetectors
)

var detectorNames = [numDetectors]string{NewNetwork, OddHours, ScopeProbing, UseAfterRevoke, VolumeSpike, MultiNetwork}

// Detectors returns the names of all detectors.
func Detectors() []string { return append([]string(nil), detectorNames[:]...) }

// Engine runs the detectors over usage and ledger events in event time.
//
// An Engine is safe for concurrent use: every method holds one mutex, so
// calls are serialised (the auditor feeds it from one goroutine anyway).
type Engine struct {
	mu    sync.Mutex
	cfg   Config
	tab   table
	zones zoneTable
	names interner
	stats counters
}

type counters struct {
	usage, ledger, ignored uint64
	anomalies              [numDetectors]uint64
	suppressed             [numDetectors]uint64
}

// New returns an engine with the given thresholds.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ScopeProbing.Reasons = append([]string(nil), cfg.ScopeProbing.Reasons...)
	cfg.UseAfterRevoke.Reasons = append([]string(nil), cfg.UseAfterRevoke.Reasons...)
	return &Engine{cfg: cfg, tab: newTable(cfg.MaxTokens), zones: newZoneTable(), names: interner{}}, nil
}

// Config returns the engine's thresholds.
func (e *Engine) Config() Config { return e.cfg }

// Observe feeds one event to the engine and returns the anomalies it
// raises (nil almost always). Usage events are analysed; ledger events
// (issued, rotated, revoked, expired) update the token's lifecycle and
// never raise anomalies; other types are ignored.
func (e *Engine) Observe(env events.Envelope) []events.AnomalyDetected {
	switch p := env.Data.(type) {
	case *events.UsageDecided:
		return e.ObserveUsage(env, p)
	case *events.TokenIssued, *events.TokenRotated, *events.TokenRevoked, *events.TokenExpired:
		e.mu.Lock()
		e.observeLedger(&env)
		e.mu.Unlock()
	default:
		e.mu.Lock()
		e.stats.ignored++
		e.mu.Unlock()
	}
	return nil
}

// ObserveUsage analyses one usage decision; env is its envelope (its Time
// and ID are the event time and triggering event of any anomaly). Usage
// without a token id is ignored: that is every denial an enforcer folds
// into one event with a count (events.UsageDecided.Count), the only usage
// that may stand for more than one request, so the detectors never need to
// weigh a count.
func (e *Engine) ObserveUsage(env events.Envelope, u *events.UsageDecided) []events.AnomalyDetected {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u.TokenID == "" {
		e.stats.ignored++
		return nil
	}
	e.stats.usage++
	s, fresh := e.tab.touch(u.TokenID)
	if s.tenant == "" {
		s.tenant = e.names.get(u.Tenant)
	}
	if s.holder == "" {
		s.holder = e.names.get(u.Holder)
	}
	o := obs{id: env.ID, tm: env.Time, u: u, t: env.Time.Unix(), allowed: u.Decision == events.DecisionAllow, fresh: fresh, slot: -1}
	if a, err := netip.ParseAddr(u.SourceIP); err == nil {
		o.hasAddr = true
		o.key, o.v6 = netKey(a, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
		o.slot = s.core.net.find(o.key, o.v6)
	}
	learned := s.core.learned(o.t, e.cfg.Learning)

	e.checkUseAfterRevoke(s, &o, learned)
	e.observeNetwork(s, &o, learned)
	e.checkOddHours(s, &o, learned)
	e.checkScopeProbing(s, &o)
	e.checkVolumeSpike(s, &o)

	if o.allowed && !o.postEnd {
		if s.core.firstSeen == 0 {
			s.core.firstSeen = o.t
		}
		if s.core.learnEvents < ^uint32(0) {
			s.core.learnEvents++
		}
	}
	return o.out
}

// observeLedger records what the ledger says about a token's life.
func (e *Engine) observeLedger(env *events.Envelope) {
	e.stats.ledger++
	switch p := env.Data.(type) {
	case *events.TokenIssued:
		s := e.ledgerToken(p.TokenID, p.Tenant, p.Holder)
		for _, w := range p.Claims.Windows {
			if w.Zone != "" {
				s.zone = e.zones.lookup(w.Zone)
				break
			}
		}
		s.core.setEnd(p.Claims.Expiry.Unix(), endExpired)
		if p.RotatedFrom != "" {
			e.inherit(s, p.RotatedFrom)
		}
	case *events.TokenRotated:
		s := e.ledgerToken(p.TokenID, p.Tenant, p.Holder)
		s.core.setEnd(p.GraceUntil.Unix(), endRotated)
		if succ := e.tab.lookup(p.SuccessorID); succ != nil {
			e.inherit(succ, p.TokenID)
		}
	case *events.TokenRevoked:
		s := e.ledgerToken(p.TokenID, p.Tenant, p.Holder)
		s.core.setEnd(env.Time.Unix(), endRevoked)
	case *events.TokenExpired:
		s := e.ledgerToken(p.TokenID, p.Tenant, p.Holder)
		s.core.setEnd(p.Expiry.Unix(), endExpired)
	}
}

func (e *Engine) ledgerToken(id, tenant, holder string) *tokenState {
	s, _ := e.tab.touch(id)
	s.core.flags |= flagLedger
	if tenant != "" {
		s.tenant = e.names.get(tenant)
	}
	if holder != "" {
		s.holder = e.names.get(holder)
	}
	return s
}

// inherit gives a successor that has not been used yet the baselines of the
// token it rotated from, so a rotation does not restart learning.
func (e *Engine) inherit(succ *tokenState, fromID string) {
	pred := e.tab.lookup(fromID)
	if pred == nil || pred == succ || succ.core.used() {
		return
	}
	succ.core.inherit(&pred.core)
	if succ.zone == 0 {
		succ.zone = pred.zone
	}
}

// obs is the context of one usage event while the detectors run.
type obs struct {
	id      uuid.UUID // triggering event
	tm      time.Time // its event time
	u       *events.UsageDecided
	t       int64 // event time, Unix seconds
	allowed bool
	fresh   bool // the token was first seen with this event
	hasAddr bool
	key     uint64
	v6      bool
	slot    int  // slot of the source network before this event, -1 if new
	postEnd bool // the token had ended (revoked, retired, expired)
	out     []events.AnomalyDetected
}

// knownNetwork reports whether the event's network is in the baseline.
func (o *obs) knownNetwork(s *tokenState) bool {
	return o.slot >= 0 && s.core.net.known&bit(o.slot) != 0
}

// admit applies the cooldown: it reports whether detector d may alert for
// the token at the event's time, and if so starts a new cooldown.
func (e *Engine) admit(s *tokenState, o *obs, d detectorID) bool {
	last := s.core.cool[d]
	if last != 0 && o.t-last < int64(e.cfg.Cooldown/time.Second) {
		e.stats.suppressed[d]++
		return false
	}
	s.core.cool[d] = o.t
	return true
}

// emit appends an anomaly for the event to o.out. The caller has admitted
// it; details may be nil.
func (e *Engine) emit(s *tokenState, o *obs, d detectorID, severity, seen, baseline string, details map[string]string) {
	e.stats.anomalies[d]++
	if details == nil {
		details = make(map[string]string, 8)
	}
	u := o.u
	details["decision"] = u.Decision
	details["reason"] = u.Reason
	details["service"] = u.Service
	details["method"] = u.Method
	details["route"] = u.Route
	if u.Scope != "" {
		details["scope"] = u.Scope
	}
	details["zone"] = e.zones.name(s.zone)
	tenant := s.tenant
	if tenant == "" {
		tenant = "_"
	}
	o.out = append(o.out, events.AnomalyDetected{
		AnomalyID: anomalyID(o.id, detectorNames[d], o.tm),
		Detector:  detectorNames[d],
		Severity:  severity,
		TokenID:   s.id,
		Tenant:    tenant,
		Holder:    s.holder,
		EventID:   o.id.String(),
		EventTime: o.tm,
		SourceIP:  u.SourceIP,
		Evidence:  events.Evidence{Seen: seen, Baseline: baseline, Details: details},
	})
}

// anomalyID is a UUIDv7 whose time is the triggering event's and whose
// random bits are a hash of (event id, detector): unique per anomaly, and
// the same when history is replayed, so JetStream de-duplicates an anomaly
// re-emitted after a crash.
func anomalyID(event uuid.UUID, detector string, at time.Time) string {
	h := sha256.New()
	h.Write(event[:])
	h.Write([]byte(detector))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var u uuid.UUID
	ms := uint64(at.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	copy(u[6:], sum[:10])
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 4122 variant
	return u.String()
}

// escalate returns the next severity up.
func escalate(sev string) string {
	switch sev {
	case events.SeverityLow:
		return events.SeverityMedium
	case events.SeverityMedium:
		return events.SeverityHigh
	}
	return events.SeverityCritical
}

func hasString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func fmtTime(t int64) string { return time.Unix(t, 0).UTC().Format(time.RFC3339) }

func fmtDur(secs int64) string { return (time.Duration(secs) * time.Second).String() }

func itoa(n int) string { return strconv.Itoa(n) }

// Stats is a view of the engine's bounds and counters, for metrics.
type Stats struct {
	// Tokens is the number of tokens with state now; MaxTokens its bound.
	Tokens    int
	MaxTokens int
	// Evictions counts tokens forgotten to make room (least recently seen).
	Evictions uint64
	// StateBytes is the fixed in-memory size of one token's state
	// (excluding its index entry and id string).
	StateBytes int
	// MaxNetworks is how many networks each token remembers.
	MaxNetworks int
	// Zones is the number of time zones in use.
	Zones int
	// UsageEvents, LedgerEvents and Ignored count observed events.
	UsageEvents, LedgerEvents, Ignored uint64
	// Anomalies counts emitted anomalies per detector; Suppressed the
	// detections silenced by the cooldown.
	Anomalies  map[string]uint64
	Suppressed map[string]uint64
}

// Stats returns the engine's current bounds and counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{
		Tokens:       e.tab.len(),
		MaxTokens:    e.tab.max,
		Evictions:    e.tab.evicted,
		StateBytes:   int(unsafe.Sizeof(tokenState{})),
		MaxNetworks:  maxNetworks,
		Zones:        len(e.zones.names),
		UsageEvents:  e.stats.usage,
		LedgerEvents: e.stats.ledger,
		Ignored:      e.stats.ignored,
		Anomalies:    make(map[string]uint64, numDetectors),
		Suppressed:   make(map[string]uint64, numDetectors),
	}
	for d, n := range detectorNames {
		st.Anomalies[n] = e.stats.anomalies[d]
		st.Suppressed[n] = e.stats.suppressed[d]
	}
	return st
}
