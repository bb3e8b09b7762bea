package detect

import (
	"crypto/sha256"
	"net/netip"
	"strconv"
	"strings"
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
	NewNetwork       = "new_network"
	OddHours         = "odd_hours"
	ScopeProbing     = "scope_probing"
	UseAfterRevoke   = "use_after_revoke"
	VolumeSpike      = "volume_spike"
	MultiNetwork     = "multi_network"
	NewClient        = "new_client"
	IssuanceMismatch = "issuance_mismatch"
	NewAction        = "new_action"
	ResourceSweep    = "resource_sweep"
	ForgingBurst     = "forging_burst"
	RiskScore        = "risk_score"
)

type detectorID uint8

const (
	detNewNetwork detectorID = iota
	detOddHours
	detScopeProbing
	detUseAfterRevoke
	detVolumeSpike
	detMultiNetwork
	detNewClient
	detIssuanceMismatch
	detNewAction
	detResourceSweep
	detForgingBurst
	detRiskScore
	numDetectors
)

var detectorNames = [numDetectors]string{NewNetwork, OddHours, ScopeProbing, UseAfterRevoke, VolumeSpike, MultiNetwork,
	NewClient, IssuanceMismatch, NewAction, ResourceSweep, ForgingBurst, RiskScore}

// Detectors returns the names of all detectors.
func Detectors() []string { return append([]string(nil), detectorNames[:]...) }

// Engine runs the detectors over usage and ledger events in event time.
//
// An Engine is safe for concurrent use: every method holds one mutex, so
// calls are serialised (the auditor feeds it from one goroutine anyway).
type Engine struct {
	mu      sync.Mutex
	cfg     Config
	weights [numDetectors]float64
	enabled [numDetectors]bool
	tab     table[tokenState]
	holders table[holderState]
	tenants table[tenantState]
	sources table[sourceState]
	// workNets holds the networks some holder's baseline holds (allowed
	// use of its tokens): forging_burst judges a source in one of them
	// by its fast window only.
	workNets bloom64k
	// shared, when set (Share), is what the other partitions' engines
	// learnt.
	shared *Shared
	gate   Gate
	// told holds the tenants whose learning this engine reported to
	// shared (since it started or was restored).
	told    map[string]bool
	zones   zoneTable
	names   interner
	clients clientNames
	scopes  map[string]bool
	keyBuf  []byte
	stats   counters
}

type counters struct {
	usage, ledger, ignored, sourceless uint64
	anomalies                          [numDetectors]uint64
	suppressed                         [numDetectors]uint64
}

// New returns an engine with the given thresholds.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ScopeProbing.Reasons = append([]string(nil), cfg.ScopeProbing.Reasons...)
	cfg.UseAfterRevoke.Reasons = append([]string(nil), cfg.UseAfterRevoke.Reasons...)
	cfg.ForgingBurst.Reasons = append([]string(nil), cfg.ForgingBurst.Reasons...)
	cfg.Sensitive = append([]string(nil), cfg.Sensitive...)
	e := &Engine{cfg: cfg, weights: cfg.Risk.Weights.byDetector(), zones: newZoneTable(), names: interner{}, clients: clientNames{},
		scopes: map[string]bool{}}
	for _, n := range cfg.Enabled() {
		for d, name := range detectorNames {
			if name == n {
				e.enabled[d] = true
			}
		}
	}
	e.reset()
	return e, nil
}

