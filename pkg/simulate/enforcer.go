package simulate

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Reasons lists the reasons the simulated enforcer can report: events.ReasonOK
// and the deny reasons of the event contract (events.DenyReasons) that a
// scenario's traffic can cause. It models no stale denylist, device binding,
// unsafe path or unknown route.
func Reasons() []string {
	return []string{events.ReasonOK, events.ReasonMissing, events.ReasonThrottled, events.ReasonMalformed,
		events.ReasonUnknownKey, events.ReasonBadSignature, events.ReasonNotYetValid, events.ReasonExpired,
		events.ReasonRevoked, events.ReasonWrongAudience, events.ReasonScopeMissing, events.ReasonSourceNetwork,
		events.ReasonEnvironment, events.ReasonTimeWindow}
}

// request is one HTTP request reaching an enforcer.
type request struct {
	at       time.Time
	tv       *tokenVer // nil: no valid token (see forged)
	ip       netip.Addr
	r        *route
	resource string
	agent    string
	label    label
	// forged is the verdict on a token that does not verify (malformed,
	// unknown_key, bad_signature); empty with tv nil is no token at all.
	// forgedKey identifies the forged string (the negative cache's key):
	// a client repeating one string is not a new failed verification.
	forged    string
	forgedKey string
	forgedKid string
}

// label ties an event to what it is part of.
type label struct {
	attack int // 1 + index into gen.attacks; 0 for normal work
}

// enforcerState is what one simulated enforcer remembers: its throttle
// records, its negative cache and the denials it folds.
type enforcerState struct {
	thr  map[netip.Addr]*thrRecord
	neg  map[string]string // forged string → reason
	fold map[foldKey]*foldEntry
	out  []*foldEntry
}

type thrRecord struct {
	start time.Time
	n     int
	until time.Time
}

type foldKey struct {
	src    netip.Addr
	reason string
	kid    string
	slot   int64
}

// foldEntry is the first folded request of its key and interval and how
// many it stands for.
type foldEntry struct {
	req    request
	reason string
	kid    string
	count  int64
	labels map[int]bool
}

func (g *gen) enforcerOf(s *service) *enforcerState {
	e := g.enforcers[s]
	if e == nil {
		e = &enforcerState{thr: map[netip.Addr]*thrRecord{}, neg: map[string]string{}, fold: map[foldKey]*foldEntry{}}
		g.enforcers[s] = e
	}
	return e
}

// throttleKey is what one source is to the throttle: an IPv4 address or
// an IPv6 /64.
func throttleKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// decideForged is the enforcer's verification of a token that does not
// verify: throttled while the source is, the negative cache's verdict for
// a string seen before, else a failed verification that counts against
// the source.
func (g *gen) decideForged(e *enforcerState, q *request) (reason, kid string) {
	es := g.sc.Enforcer
	k := throttleKey(q.ip)
	rec := e.thr[k]
	if rec != nil && q.at.Before(rec.until) {
		return events.ReasonThrottled, ""
	}
	if r, ok := e.neg[q.forgedKey]; ok {
		return r, q.forgedKid
	}
	e.neg[q.forgedKey] = q.forged
	if rec == nil {
		rec = &thrRecord{start: q.at}
		e.thr[k] = rec
	}
	if q.at.Sub(rec.start) > es.ThrottleWindow.D() {
		rec.start, rec.n = q.at, 0
	}
	rec.n++
	if rec.n >= es.ThrottleBurst {
		rec.until = q.at.Add(es.ThrottleCooldown.D())
		rec.start, rec.n = q.at, 0
	}
	return q.forged, q.forgedKid
}

// decide is the enforcer's decision on a verified token, its checks in
// pkg/enforce's order: not yet valid, expired, revoked, audience, scope,
// source network, environment, time window.
func (g *gen) decide(tv *tokenVer, q *request) string {
	c := &tv.claims
	sec := q.at.Unix()
	switch {
	case sec < c.NotBefore.Unix():
		return events.ReasonNotYetValid
	case sec >= c.Expiry.Unix():
		return events.ReasonExpired
	case !tv.revokedAt.IsZero() && !q.at.Before(tv.revokedAt):
		return events.ReasonRevoked
	case !slices.Contains(c.Audience, q.r.svc.name):
		return events.ReasonWrongAudience
	case !slices.ContainsFunc(c.Scopes, func(s string) bool { return token.ScopeCovers(s, q.r.scope) }):
		return events.ReasonScopeMissing
	case len(c.Networks) > 0 && !inNetworks(c.Networks, q.ip):
		return events.ReasonSourceNetwork
	case c.Environment != "" && c.Environment != g.sc.Enforcer.Environment:
		return events.ReasonEnvironment
	case !inWindows(c.Windows, q.at):
		return events.ReasonTimeWindow
	}
	return events.ReasonOK
}

