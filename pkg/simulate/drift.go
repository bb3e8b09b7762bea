package simulate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// Exposure is where and when a benign variant applies: a false alarm on
// the holder's tokens, or from one of Sources, between From and To counts
// against the variant, and so does each of the holder's tokens in use on a
// day it covers (the normalisation).
type Exposure struct {
	Variant     string    `json:"variant"`
	Tenant      string    `json:"tenant"`
	Holder      string    `json:"holder"`
	Sources     []string  `json:"sources,omitempty"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	Description string    `json:"description"`
}

// brokenClient is a client of a holder retrying with a broken token.
type brokenClient struct {
	h        *holder
	from, to time.Time
	every    Span
	ip       string
}

// eligible returns the holders working since the start, untouched by
// drift so far, of class (any when empty), in a random order.
func (g *gen) eligible(class string, ok func(*holder) bool) []*holder {
	var out []*holder
	for _, h := range g.holders {
		if h.born.Equal(g.start) && !h.drifted && !h.attacked && (class == "" || h.class.Class == class) && (ok == nil || ok(h)) {
			out = append(out, h)
		}
	}
	g.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// activeNear returns the first time from t on, in steps of 15 minutes
// over up to three days, when the holder is busy.
func (g *gen) activeNear(h *holder, t time.Time) time.Time {
	for i := 0; i < 3*24*4; i++ {
		if h.rhythm(t) >= 0.5 {
			break
		}
		t = t.Add(15 * time.Minute)
	}
	return minTime(t, g.end.Add(-3*time.Hour)).Truncate(time.Millisecond)
}

// driftHolders is how many holders a drift concerns, scaled like the
// workloads when Scenario.Holders resizes the world.
func (g *gen) driftHolders(b *BenignSpec) int {
	if g.sc.Holders <= 0 {
		return b.Holders
	}
	total := 0
	for _, w := range g.sc.Workloads {
		total += w.Count
	}
	return max(1, int(math.Round(float64(b.Holders)*float64(g.sc.Holders)/float64(total))))
}

// at draws when a drift happens, kept a day before the end of a
// shortened scenario.
func (g *gen) at(s Span) time.Time {
	d := min(g.span(s), g.end.Sub(g.start)-24*time.Hour)
	return g.start.Add(d).Truncate(time.Millisecond)
}

// planDrift applies the benign drift of the scenario to the world before
// tokens and traffic are generated.
func (g *gen) planDrift() error {
	for i := range g.sc.Benign {
		b := &g.sc.Benign[i]
		tail := b.Within.D()
		n := g.driftHolders(b)
		switch b.Kind {
		case DriftNewHolder:
			for range n {
				w := g.classFor(b.Class)
				born := g.at(b.At)
				h, err := g.newHolder(w, born)
				if err != nil {
					return err
				}
				h.drifted = true
				g.expose(b, h, born, g.end, fmt.Sprintf("%s deployed on %s", h.name, born.Format(time.DateOnly)))
			}
		case DriftNetworkMove:
			hs := g.eligible(b.Class, nil)
			if len(hs) < n {
				return fmt.Errorf("benign %s: %d holders eligible, want %d", b.Variant, len(hs), n)
			}
			for _, h := range hs[:n] {
				at := g.at(b.At)
				p := g.newPhase(h, at)
				h.phases = append(h.phases, p)
				if h.class.NetworkClaim == claimExact {
					// Its tokens are bound to the old networks: the move
					// needs new ones. A token bound to the tenant's /16, or
					// to nothing, simply goes on from the new network.
					h.reissues = append(h.reissues, reissue{at: at, reason: "moved to a new network"})
				}
				h.drifted = true
				g.expose(b, h, at, g.end, fmt.Sprintf("%s moved to %s on %s", h.name, p.nets[0], at.Format(time.DateOnly)))
			}
		case DriftBackfill:
			hs := g.eligible(b.Class, func(h *holder) bool {
				return slices.ContainsFunc(h.calls, func(c call) bool { return c.r.hasID() })
			})
			if len(hs) < n {
				return fmt.Errorf("benign %s: %d holders eligible, want %d", b.Variant, len(hs), n)
			}
			for _, h := range hs[:n] {
				from := g.activeNear(h, g.at(b.At))
				to := from.Add(g.span(b.Over))
				svc := h.audSvc[0]
				h.backfills = append(h.backfills, backfill{from: from, to: to, volume: b.Volume, breadth: b.Breadth, firstID: g.randomID(svc)})
				h.drifted = true
				g.expose(b, h, from, minTime(to.Add(max(tail, 24*time.Hour)), g.end),
					fmt.Sprintf("%s backfill from %s for %s at %.0f× volume", h.name, from.Format(time.DateTime), to.Sub(from).Round(time.Minute), b.Volume))
			}
		case DriftNewRoute:
			svc := g.byName[routeService(&g.sc, b.Route)]
			at := g.at(b.At)
			r := newRoute(svc, RouteSpec{Route: b.Route, Scope: b.Scope}, at)
			svc.routes = append(svc.routes, r)
			g.routes[r.key] = r
			hs := g.eligible(b.Class, func(h *holder) bool { return slices.Contains(h.audSvc, svc) })
			if len(hs) < n {
				return fmt.Errorf("benign %s: %d holders call %s, want %d", b.Variant, len(hs), svc.name, n)
			}
			for _, h := range hs[:n] {
				granted := g.uniform(at, 6*time.Hour)
				sum := 0.0
				for _, c := range h.calls {
					sum += c.weight
				}
				h.calls = append(h.calls, call{r: r, weight: b.Share / (1 - b.Share) * sum, since: granted.Add(time.Duration(10+g.rng.IntN(50)) * time.Minute), granted: granted})
				h.reissues = append(h.reissues, reissue{at: granted, reason: "deployment adds " + b.Scope})
				h.drifted = true
				to := g.end
				if tail > 0 {
					to = minTime(granted.Add(tail), g.end)
				}
				g.expose(b, h, granted, to, fmt.Sprintf("%s starts calling %s on %s", h.name, b.Route, granted.Format(time.DateOnly)))
			}
		case DriftBrokenClient:
			hs := g.eligible(b.Class, nil)
			if len(hs) < n {
				return fmt.Errorf("benign %s: %d holders eligible, want %d", b.Variant, len(hs), n)
			}
			for _, h := range hs[:n] {
				from := g.activeNear(h, g.at(b.At))
				bc := &brokenClient{h: h, from: from, to: from.Add(g.span(b.Over)), every: b.Every, ip: g.pickIP(h, from).String()}
				g.broken = append(g.broken, bc)
				h.drifted = true
				g.exposures = append(g.exposures, Exposure{Variant: b.Variant, Tenant: h.tenant, Holder: h.name, Sources: []string{bc.ip},
					From: from, To: minTime(bc.to.Add(time.Hour), g.end),
					Description: fmt.Sprintf("%s: a client on %s retries with a truncated token for %s", h.name, bc.ip, bc.to.Sub(from).Round(time.Minute))})
			}
		case DriftRotation:
			for _, h := range g.holders {
				if h.class.Tokens.Renew != renewRotate {
					continue
				}
				first := h.born.Add(24 * time.Hour)
				if !first.Before(g.end) {
					continue
				}
				weeks := g.end.Sub(first).Hours() / (7 * 24)
				for n := g.poisson(b.Redeploys * weeks); n > 0; n-- {
					at := g.uniform(first, g.end.Sub(first))
					h.reissues = append(h.reissues, reissue{at: at, reason: "redeploy"})
				}
			}
		}
	}
	for _, h := range g.holders {
		slices.SortFunc(h.reissues, func(a, b reissue) int { return a.at.Compare(b.at) })
	}
	return nil
}

// classFor returns the workload class named, or one drawn by count.
func (g *gen) classFor(name string) *WorkloadSpec {
	if name != "" {
		for i := range g.sc.Workloads {
			if g.sc.Workloads[i].Class == name {
				return &g.sc.Workloads[i]
			}
		}
	}
	ws := make([]float64, len(g.sc.Workloads))
	for i, w := range g.sc.Workloads {
		ws[i] = float64(w.Count)
	}
	return &g.sc.Workloads[g.weighted(ws)]
}

func (g *gen) expose(b *BenignSpec, h *holder, from, to time.Time, desc string) {
	g.exposures = append(g.exposures, Exposure{Variant: b.Variant, Tenant: h.tenant, Holder: h.name, From: from, To: to, Description: desc})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// brokenClients: each retries with a truncated token (the same string:
// the enforcer's negative cache answers after the first) at its spacing.
func (g *gen) brokenClients() {
	for _, bc := range g.broken {
		h := bc.h
		ip := netip.MustParseAddr(bc.ip)
		key := "truncated:" + h.name
		for at := bc.from; at.Before(bc.to) && at.Before(g.end); at = at.Add(g.span(bc.every)) {
			r := g.pickCall(h, at)
			g.send(request{at: at, ip: ip, r: r, resource: g.resource(h, r), agent: h.agent, forged: events.ReasonMalformed, forgedKey: key})
		}
	}
}

// lateExposures adds the exposures known only once tokens are issued:
// daylight-saving changes and token issuance (rotation, re-issue).
func (g *gen) lateExposures() {
	for i := range g.sc.Benign {
		b := &g.sc.Benign[i]
		switch b.Kind {
		case DriftDaylightSaving:
			for _, h := range g.holders {
				from := maxTime(h.born, g.start)
				_, off := from.In(h.loc).Zone()
				for t := from.Truncate(time.Hour).Add(time.Hour); t.Before(g.end); t = t.Add(time.Hour) {
					if _, o := t.In(h.loc).Zone(); o != off {
						g.expose(b, h, t, minTime(t.Add(b.Within.D()), g.end),
							fmt.Sprintf("%s (%s) moves from UTC%+d to UTC%+d", h.name, h.zone, off/3600, o/3600))
						off = o
					}
				}
			}
		case DriftRotation:
			for _, h := range g.holders {
				for _, tv := range h.tokens {
					if tv.attack != 0 || !tv.issued.After(maxTime(h.born, g.start)) {
						continue
					}
					g.expose(b, h, tv.issued, minTime(tv.issued.Add(b.Within.D()), g.end),
						fmt.Sprintf("%s gets token %s", h.name, tv.id))
				}
			}
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
