package simulate

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

var (
	tenantNames  = []string{"acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"}
	serviceNames = []string{"orders", "billing", "users", "inventory", "payments", "search", "reports", "shipping", "catalog", "notify", "ledger", "pricing", "reviews", "media", "audit", "profiles"}
	holderRoles  = []string{"checkout", "invoicer", "sync", "reporter", "indexer", "mailer", "exporter", "gateway", "scheduler", "reconciler", "crawler", "importer", "webhook", "analytics", "fulfilment", "settlement"}
	zoneNames    = []string{"Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Los_Angeles", "Australia/Sydney", "UTC", "Asia/Kolkata"}
)

// Deny reasons of the simulated enforcer beyond those detect knows.
const (
	ReasonNetwork  = "network_not_allowed"
	ReasonWindow   = "outside_window"
	ReasonAudience = "audience_mismatch"
)

// profile is a holder's rhythm.
type profile int

const (
	// office: weekdays, business hours in its zone, with a window claim.
	office profile = iota
	// always: around the clock, busier in the day, quieter on weekends.
	always
	// batch: a nightly job, 01:00–05:00 in its zone, with a window claim.
	batch
)

var profileNames = [...]string{"office", "always-on", "nightly-batch"}

type service struct {
	name     string // "orders-api"
	resource string // "orders"
	enforcer string
	routes   []route
}

type route struct {
	method string
	path   string // "{id}" marks the id segment
	scope  string
	svc    int
}

func (r route) concrete(id int) string {
	return strings.Replace(r.path, "{id}", strconv.Itoa(id), 1)
}

func (r route) read() bool { return r.method == "GET" && strings.HasSuffix(r.scope, ":read") }

type holder struct {
	idx       int
	tenant    string
	name      string
	profile   profile
	zoneName  string
	loc       *time.Location
	window    *events.Window
	nets      []netip.Prefix
	netWeight []float64
	pools     [][]netip.Addr
	claimNets []string
	agent     string
	perHour   float64 // requests per hour at the peak of its rhythm
	lineages  []*lineage
}

// lineage is one token of a holder and its successors.
type lineage struct {
	h        *holder
	share    float64
	scopes   []string
	audience []string
	audSvc   []int
	routes   []route // callable: audience and scope held
	bad      route   // a route of its audience it has no scope for
	tokens   []*tokenVer
	allowed  []time.Time // times of normal allowed uses, sorted
}

// tokenVer is one token: its claims, when clients use it and how it ends.
type tokenVer struct {
	id        string
	lin       *lineage
	issued    time.Time
	from, to  time.Time // clients present it in [from, to)
	revokedAt time.Time
	claims    events.TokenClaims
}

// active returns the lineage's token clients use at t, or nil.
func (l *lineage) active(t time.Time) *tokenVer {
	for _, tv := range l.tokens {
		if !t.Before(tv.from) && t.Before(tv.to) {
			return tv
		}
	}
	return nil
}

// rhythm is the holder's activity at t, between 0 and 1.
func (h *holder) rhythm(t time.Time) float64 {
	lt := t.In(h.loc)
	x := float64(lt.Hour()) + float64(lt.Minute())/60 + float64(lt.Second())/3600
	wd := lt.Weekday()
	weekendDay := wd == time.Saturday || wd == time.Sunday
	switch h.profile {
	case office:
		start, end := windowHours(h.window)
		if weekendDay || x < start || x >= end {
			return 0
		}
		v := 0.35 + 0.65*math.Sin(math.Pi*(x-start)/(end-start))
		if x >= 12 && x < 13 {
			v *= 0.7
		}
		return v
	case always:
		v := 0.18 + 0.82*math.Exp(-((x-14)/4.5)*((x-14)/4.5))
		if weekendDay {
			v *= 0.45
		}
		return v
	default:
		if x >= 1 && x < 5 {
			return 1
		}
		return 0
	}
}

func windowHours(w *events.Window) (float64, float64) {
	return hhmm(w.Start), hhmm(w.End)
}

func hhmm(s string) float64 {
	h, _ := strconv.Atoi(s[:2])
	m, _ := strconv.Atoi(s[3:])
	return float64(h) + float64(m)/60
}