func inNetworks(nets []string, ip netip.Addr) bool {
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

func inWindows(ws []events.Window, at time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for _, w := range ws {
		if ok, err := (token.Window{Days: w.Days, Start: w.Start, End: w.End, Zone: w.Zone}).Contains(at); err == nil && ok {
			return true
		}
	}
	return false
}

// send makes one request and records the usage event(s) the enforcer
// publishes for it; it returns the reason (events.ReasonOK for an allow).
func (g *gen) send(q request) string {
	e := g.enforcerOf(q.r.svc)
	if q.tv == nil {
		reason, kid := events.ReasonMissing, ""
		if q.forged != "" {
			reason, kid = g.decideForged(e, &q)
		}
		g.fold(e, q, reason, kid)
		return reason
	}
	reason := g.decide(q.tv, &q)
	h := q.tv.h
	decision := events.DecisionDeny
	if reason == events.ReasonOK {
		decision = events.DecisionAllow
	}
	g.add(q.at, "enforcer/"+q.r.svc.enforcer, &events.UsageDecided{
		TokenID:   q.tv.id,
		Tenant:    h.tenant,
		Holder:    h.name,
		KeyID:     g.sc.Enforcer.KeyID,
		Enforcer:  q.r.svc.enforcer,
		Service:   q.r.svc.name,
		SourceIP:  q.ip.String(),
		UserAgent: q.agent,
		Method:    q.r.method,
		Route:     q.r.path,
		Scope:     q.r.scope,
		Decision:  decision,
		Reason:    reason,
		LatencyNS: 20_000 + g.rng.Int64N(280_000),
		Resource:  q.resource,
		Client:    normalizeClient(q.agent),
	}, q.label)
	return reason
}

// fold adds a denial that names no token to its source's event of the
// interval, as the enforcer's aggregator does.
func (g *gen) fold(e *enforcerState, q request, reason, kid string) {
	iv := g.sc.Enforcer.AggregateInterval.D()
	k := foldKey{src: q.ip, reason: reason, kid: kid, slot: q.at.UnixNano() / int64(iv)}
	f := e.fold[k]
	if f == nil {
		f = &foldEntry{req: q, reason: reason, kid: kid, labels: map[int]bool{}}
		e.fold[k] = f
		e.out = append(e.out, f)
	}
	f.count++
	f.labels[q.label.attack] = true
}

// flushFolded records the folded events of every enforcer.
func (g *gen) flushFolded() {
	for _, s := range g.services {
		e := g.enforcers[s]
		if e == nil {
			continue
		}
		for _, f := range e.out {
			q := f.req
			lbl := label{}
			for a := range f.labels {
				if a > 0 {
					lbl.attack = a // an attacker's source is its own: one attack per entry
				}
			}
			u := &events.UsageDecided{
				KeyID:     f.kid,
				Enforcer:  s.enforcer,
				Service:   s.name,
				SourceIP:  q.ip.String(),
				UserAgent: q.agent,
				Method:    q.r.method,
				Route:     q.r.path,
				Scope:     q.r.scope,
				Decision:  events.DecisionDeny,
				Reason:    f.reason,
				LatencyNS: 2_000 + g.rng.Int64N(60_000),
				Resource:  q.resource,
				Client:    normalizeClient(q.agent),
			}
			if f.count > 1 {
				u.Count = min(f.count, events.MaxUsageCount)
			}
			g.add(q.at, "enforcer/"+s.enforcer, u, lbl)
		}
		e.out, e.fold = nil, map[foldKey]*foldEntry{}
	}
}

// normalizeClient is the client a user agent is reported as: family and
// major version ("python-requests/2", "Go-http-client/1", "Chrome/124").
// It follows the rules of events.NormalizeClient, which the enforcer uses;
// switch to that function once it is in pkg/events.
func normalizeClient(ua string) string {
	ua = strings.TrimSpace(ua)
	if ua == "" {
		return ""
	}
	for _, b := range []struct{ marker, name string }{
		{"Edg/", "Edge"}, {"Firefox/", "Firefox"}, {"Chrome/", "Chrome"},
	} {
		if i := strings.Index(ua, b.marker); i >= 0 && strings.HasPrefix(ua, "Mozilla/") {
			return b.name + "/" + major(ua[i+len(b.marker):])
		}
	}
	if strings.HasPrefix(ua, "Mozilla/") && strings.Contains(ua, "Safari/") {
		if i := strings.Index(ua, "Version/"); i >= 0 {
			return "Safari/" + major(ua[i+len("Version/"):])
		}
	}
	first, _, _ := strings.Cut(ua, " ")
	name, ver, _ := strings.Cut(first, "/")
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return -1
	}, name)
	if clean == "" {
		return ""
	}
	out := clean
	if m := major(ver); m != "" {
		out += "/" + m
	}
	if len(out) > events.MaxClientLen {
		out = out[:events.MaxClientLen]
	}
	return out
}

// major returns the leading digits of a version.
func major(v string) string {
	n := 0
	for n < len(v) && v[n] >= '0' && v[n] <= '9' && n < 9 {
		n++
	}
	return v[:n]
}