// reset empties the state.
func (e *Engine) reset() {
	e.tab = newTable[tokenState](e.cfg.MaxTokens)
	e.holders = newTable[holderState](e.cfg.MaxHolders)
	e.tenants = newTable[tenantState](e.cfg.MaxTenants)
	e.sources = newTable[sourceState](e.cfg.MaxSources)
	e.workNets = bloom64k{}
	e.told = map[string]bool{}
	e.zones, e.names, e.clients = newZoneTable(), interner{}, clientNames{}
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
// and ID are the event time and triggering event of any anomaly).
//
// Usage with a token id runs the token, holder and tenant detectors.
// Usage without one — every denial an enforcer could not tie to a token,
// folded into one event per source with a count (UsageDecided.Requests) —
// feeds only forging_burst, keyed on the source network.
func (e *Engine) ObserveUsage(env events.Envelope, u *events.UsageDecided) []events.AnomalyDetected {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u.TokenID == "" {
		return e.observeSourceless(env, u)
	}
	if len(u.TokenID) > maxNameLen || len(u.Holder) > maxNameLen || len(u.Tenant) > maxNameLen {
		// Not a Cordon token's claims (ids are UUIDs, names short): keep
		// such strings out of the state and its snapshots.
		e.stats.ignored++
		return nil
	}
	e.stats.usage++
	ti, fresh := e.tab.touch(u.TokenID)
	s := e.tab.at(ti)
	if s.tenant == "" {
		s.tenant = e.names.get(u.Tenant)
	}
	if s.holder == "" {
		s.holder = e.names.get(u.Holder)
	}
	o := obs{id: env.ID, tm: env.Time, u: u, tokenID: e.tab.key(ti), t: env.Time.Unix(), allowed: u.Decision == events.DecisionAllow,
		fresh: fresh, slot: -1, hslot: -1, hcslot: -1, tcslot: -1, tokBit: tokenBit(u.TokenID)}
	e.keyBuf = holderKey(e.keyBuf, s.tenant, s.holder)
	hi, _ := e.holders.touchBytes(e.keyBuf)
	h := e.holders.at(hi)
	e.keyBuf = append(e.keyBuf[:0], s.tenant...)
	tni, _ := e.tenants.touchBytes(e.keyBuf)
	tn := e.tenants.at(tni)
	o.h, o.tn = h, tn
	if a, err := netip.ParseAddr(u.SourceIP); err == nil {
		if o.allowed {
			o.addrBit = addrBit(u.SourceIP)
		}
		o.hasAddr = true
		o.key, o.v6 = netKey(a, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
		o.slot = s.core.net.find(o.key, o.v6)
		o.hslot = h.nets.find(o.key, o.v6)
	}
	if u.Client != "" {
		fam := clientFamily(u.Client)
		o.cli = fnv64(fam) | 1 // never 0: 0 means unknown
		o.hcslot = h.clients.find(o.cli, false)
		o.tcslot = s.core.cli.find(o.cli)
		e.clients.put(o.cli, fam)
	}
	o.tokLearned = s.core.learned(o.t, e.cfg.Learning)
	o.holderLearned = h.learned(o.t, e.cfg.HolderLearning)
	o.tenantLearned = tn.learned(o.t, e.cfg.HolderLearning)
	if e.shared != nil {
		o.tenantLearned = e.tenantLearned(s.tenant, o.tenantLearned, o.t)
	}
	o.sensitive = e.sensitive(u.Scope)
	if h.zone == 0 && s.zone != 0 && h.learnEvents == 0 {
		h.zone = s.zone
	}

	e.checkUseAfterRevoke(s, &o, o.tokLearned)
	e.checkIssuance(s, &o)
	e.observeNetwork(s, &o)
	e.observeClient(s, &o)
	e.checkOddHours(s, &o)
	e.checkNewAction(s, &o)
	e.checkScopeProbing(s, &o)
	e.checkSweep(s, &o)
	e.checkVolumeSpike(s, &o)

	if o.allowed && !o.postEnd {
		if s.core.firstSeen == 0 {
			s.core.firstSeen = o.t
		}
		if s.core.learnEvents < ^uint32(0) {
			s.core.learnEvents++
		}
		if h.firstSeen == 0 {
			h.firstSeen = o.t
		}
		if h.learnEvents < ^uint32(0) {
			h.learnEvents++
		}
		if tn.firstSeen == 0 {
			tn.firstSeen = o.t
		}
		if tn.learnEvents < ^uint32(0) {
			tn.learnEvents++
		}
	}
	e.scoreRisk(s, &o)
	return o.out
}

// maxScopeCache bounds the memo of scope sensitivity.
const maxScopeCache = 4096

// sensitive reports whether a scope matches one of Config.Sensitive; the
// answer is memoised (scopes are few).
func (e *Engine) sensitive(scope string) bool {
	if scope == "" || len(e.cfg.Sensitive) == 0 {
		return false
	}
	if v, ok := e.scopes[scope]; ok {
		return v
	}
	v := false
	for _, p := range e.cfg.Sensitive {
		if matchScope(p, scope) {
			v = true
			break
		}
	}
	if len(e.scopes) < maxScopeCache {
		e.scopes[strings.Clone(scope)] = v
	}
	return v
}

// observeLedger records what the ledger says about a token's life.
func (e *Engine) observeLedger(env *events.Envelope) {
	var id, tenant, holder string
	switch p := env.Data.(type) {
	case *events.TokenIssued:
		id, tenant, holder = p.TokenID, p.Tenant, p.Holder
	case *events.TokenRotated:
		id, tenant, holder = p.TokenID+p.SuccessorID, p.Tenant, p.Holder
	case *events.TokenRevoked:
		id, tenant, holder = p.TokenID, p.Tenant, p.Holder
	case *events.TokenExpired:
		id, tenant, holder = p.TokenID, p.Tenant, p.Holder
	}
	if len(id) > maxNameLen || len(tenant) > maxNameLen || len(holder) > maxNameLen {
		e.stats.ignored++
		return
	}
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
		if r := p.Requested; r != nil {
			s.core.iss = issuance{}
			if a, err := netip.ParseAddr(r.SourceIP); err == nil {
				key, v6 := netKey(a, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
				s.core.iss.net, s.core.iss.flags = key, issNet
				if v6 {
					s.core.iss.flags |= issV6
				}
			}
			if r.Client != "" {
				fam := clientFamily(r.Client)
				s.core.iss.client = fnv64(fam) | 1
				e.clients.put(s.core.iss.client, fam)
			}
			e.settleFromIssuance(s)
		}
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

// settleFromIssuance: a token requested from a network (with a client)
// that its holder was lately seen using but has not made baseline yet
// settles that episode — the workload asks for its tokens from where it
// now runs (a move, a new cluster), which the issuer authenticated — and
// the value joins the holder's baseline. A value never seen for the
// holder is not added: where a token is requested is no use of it.
func (e *Engine) settleFromIssuance(s *tokenState) {
	e.keyBuf = holderKey(e.keyBuf, s.tenant, s.holder)
	i, ok := e.holders.findBytes(e.keyBuf)
	if !ok {
		return
	}
	h := e.holders.at(i)
	iss := &s.core.iss
	if iss.flags&issNet != 0 {
		if slot := h.nets.find(iss.net, iss.flags&issV6 != 0); slot >= 0 {
			h.nets.known |= bit32(slot)
		}
	}
	if iss.client != 0 {
		if slot := h.clients.find(iss.client, false); slot >= 0 {
			h.clients.known |= bit32(slot)
		}
	}
}

// maxNameLen bounds the token ids, tenants and holders the engine keeps
// (well below the snapshot's string bound).
const maxNameLen = 256

func (e *Engine) ledgerToken(id, tenant, holder string) *tokenState {
	i, _ := e.tab.touch(id)
	s := e.tab.at(i)
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
	tokenID string
	t       int64 // event time, Unix seconds
	allowed bool
	fresh   bool // the token was first seen with this event
	hasAddr bool
	key     uint64
	v6      bool
	slot    int // slot of the source network in the token's set before this event, -1 if new
	hslot   int // same in the holder's set
	cli     uint64
	hcslot  int // slot of the client in the holder's set, -1 if new
	tcslot  int // same in the token's clients
	// tokLearned, holderLearned and tenantLearned: whose baseline is
	// trusted.
	tokLearned    bool
	holderLearned bool
	tenantLearned bool
	sensitive     bool
	tokBit        uint8
	addrBit       uint8 // the source address's instance bit (allowed uses only)
	// foreignDone and isForeign cache Engine.foreign for the event.
	foreignDone, isForeign bool
	// netAlerted and cliAlerted: the event's network (client) was
	// reported for the token; marked once the token's sets hold it.
	netAlerted, cliAlerted bool
	postEnd                bool // the token had ended (revoked, retired, expired)
	signaled               bool // a risk signal was recorded for the event
	h                      *holderState
	tn                     *tenantState
	out                    []events.AnomalyDetected
}

// knownNetwork reports whether the event's network is in the token's
// baseline.
func (o *obs) knownNetwork(s *tokenState) bool {
	return o.slot >= 0 && s.core.net.known&bit(o.slot) != 0
}

// knownNetworkJudged reports whether the event's network is in the
// baseline that judges the token: its holder's once learnt, else its own.
func (o *obs) knownNetworkJudged(s *tokenState) bool {
	if o.holderLearned {
		return o.h.nets.isKnown(o.hslot)
	}
	return o.knownNetwork(s)
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
// it; details may be nil. level is the baseline broken (LevelToken,
// LevelHolder, LevelTenant); "" for detectors that judge no baseline.
// Every token anomaly carries the known networks of the baseline judging
// the token (DetailKnownNetworks) when it has any.
func (e *Engine) emit(s *tokenState, o *obs, d detectorID, level, severity, seen, baseline string, details map[string]string) {
	e.stats.anomalies[d]++
	if details == nil {
		details = make(map[string]string, 14)
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
	if u.Resource != "" {
		details["resource"] = u.Resource
	}
	if u.Client != "" {
		details["client"] = u.Client
	}
	if u.Device != "" {
		details["device"] = u.Device
	}
	if level != "" {
		details["level"] = level
	}
	details["zone"] = e.zones.name(s.zone)
	if nets, lvl := e.knownNetworks(s, o); nets != "" {
		details[DetailKnownNetworks] = nets
		details[DetailKnownNetworksLevel] = lvl
	}
	tenant := s.tenant
	if tenant == "" {
		tenant = "_"
	}
	o.out = append(o.out, events.AnomalyDetected{
		AnomalyID: anomalyID(o.id, detectorNames[d], o.tm),
		Detector:  detectorNames[d],
		Severity:  severity,
		TokenID:   o.tokenID,
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
	// Holders, Tenants and Sources are the holders, tenants and source
	// networks with state, against their bounds, and their evictions.
	Holders, MaxHolders, Tenants, MaxTenants, Sources, MaxSources int
	HolderEvictions, TenantEvictions, SourceEvictions             uint64
	// StateBytes is the fixed in-memory size of one token's state
	// (excluding its index entry and id string); HolderStateBytes,
	// TenantStateBytes and SourceStateBytes the same for the others.
	StateBytes, HolderStateBytes, TenantStateBytes, SourceStateBytes int
	// MaxNetworks is how many networks each token remembers;
	// MaxHolderNetworks how many networks (and clients) each holder does.
	MaxNetworks, MaxHolderNetworks int
	// Zones is the number of time zones in use.
	Zones int
	// UsageEvents, LedgerEvents and Ignored count observed events;
	// Sourceless the usage events without a token id (forging_burst).
	UsageEvents, LedgerEvents, Ignored, Sourceless uint64
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
		Tokens:            e.tab.len(),
		MaxTokens:         e.tab.max,
		Evictions:         e.tab.evicted,
		Holders:           e.holders.len(),
		MaxHolders:        e.holders.max,
		HolderEvictions:   e.holders.evicted,
		Tenants:           e.tenants.len(),
		MaxTenants:        e.tenants.max,
		TenantEvictions:   e.tenants.evicted,
		Sources:           e.sources.len(),
		MaxSources:        e.sources.max,
		SourceEvictions:   e.sources.evicted,
		StateBytes:        int(unsafe.Sizeof(tokenState{})),
		HolderStateBytes:  int(unsafe.Sizeof(holderState{})),
		TenantStateBytes:  int(unsafe.Sizeof(tenantState{})),
		SourceStateBytes:  int(unsafe.Sizeof(sourceState{})),
		MaxNetworks:       maxNetworks,
		MaxHolderNetworks: setSlots,
		Zones:             len(e.zones.names),
		UsageEvents:       e.stats.usage,
		LedgerEvents:      e.stats.ledger,
		Ignored:           e.stats.ignored,
		Sourceless:        e.stats.sourceless,
		Anomalies:         make(map[string]uint64, numDetectors),
		Suppressed:        make(map[string]uint64, numDetectors),
	}
	for d, n := range detectorNames {
		st.Anomalies[n] = e.stats.anomalies[d]
		st.Suppressed[n] = e.stats.suppressed[d]
	}
	return st
}

// maxClientNames bounds the table of client family names kept for
// evidence; past it, families are shown by hash.
const maxClientNames = 1 << 14

// clientNames maps client family hashes back to names, for evidence.
type clientNames map[uint64]string

func (c clientNames) put(h uint64, name string) {
	if _, ok := c[h]; ok || len(c) >= maxClientNames {
		return
	}
	c[h] = strings.Clone(name)
}

func (c clientNames) name(h uint64) string {
	if n, ok := c[h]; ok {
		return n
	}
	return "#" + strconv.FormatUint(h, 16)
}