// zone loads a time zone once.
func (g *gen) zone(name string) (*time.Location, error) {
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

// inWindow reports whether t is inside one of the windows.
func (g *gen) inWindow(ws []events.Window, t time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for _, w := range ws {
		loc, err := g.zone(w.Zone)
		if err != nil {
			continue
		}
		lt := t.In(loc)
		day := strings.ToLower(lt.Weekday().String()[:3])
		x := float64(lt.Hour()) + float64(lt.Minute())/60
		s, e := windowHours(&w)
		for _, d := range w.Days {
			if d == day && x >= s && x < e {
				return true
			}
		}
	}
	return false
}

// decide is the simulated enforcer: the same checks, in the same order, as
// a real one would make.
func (g *gen) decide(tv *tokenVer, at time.Time, ip netip.Addr, r route, svc *service) (decision, reason string) {
	c := &tv.claims
	switch {
	case !tv.revokedAt.IsZero() && !at.Before(tv.revokedAt):
		return events.DecisionDeny, reasonRevoked
	case !at.Before(c.Expiry):
		return events.DecisionDeny, reasonExpired
	case len(c.Networks) > 0 && !inNetworks(c.Networks, ip):
		return events.DecisionDeny, ReasonNetwork
	case !g.inWindow(c.Windows, at):
		return events.DecisionDeny, ReasonWindow
	case !contains(c.Audience, svc.name):
		return events.DecisionDeny, ReasonAudience
	case !contains(c.Scopes, r.scope):
		return events.DecisionDeny, reasonScopeMissing
	}
	return events.DecisionAllow, "ok"
}

func inNetworks(nets []string, ip netip.Addr) bool {
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// buildWorld makes the services and holders.
func (g *gen) buildWorld() error {
	sc := g.sc
	for i := 0; i < sc.Services; i++ {
		res := serviceNames[i]
		s := &service{name: res + "-api", resource: res, enforcer: "enf-" + res + "-api"}
		base := "/v1/" + res
		for _, r := range []route{
			{method: "GET", path: base + "/{id}", scope: res + ":read"},
			{method: "GET", path: base, scope: res + ":read"},
			{method: "GET", path: base + "/{id}/history", scope: res + ":read"},
			{method: "POST", path: base, scope: res + ":write"},
			{method: "PUT", path: base + "/{id}", scope: res + ":write"},
			{method: "DELETE", path: base + "/{id}", scope: res + ":admin"},
			{method: "GET", path: base + "/export", scope: res + ":export"},
			{method: "GET", path: "/v1/admin/" + res + "/settings", scope: res + ":admin"},
		} {
			r.svc = i
			s.routes = append(s.routes, r)
		}
		g.services = append(g.services, s)
	}
	for i := 0; i < sc.Holders; i++ {
		ti := i % sc.Tenants
		h := &holder{idx: i, tenant: tenantNames[ti]}
		h.name = fmt.Sprintf("%s-%d", holderRoles[g.rng.IntN(len(holderRoles))], i)
		switch p := g.rng.Float64(); {
		case p < 0.5:
			h.profile = office
		case p < 0.85:
			h.profile = always
		default:
			h.profile = batch
		}
		h.zoneName = zoneNames[g.rng.IntN(len(zoneNames))]
		loc, err := g.zone(h.zoneName)
		if err != nil {
			return err
		}
		h.loc = loc
		switch h.profile {
		case office:
			start := []string{"07:00", "08:00"}[g.rng.IntN(2)]
			end := []string{"19:00", "20:00"}[g.rng.IntN(2)]
			h.window = &events.Window{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: start, End: end, Zone: h.zoneName}
		case batch:
			h.window = &events.Window{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Start: "01:00", End: "05:00", Zone: h.zoneName}
		}
		g.holderNetworks(h, ti)
		h.agent = fmt.Sprintf("%s/1.%d go-http-client", strings.SplitN(h.name, "-", 2)[0], g.rng.IntN(9))
		nLin := 1
		if g.rng.Float64() < 0.2 {
			nLin = 2
		}
		for k := 0; k < nLin; k++ {
			l := g.newLineage(h)
			l.share = 1
			if nLin == 2 {
				l.share = []float64{0.7, 0.3}[k]
			}
			h.lineages = append(h.lineages, l)
		}
		g.holders = append(g.holders, h)
	}
	return nil
}

// holderNetworks gives a holder one or two networks (IPv4 /24s, some IPv6
// /64s), a small pool of addresses in each, and its network claims.
func (g *gen) holderNetworks(h *holder, tenant int) {
	nNets := 1
	if g.rng.Float64() < 0.3 {
		nNets = 2
	}
	for k := 0; k < nNets; k++ {
		var p netip.Prefix
		if k == 1 && g.rng.Float64() < 0.5 {
			a := netip.AddrFrom16([16]byte{0xfd, 0x00, byte(10 + tenant), 0, 0, byte(h.idx), 0, byte(k)})
			p = netip.PrefixFrom(a, 64)
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(10 + tenant), byte(2*h.idx + k), 0}), 24)
		}
		h.nets = append(h.nets, p)
		pool := make([]netip.Addr, 2+g.rng.IntN(4))
		for j := range pool {
			b := p.Addr().As16()
			if p.Addr().Is4() {
				b4 := p.Addr().As4()
				b4[3] = byte(10 + j*7 + g.rng.IntN(5))
				pool[j] = netip.AddrFrom4(b4)
				continue
			}
			b[15] = byte(10 + j)
			b[14] = byte(g.rng.IntN(256))
			pool[j] = netip.AddrFrom16(b)
		}
		h.pools = append(h.pools, pool)
	}
	h.netWeight = []float64{1}
	if nNets == 2 {
		h.netWeight = []float64{0.65, 0.35}
	}
	switch p := g.rng.Float64(); {
	case p < 0.6:
		for _, n := range h.nets {
			h.claimNets = append(h.claimNets, n.String())
		}
	case p < 0.8:
		h.claimNets = append(h.claimNets, fmt.Sprintf("10.%d.0.0/16", 10+tenant))
		for _, n := range h.nets[1:] {
			if n.Addr().Is6() {
				h.claimNets = append(h.claimNets, n.String())
			}
		}
	}
}

