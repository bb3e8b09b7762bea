package simulate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// Workload settings.
const (
	rhythmOffice  = "office"
	rhythmAlways  = "always"
	rhythmNightly = "nightly"

	claimExact  = "exact"
	claimTenant = "tenant"
	claimNone   = "none"

	issuedSelf       = "self"
	issuedCI         = "ci"
	issuedAutomation = "automation"

	renewRotate = "rotate"
	renewPerRun = "per_run"
)

// ciAgent is the client of the tenants' CI runners when they request
// tokens for the workloads they deploy.
const ciAgent = "cordon-cli/1.4.2 (linux; amd64)"

// service is an API behind its enforcer.
type service struct {
	name     string
	enforcer string
	ids      Count
	routes   []*route
}

// route is one route of a service, as its enforcer's routes file has it.
type route struct {
	key       string // "GET /v1/invoices/{id}"
	method    string
	path      string // the pattern the enforcer reports: "/v1/invoices/{id}"
	scope     string
	sensitive bool
	svc       *service
	params    []string // parameter names in pattern order ("path..." for a wildcard)
	since     time.Time
}

func newRoute(svc *service, spec RouteSpec, since time.Time) *route {
	m, p, _ := strings.Cut(spec.Route, " ")
	r := &route{key: spec.Route, method: m, path: p, scope: spec.Scope, sensitive: spec.Sensitive, svc: svc, since: since}
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, "{") {
			r.params = append(r.params, strings.Trim(seg, "{}"))
		}
	}
	return r
}

func (r *route) read() bool { return r.method == "GET" }

// hasID reports whether the route names a resource.
func (r *route) hasID() bool { return len(r.params) > 0 }

// Concrete returns the request path of route pattern for resource (the
// parameter values joined by "/", as the enforcer reports them): the path
// a client sent.
func Concrete(pattern, resource string) string {
	if resource == "" {
		return pattern
	}
	var out []string
	vals := resource
	for _, seg := range strings.Split(pattern, "/") {
		if !strings.HasPrefix(seg, "{") {
			out = append(out, seg)
			continue
		}
		if strings.HasSuffix(seg, "...}") {
			out = append(out, vals)
			vals = ""
			continue
		}
		v, rest, _ := strings.Cut(vals, "/")
		out = append(out, v)
		vals = rest
	}
	return strings.Join(out, "/")
}

// phase is where a holder runs from, from a time on.
type phase struct {
	from      time.Time
	nets      []netip.Prefix
	pools     [][]netip.Addr
	weight    []float64
	claimNets []string
}

// holder is one workload: a service identity that holds tokens.
type holder struct {
	idx       int
	tenant    string
	tenantIdx int
	name      string
	class     *WorkloadSpec
	zone      string
	loc       *time.Location
	window    *events.Window
	rate      float64 // requests per hour at the rhythm's peak
	born      time.Time
	agent     string // raw user agent
	phases    []*phase
	scopes    []string
	calls     []call
	audience  []string
	audSvc    []*service
	working   map[*service][]int
	tokens    []*tokenVer
	reissues  []reissue // forced re-issues (drift), in time order
	backfills []backfill
	allowed   []time.Time // normal allowed uses, sorted after traffic
	// attacked marks a holder deployed for an attack during its learning;
	// attackTimes are the starts of the attacks on it.
	attacked    bool
	attackTimes []time.Time
	drifted     bool
}

// call is a usual action and its weight, from a time on (since), with
// its scope granted to the holder's tokens from granted on.
type call struct {
	r       *route
	weight  float64
	since   time.Time
	granted time.Time
}

// reissue is a fresh token the holder gets at a time: a redeploy, a move,
// a deployment that needs a new scope.
type reissue struct {
	at     time.Time
	reason string
}

// backfill is a burst of work over many resources.
type backfill struct {
	from, to        time.Time
	volume, breadth float64
	firstID         int
}

// phaseAt returns the holder's phase at t.
func (h *holder) phaseAt(t time.Time) *phase {
	p := h.phases[0]
	for _, q := range h.phases[1:] {
		if !t.Before(q.from) {
			p = q
		}
	}
	return p
}

// scopesAt returns the scopes its tokens carry at t.
func (h *holder) scopesAt(t time.Time) []string {
	out := slices.Clone(h.scopes)
	for _, c := range h.calls {
		if !c.granted.IsZero() && !t.Before(c.granted) && !slices.Contains(out, c.r.scope) {
			out = append(out, c.r.scope)
		}
	}
	return out
}

