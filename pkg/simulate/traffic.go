package simulate

import (
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// usage records one request with token tv at t from ip to route r (id < 0
// draws a random id) and returns the simulated enforcer's decision.
func (g *gen) usage(tv *tokenVer, at time.Time, ip netip.Addr, r route, id int, agent string, attack int) string {
	svc := g.services[r.svc]
	if id < 0 {
		id = 1 + g.rng.IntN(999_999)
	}
	decision, reason := g.decide(tv, at, ip, r, svc)
	h := tv.lin.h
	g.add(at, "enforcer/"+svc.enforcer, &events.UsageDecided{
		TokenID:   tv.id,
		Tenant:    h.tenant,
		Holder:    h.name,
		KeyID:     keyID,
		Enforcer:  svc.enforcer,
		Service:   svc.name,
		SourceIP:  ip.String(),
		UserAgent: agent,
		Method:    r.method,
		Route:     r.concrete(id),
		Scope:     r.scope,
		Decision:  decision,
		Reason:    reason,
		LatencyNS: 20_000 + g.rng.Int64N(280_000),
	}, attack)
	return decision
}

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

// Normal traffic comes in fan-outs now and then: a request that needs
// several calls (a page of records, a batch) makes burstMin…burstMax of
// them within seconds.
const (
	burstProb = 0.03
	burstMin  = 2
	burstMax  = 8
)

// meanBurst is the mean number of requests per arrival.
const meanBurst = 1 - burstProb + burstProb*(burstMin+burstMax)/2

// traffic generates a holder's normal requests: a Poisson process of
// arrivals at the holder's peak rate thinned by its rhythm, some arrivals
// fanning out into a few requests, split over its tokens, from its own
// addresses, with the occasional misconfigured call.
func (g *gen) traffic(h *holder) {
	for hour := g.start; hour.Before(g.end); hour = hour.Add(time.Hour) {
		for n := g.poisson(h.perHour / meanBurst); n > 0; n-- {
			at := g.uniform(hour, time.Hour)
			if g.rng.Float64() >= h.rhythm(at) {
				continue
			}
			l := h.lineages[0]
			if len(h.lineages) > 1 && g.rng.Float64() >= l.share {
				l = h.lineages[1]
			}
			size := 1
			if g.rng.Float64() < burstProb {
				size = burstMin + g.rng.IntN(burstMax-burstMin+1)
			}
			ip := g.pickIP(h)
			for ; size > 0; size-- {
				tv := l.active(at)
				if tv == nil {
					break
				}
				r := g.pickRoute(l)
				if g.rng.Float64() < g.sc.ScopeMissingRate {
					r = l.bad
				}
				if g.usage(tv, at, ip, r, -1, h.agent, 0) == events.DecisionAllow {
					l.allowed = append(l.allowed, at)
				}
				at = at.Add(time.Duration(50+g.rng.IntN(1500)) * time.Millisecond)
			}
		}
	}
	for _, l := range h.lineages {
		slices.SortFunc(l.allowed, func(a, b time.Time) int { return a.Compare(b) })
	}
}

// finish orders the events in time, gives them their ids and fills in the
// attack labels.
func (g *gen) finish() *Dataset {
	sort.SliceStable(g.recs, func(i, j int) bool { return g.recs[i].at.Before(g.recs[j].at) })
	d := &Dataset{Scenario: g.sc, Events: make([]events.Envelope, 0, len(g.recs))}
	for _, r := range g.recs {
		env := events.Envelope{ID: g.newID(r.at), Type: r.data.EventType(), Time: r.at.UTC(), Source: r.source, Version: events.SchemaVersion, Data: r.data}
		d.Events = append(d.Events, env)
		if env.Type == events.TypeUsageDecided {
			d.UsageEvents++
		} else {
			d.LedgerEvents++
		}
		if r.attack > 0 {
			a := g.attacks[r.attack-1]
			if len(a.EventIDs) == 0 || r.at.Before(a.Start) {
				a.Start = r.at.UTC()
			}
			if r.at.After(a.End) {
				a.End = r.at.UTC()
			}
			a.EventIDs = append(a.EventIDs, env.ID.String())
			d.AttackEvents++
		}
	}
	for _, a := range g.attacks {
		d.Attacks = append(d.Attacks, *a)
	}
	return d
}