// newLineage picks a token's audience and scopes.
func (g *gen) newLineage(h *holder) *lineage {
	l := &lineage{h: h}
	nAud := 1 + g.rng.IntN(3)
	for _, si := range g.rng.Perm(len(g.services))[:nAud] {
		s := g.services[si]
		l.audSvc = append(l.audSvc, si)
		l.audience = append(l.audience, s.name)
		l.scopes = append(l.scopes, s.resource+":read")
		if g.rng.Float64() < 0.5 {
			l.scopes = append(l.scopes, s.resource+":write")
		}
	}
	for _, si := range l.audSvc {
		for _, r := range g.services[si].routes {
			if contains(l.scopes, r.scope) {
				l.routes = append(l.routes, r)
			}
		}
	}
	first := g.services[l.audSvc[0]]
	l.bad = first.routes[5] // DELETE needs :admin, which no holder has
	if g.rng.Float64() < 0.5 {
		l.bad = first.routes[6] // export
	}
	return l
}

// pickRoute draws a callable route, reads being far more common.
func (g *gen) pickRoute(l *lineage) route {
	for {
		r := l.routes[g.rng.IntN(len(l.routes))]
		if r.read() || g.rng.Float64() < 0.25 {
			return r
		}
	}
}

// pickIP draws one of the holder's own addresses.
func (g *gen) pickIP(h *holder) netip.Addr {
	k := 0
	if len(h.nets) > 1 && g.rng.Float64() >= h.netWeight[0] {
		k = 1
	}
	pool := h.pools[k]
	return pool[g.rng.IntN(len(pool))]
}

// attackerIP returns an address in a fresh public /24 no holder uses.
func (g *gen) attackerIP() netip.Addr {
	for {
		b := [4]byte{byte(45 + g.rng.IntN(50)), byte(g.rng.IntN(256)), byte(g.rng.IntN(256)), byte(2 + g.rng.IntN(250))}
		key := [3]byte{b[0], b[1], b[2]}
		if g.usedNets[key] {
			continue
		}
		g.usedNets[key] = true
		return netip.AddrFrom4(b)
	}
}