// rhythm is the holder's activity at t, between 0 and 1.
func (h *holder) rhythm(t time.Time) float64 {
	if t.Before(h.born) {
		return 0
	}
	w := h.class
	lt := t.In(h.loc)
	x := float64(lt.Hour()) + float64(lt.Minute())/60 + float64(lt.Second())/3600
	wd := lt.Weekday()
	weekend := wd == time.Saturday || wd == time.Sunday
	switch w.Rhythm {
	case rhythmOffice:
		s, e := w.Hours.Start, w.Hours.End
		if x < s || x >= e {
			return 0
		}
		v := 0.35 + 0.65*math.Sin(math.Pi*(x-s)/(e-s))
		if x >= 12 && x < 13 {
			v *= 0.7
		}
		if weekend {
			v *= w.Weekend
		}
		return v
	case rhythmAlways:
		v := 0.18 + 0.82*math.Exp(-((x-14)/4.5)*((x-14)/4.5))
		if weekend {
			v *= max(w.Weekend, 0.05)
		}
		return v
	default:
		if x >= w.Hours.Start && x < w.Hours.End {
			return 1
		}
		return 0
	}
}

// quiet reports whether t is in the holder's quietest hours: outside its
// hours (office, nightly) or 01:00–05:00 local (always).
func (h *holder) quiet(t time.Time) bool {
	if h.class.Rhythm == rhythmAlways {
		x := t.In(h.loc).Hour()
		return x >= 1 && x < 5
	}
	return h.rhythm(t) == 0
}

// buildServices makes the services and their routes.
func (g *gen) buildServices() {
	for _, sp := range g.sc.Services {
		s := &service{name: sp.Name, enforcer: "edge-" + strings.TrimSuffix(sp.Name, "-api"), ids: sp.IDs}
		for _, rs := range sp.Routes {
			r := newRoute(s, rs, time.Time{})
			s.routes = append(s.routes, r)
			g.routes[r.key] = r
		}
		g.services = append(g.services, s)
		g.byName[s.name] = s
	}
}

// holderCount is a class's count scaled to Scenario.Holders.
func (g *gen) holderCount(w *WorkloadSpec) int {
	if g.sc.Holders <= 0 {
		return w.Count
	}
	total := 0
	for _, x := range g.sc.Workloads {
		total += x.Count
	}
	return max(1, int(math.Round(float64(w.Count)*float64(g.sc.Holders)/float64(total))))
}

// buildHolders makes the holders working from the start.
func (g *gen) buildHolders() error {
	for i := range g.sc.Workloads {
		w := &g.sc.Workloads[i]
		for range g.holderCount(w) {
			if _, err := g.newHolder(w, g.start); err != nil {
				return err
			}
		}
	}
	return nil
}

// newHolder makes a holder of class w that gets its first token at born.
func (g *gen) newHolder(w *WorkloadSpec, born time.Time) (*holder, error) {
	idx := len(g.holders)
	ti := idx % len(g.sc.Tenants)
	h := &holder{idx: idx, tenant: g.sc.Tenants[ti], tenantIdx: ti, class: w, born: born, working: map[*service][]int{}}
	g.classN[w.Class]++
	h.name = fmt.Sprintf("%s-%d", w.Class, g.classN[w.Class])
	h.zone = w.Zones[g.rng.IntN(len(w.Zones))]
	loc, err := g.zoneLoc(h.zone)
	if err != nil {
		return nil, err
	}
	h.loc = loc
	if w.WindowClaim && w.Rhythm != rhythmAlways {
		days := []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
		if w.Rhythm == rhythmOffice && w.Weekend == 0 {
			days = days[:5]
		}
		h.window = &events.Window{Days: days, Start: clock(w.Hours.Start), End: clock(w.Hours.End), Zone: h.zone}
	}
	h.agent = w.Clients[g.rng.IntN(len(w.Clients))]
	// Peak rates are log-uniform in the class's range.
	lo, hi := math.Log(float64(w.Rate.Min)), math.Log(float64(w.Rate.Max))
	h.rate = math.Exp(lo + (hi-lo)*g.rng.Float64())
	h.phases = []*phase{g.newPhase(h, born)}
	h.scopes = slices.Clone(w.Scopes)
	for _, c := range w.Calls {
		h.calls = append(h.calls, call{r: g.routes[c.Route], weight: c.Weight})
	}
	h.audSvc = g.servicesOf(w.Scopes)
	for _, s := range h.audSvc {
		h.audience = append(h.audience, s.name)
	}
	for _, s := range g.servicesOf(append(slices.Clone(w.Scopes), w.Ceiling...)) {
		n := g.count(w.Resources)
		ids := make([]int, n)
		for i := range ids {
			ids[i] = g.randomID(s)
		}
		h.working[s] = ids
	}
	g.holders = append(g.holders, h)
	return h, nil
}

// servicesOf returns the services with a route needing one of scopes.
func (g *gen) servicesOf(scopes []string) []*service {
	var out []*service
	for _, s := range g.services {
		if slices.ContainsFunc(s.routes, func(r *route) bool { return slices.Contains(scopes, r.scope) }) {
			out = append(out, s)
		}
	}
	return out
}

