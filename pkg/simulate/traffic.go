package simulate

import (
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// poisson draws from a Poisson distribution of mean l.
func (g *gen) poisson(l float64) int {
	if l <= 0 {
		return 0
	}
	if l > 30 {
		return max(0, int(math.Round(l+math.Sqrt(l)*g.rng.NormFloat64())))
	}
	limit, k, p := math.Exp(-l), 0, 1.0
	for {
		p *= g.rng.Float64()
		if p <= limit {
			return k
		}
		k++
	}
}

// Fan-outs: an arrival that fans out makes fanoutMin…fanoutMax calls
// within seconds.
const (
	fanoutMin = 2
	fanoutMax = 8
)

func meanBurst(fanout float64) float64 {
	return 1 - fanout + fanout*(fanoutMin+fanoutMax)/2
}

// traffic generates a holder's normal requests: a Poisson process of
// arrivals at its peak rate thinned by its rhythm, some fanning out, from
// its own addresses with its own client, on its usual actions and
// resources, with the occasional misconfigured call; and its backfills.
func (g *gen) traffic(h *holder) {
	w := h.class
	rate := h.rate * g.rateScale
	for hour := h.born.Truncate(time.Hour); hour.Before(g.end); hour = hour.Add(time.Hour) {
		for n := g.poisson(rate / meanBurst(w.Fanout)); n > 0; n-- {
			at := g.uniform(hour, time.Hour)
			if at.Before(h.born) || g.rng.Float64() >= h.rhythm(at) {
				continue
			}
			size := 1
			if g.rng.Float64() < w.Fanout {
				size = fanoutMin + g.rng.IntN(fanoutMax-fanoutMin+1)
			}
			var ip netip.Addr
			for ; size > 0 && at.Before(g.end); size-- {
				tv := h.active(at)
				if tv == nil {
					break
				}
				if !ip.IsValid() {
					ip = g.clientIP(h, tv, at)
				}
				r := g.pickCall(h, at)
				if g.rng.Float64() < w.Misconfigured {
					if m := g.misroute(h, tv); m != nil {
						r = m
					}
				}
				if g.send(request{at: at, tv: tv, ip: ip, r: r, resource: g.resource(h, r), agent: h.agent}) == events.ReasonOK {
					h.allowed = append(h.allowed, at)
				}
				at = at.Add(time.Duration(50+g.rng.IntN(1500)) * time.Millisecond)
			}
		}
	}
	for _, b := range h.backfills {
		g.backfill(h, b)
	}
	slices.SortFunc(h.allowed, func(a, b time.Time) int { return a.Compare(b) })
}

// clientIP is where a client of h holding tv calls from at t: the
// holder's addresses at t — unless tv is bound to networks that exclude
// them (a move under way: the clients still on the old network hold the
// old token, those on the new one the new token).
func (g *gen) clientIP(h *holder, tv *tokenVer, t time.Time) netip.Addr {
	ip := g.pickIP(h, t)
	if len(tv.claims.Networks) > 0 && !inNetworks(tv.claims.Networks, ip) {
		ip = g.pickIP(h, tv.issued)
	}
	return ip
}

// misroute is a route of the holder's audience its token has no scope
// for: a call the code makes that its policy never allowed.
func (g *gen) misroute(h *holder, tv *tokenVer) *route {
	var out []*route
	for _, s := range h.audSvc {
		for _, r := range s.routes {
			if !r.sensitive && r.since.IsZero() && !slices.Contains(tv.claims.Scopes, r.scope) {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	// Always the same mistake for a given holder: a bug, not a probe.
	return out[h.idx%len(out)]
}

// backfill: a one-off job reprocessing a range of records at several times
// the holder's usual volume, walking ids it never touched.
func (g *gen) backfill(h *holder, b backfill) {
	var idRoutes []*route
	for _, c := range h.calls {
		if c.r.hasID() && c.since.IsZero() {
			idRoutes = append(idRoutes, c.r)
		}
	}
	rate := h.rate * g.rateScale * (b.volume - 1)
	next := b.firstID
	for hour := b.from.Truncate(time.Hour); hour.Before(b.to); hour = hour.Add(time.Hour) {
		for n := g.poisson(rate); n > 0; n-- {
			at := g.uniform(hour, time.Hour)
			if at.Before(b.from) || !at.Before(b.to) || !at.Before(g.end) || h.rhythm(at) == 0 {
				continue
			}
			tv := h.active(at)
			if tv == nil {
				continue
			}
			r := g.pickCall(h, at)
			res := g.resource(h, r)
			if len(idRoutes) > 0 && g.rng.Float64() < 0.8 {
				r = idRoutes[g.rng.IntN(len(idRoutes))]
				res = g.paramValues(r, next)
				next++
			}
			if g.send(request{at: at, tv: tv, ip: g.clientIP(h, tv, at), r: r, resource: res, agent: h.agent}) == events.ReasonOK {
				h.allowed = append(h.allowed, at)
			}
		}
	}
}

// paramValues names resource id in every parameter of r.
func (g *gen) paramValues(r *route, id int) string {
	out := ""
	for i, p := range r.params {
		if i > 0 {
			out += "/"
		}
		out += g.paramValue(p, id)
	}
	return out
}

// monitors: uptime checks that call a route without a token, every few
// minutes, all scenario long.
func (g *gen) monitors() {
	for _, m := range g.sc.Monitors {
		r := g.routes[m.Route]
		ip := netip.MustParseAddr(m.From)
		for at := g.start.Add(time.Duration(g.rng.Int64N(int64(m.Every)))); at.Before(g.end); at = at.Add(m.Every.D()) {
			jit := time.Duration(g.rng.Int64N(int64(time.Second)))
			g.send(request{at: at.Add(jit), ip: ip, r: r, resource: g.paramValues(r, 1), agent: m.Agent})
		}
	}
}

// calibrate scales every rate so that normal traffic (monitors included)
// is about Scenario.UsageEvents events, when that is set.
func (g *gen) calibrate() {
	g.rateScale = 1
	if g.sc.UsageEvents <= 0 {
		return
	}
	const step = 20 * time.Minute
	want := 0.0
	for _, h := range g.holders {
		mass := 0.0
		for t := h.born.Add(step / 2); t.Before(g.end); t = t.Add(step) {
			mass += h.rhythm(t) * step.Hours()
		}
		want += h.rate * mass
		for _, b := range h.backfills {
			want += h.rate * (b.volume - 1) * b.to.Sub(b.from).Hours() / 2
		}
	}
	target := float64(g.sc.UsageEvents)
	for _, m := range g.sc.Monitors { // fixed-rate probes count too
		target -= float64(g.end.Sub(g.start) / m.Every.D())
	}
	if want > 0 {
		g.rateScale = max(target, float64(g.sc.UsageEvents)/10) / want
	}
}