// newPhase gives the holder networks it has not had: IPv4 /24s in its
// tenant's /16 (or IPv6 /64s), addresses in each, and the claims.
func (g *gen) newPhase(h *holder, from time.Time) *phase {
	w := h.class
	p := &phase{from: from}
	n := g.count(w.Networks)
	for k := range n {
		var pfx netip.Prefix
		g.netSeq[h.tenantIdx]++
		seq := g.netSeq[h.tenantIdx]
		if k > 0 && g.rng.Float64() < w.IPv6 {
			a := netip.AddrFrom16([16]byte{0xfd, 0x00, byte(10 + h.tenantIdx), 0, 0, byte(seq >> 8), byte(seq), 0})
			pfx = netip.PrefixFrom(a, 64)
		} else {
			pfx = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(10 + h.tenantIdx), byte(seq % 250), 0}), 24)
		}
		p.nets = append(p.nets, pfx)
		pool := make([]netip.Addr, g.count(w.Addresses))
		for j := range pool {
			pool[j] = hostIn(pfx, 10+j*5+g.rng.IntN(4))
		}
		p.pools = append(p.pools, pool)
		p.weight = append(p.weight, 1/float64(k+1))
	}
	switch w.NetworkClaim {
	case claimExact:
		for _, n := range p.nets {
			p.claimNets = append(p.claimNets, n.String())
		}
	case claimTenant:
		p.claimNets = append(p.claimNets, fmt.Sprintf("10.%d.0.0/16", 10+h.tenantIdx))
		for _, n := range p.nets {
			if n.Addr().Is6() {
				p.claimNets = append(p.claimNets, n.String())
			}
		}
	}
	return p
}

// hostIn returns host number i of prefix p.
func hostIn(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().As16()
	if p.Addr().Is4() {
		b4 := p.Addr().As4()
		b4[3] = byte(i)
		return netip.AddrFrom4(b4)
	}
	b[14], b[15] = byte(i>>8), byte(i)
	return netip.AddrFrom16(b)
}

// pickIP draws one of the holder's addresses at t.
func (g *gen) pickIP(h *holder, t time.Time) netip.Addr {
	p := h.phaseAt(t)
	k := g.weighted(p.weight)
	return p.pools[k][g.rng.IntN(len(p.pools[k]))]
}

// weighted draws an index with the given weights.
func (g *gen) weighted(w []float64) int {
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	u := g.rng.Float64() * sum
	for i, x := range w {
		if u < x {
			return i
		}
		u -= x
	}
	return len(w) - 1
}

// pickCall draws one of the holder's usual actions at t.
func (g *gen) pickCall(h *holder, t time.Time) *route {
	ws := make([]float64, len(h.calls))
	for i, c := range h.calls {
		if c.since.IsZero() || !t.Before(c.since) {
			ws[i] = c.weight
		}
	}
	return h.calls[g.weighted(ws)].r
}

// resource returns the parameter values of a request to r by h: mostly
// from its working set (the popular ones far more often), sometimes new.
func (g *gen) resource(h *holder, r *route) string {
	if !r.hasID() {
		return ""
	}
	ws := h.working[r.svc]
	parts := make([]string, len(r.params))
	for i, p := range r.params {
		id := 0
		if len(ws) == 0 || g.rng.Float64() < h.class.NewResources {
			id = g.randomID(r.svc)
		} else {
			u := g.rng.Float64()
			id = ws[int(float64(len(ws))*u*u)]
		}
		parts[i] = g.paramValue(p, id)
	}
	return strings.Join(parts, "/")
}

// paramValue spells resource id for a parameter: a number, or an object
// path for a {path...} wildcard.
func (g *gen) paramValue(param string, id int) string {
	if strings.HasSuffix(param, "...") {
		return fmt.Sprintf("assets/%d/%02d/obj-%d.jpg", 2020+id%7, 1+id%12, id)
	}
	return strconv.Itoa(id)
}

// randomID draws an id of the service's space.
func (g *gen) randomID(s *service) int {
	return s.ids.Min + g.rng.IntN(s.ids.Max-s.ids.Min+1)
}

// count draws from a Count.
func (g *gen) count(c Count) int {
	if c.Max <= c.Min {
		return c.Min
	}
	return c.Min + g.rng.IntN(c.Max-c.Min+1)
}

// span draws from a Span.
func (g *gen) span(s Span) time.Duration {
	if s.Max <= s.Min {
		return s.Min
	}
	return s.Min + time.Duration(g.rng.Int64N(int64(s.Max-s.Min)+1))
}

// zoneLoc loads a time zone once.
func (g *gen) zoneLoc(name string) (*time.Location, error) {
	if loc, ok := g.zones[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("load zone %s: %w", name, err)
	}
	g.zones[name] = loc
	return loc, nil
}

// attackerIP returns an address in a public /24 no one else uses.
func (g *gen) attackerIP() netip.Addr {
	for {
		b := [4]byte{byte(45 + g.rng.IntN(150)), byte(g.rng.IntN(256)), byte(g.rng.IntN(256)), byte(2 + g.rng.IntN(250))}
		key := [3]byte{b[0], b[1], b[2]}
		if g.usedNets[key] || b[0] == 100 || b[0] == 127 || b[0] == 169 || b[0] == 172 || b[0] == 192 {
			continue
		}
		g.usedNets[key] = true
		return netip.AddrFrom4(b)
	}
}

// ciAddr is the address of tenant ti's CI runners.
func ciAddr(ti int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(10 + ti), 254, 21}) }
