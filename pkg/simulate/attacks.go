package simulate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// Attack kinds.
const (
	// KindLeakedReplay: a leaked token replayed in a burst from a new
	// network at night (the holder's local night).
	KindLeakedReplay = "leaked_replay"
	// KindScopeProbing: a token probing routes and scopes it does not
	// hold, and enumerating sequential ids, from the holder's own address.
	KindScopeProbing = "scope_probing"
	// KindUseAfterRevoke: a token used hours after its revocation — an old
	// token found in a leaked config, one the ledger never showed (revoked
	// before history), or an insider reusing a rotated token.
	KindUseAfterRevoke = "use_after_revoke"
	// KindSlowExfiltration: a handful of reads from a new network spread
	// over hours of the holder's night, far too few for a volume alarm.
	KindSlowExfiltration = "slow_exfiltration"
	// KindSharedToken: the token used from several new networks at once.
	KindSharedToken = "shared_token"
)

// AttackKinds lists the kinds in the order they are injected.
func AttackKinds() []string {
	return []string{KindLeakedReplay, KindScopeProbing, KindUseAfterRevoke, KindSlowExfiltration, KindSharedToken}
}

// Attack labels one injected attack.
type Attack struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	TokenID string `json:"token_id"`
	Tenant  string `json:"tenant"`
	Holder  string `json:"holder"`
	// Start and End are the event times of the attack's first and last
	// event; EventIDs are all its events.
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	EventIDs []string  `json:"event_ids"`
	// ExpectedDetectors are the detectors whose pattern the attack shows;
	// others may fire too.
	ExpectedDetectors []string `json:"expected_detectors"`
	Description       string   `json:"description"`
}

const attackerAgent = "python-requests/2.31.0"

// injectAttacks plans AttacksPerKind attacks of each kind on distinct
// tokens, each after AttackAfter and on a token with a baseline to break.
func (g *gen) injectAttacks() error {
	used := map[*lineage]bool{}
	planners := map[string]func(i int, used map[*lineage]bool) bool{
		KindLeakedReplay:     g.leakedReplay,
		KindScopeProbing:     g.scopeProbing,
		KindUseAfterRevoke:   g.useAfterRevoke,
		KindSlowExfiltration: g.slowExfiltration,
		KindSharedToken:      g.sharedToken,
	}
	for i := 0; i < g.sc.AttacksPerKind; i++ {
		for _, kind := range AttackKinds() {
			ok := false
			for try := 0; try < 2000 && !ok; try++ {
				ok = planners[kind](i, used)
			}
			if !ok {
				return fmt.Errorf("no target for attack %d of kind %s: the scenario is too small", i+1, kind)
			}
		}
	}
	return nil
}

// minHistory is how many allowed uses a target token (lineage) has before
// an attack: the baseline that the attack breaks.
const minHistory = 150

func (l *lineage) history(t time.Time) int {
	return sort.Search(len(l.allowed), func(i int) bool { return !l.allowed[i].Before(t) })
}

// target draws an unused lineage of a holder with one of the profiles.
func (g *gen) target(used map[*lineage]bool, profiles ...profile) (*holder, *lineage) {
	h := g.holders[g.rng.IntN(len(g.holders))]
	if len(profiles) > 0 && !slices.Contains(profiles, h.profile) {
		return nil, nil
	}
	l := h.lineages[g.rng.IntN(len(h.lineages))]
	if used[l] {
		return nil, nil
	}
	return h, l
}

// localAt is hour x (fractional) of the day-th day after the start, in the
// holder's zone.
func (g *gen) localAt(h *holder, day int, x float64) time.Time {
	s := g.start.In(h.loc)
	hh := int(x)
	mm := int((x - float64(hh)) * 60)
	ss := g.rng.IntN(60)
	return time.Date(s.Year(), s.Month(), s.Day()+day, hh, mm, ss, 0, h.loc)
}

// attackDay draws a day after AttackAfter and before the last day.
func (g *gen) attackDay() int {
	lo := int(math.Ceil(g.sc.AttackAfter.Hours() / 24))
	return lo + g.rng.IntN(max(1, g.sc.Days-1-lo))
}

// activeTime draws a time when the holder is normally busy.
func (g *gen) activeTime(h *holder) time.Time {
	switch h.profile {
	case office:
		for {
			t := g.localAt(h, g.attackDay(), g.between(10, 16))
			if wd := t.Weekday(); wd != time.Saturday && wd != time.Sunday {
				return t
			}
		}
	case always:
		return g.localAt(h, g.attackDay(), g.between(10, 16))
	}
	return g.localAt(h, g.attackDay(), g.between(1.5, 3.5))
}

// validToken returns the token clients of l use throughout [t0, end], not
// revoked or expired, with a baseline before t0; nil otherwise.
func (g *gen) validToken(l *lineage, t0, end time.Time) *tokenVer {
	if t0.Before(g.start.Add(g.sc.AttackAfter)) || !end.Before(g.end) || l.history(t0) < minHistory {
		return nil
	}
	tv := l.active(t0)
	if tv == nil || !end.Before(tv.to) || !end.Before(tv.claims.Expiry) {
		return nil
	}
	return tv
}

func (g *gen) newAttack(kind string, tv *tokenVer, desc string, expected ...string) int {
	h := tv.lin.h
	g.attacks = append(g.attacks, &Attack{
		ID: fmt.Sprintf("atk-%02d", len(g.attacks)+1), Kind: kind, TokenID: tv.id, Tenant: h.tenant, Holder: h.name,
		ExpectedDetectors: expected, Description: desc,
	})
	return len(g.attacks)
}

func (l *lineage) reads() []route {
	var out []route
	for _, r := range l.routes {
		if r.read() {
			out = append(out, r)
		}
	}
	return out
}

// times draws n sorted times in [t0, t0+d).
func (g *gen) times(n int, t0 time.Time, d time.Duration) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = g.uniform(t0, d)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func (g *gen) leakedReplay(i int, used map[*lineage]bool) bool {
	h, l := g.target(used, office, always)
	if l == nil {
		return false
	}
	t0 := g.localAt(h, g.attackDay(), g.between(1, 4))
	dur := time.Duration(g.between(2, 6) * float64(time.Minute))
	tv := g.validToken(l, t0, t0.Add(dur))
	if tv == nil {
		return false
	}
	used[l] = true
	n := 300 + g.rng.IntN(301)
	expected := []string{detect.NewNetwork, detect.VolumeSpike}
	if h.profile == office {
		expected = append(expected, detect.OddHours)
	}
	ip := g.attackerIP()
	idx := g.newAttack(KindLeakedReplay, tv, fmt.Sprintf("%d requests in %s from %s at %s local time (%s holder)",
		n, dur.Round(time.Second), ip, t0.Format("Mon 15:04 MST"), profileNames[h.profile]), expected...)
	reads := l.reads()
	for _, at := range g.times(n, t0, dur) {
		g.usage(tv, at, ip, reads[g.rng.IntN(len(reads))], -1, attackerAgent, idx)
	}
	return true
}

func (g *gen) scopeProbing(i int, used map[*lineage]bool) bool {
	h, l := g.target(used)
	if l == nil {
		return false
	}
	// Routes the token may not call: its audience's routes without the
	// scope (scope_missing), and other services' (audience_mismatch).
	var unheld, foreign []route
	for si, s := range g.services {
		for _, r := range s.routes {
			switch {
			case !slices.Contains(l.audSvc, si):
				if r.method == "GET" {
					foreign = append(foreign, r)
				}
			case !slices.Contains(l.scopes, r.scope):
				unheld = append(unheld, r)
			}
		}
	}
	enumerate := i%2 == 0
	if !enumerate && len(unheld) < 6 {
		return false
	}
	t0 := g.activeTime(h)
	dur := time.Duration(g.between(3, 8) * float64(time.Minute))
	tv := g.validToken(l, t0, t0.Add(dur))
	if tv == nil {
		return false
	}
	used[l] = true
	type req struct {
		r  route
		id int
	}
	var reqs []req
	g.rng.Shuffle(len(unheld), func(a, b int) { unheld[a], unheld[b] = unheld[b], unheld[a] })
	g.rng.Shuffle(len(foreign), func(a, b int) { foreign[a], foreign[b] = foreign[b], foreign[a] })
	desc := ""
	if enumerate {
		svc := g.services[l.audSvc[g.rng.IntN(len(l.audSvc))]]
		r := svc.routes[0] // GET /{id}: scraping records it may read
		if g.rng.Float64() < 0.5 {
			r = svc.routes[5] // DELETE /{id}: walking ids it may not touch
		}
		first, k := 1000+g.rng.IntN(90_000), 12+g.rng.IntN(19)
		for j := 0; j < k; j++ {
			reqs = append(reqs, req{r, first + j})
		}
		for _, r := range unheld[:min(len(unheld), 2+g.rng.IntN(3))] {
			reqs = append(reqs, req{r, -1})
		}
		desc = fmt.Sprintf("enumeration of %d sequential ids on %s %s and %d other probes", k, r.method, r.path, len(reqs)-k)
	} else {
		n := min(len(unheld), 6+g.rng.IntN(5))
		for _, r := range unheld[:n] {
			reqs = append(reqs, req{r, -1})
			if g.rng.Float64() < 0.4 {
				reqs = append(reqs, req{r, -1})
			}
		}
		desc = fmt.Sprintf("%d distinct routes without scope", n)
	}
	nf := 2 + g.rng.IntN(4)
	for _, r := range foreign[:min(len(foreign), nf)] {
		reqs = append(reqs, req{r, -1})
	}
	if !enumerate {
		g.rng.Shuffle(len(reqs), func(a, b int) { reqs[a], reqs[b] = reqs[b], reqs[a] })
	}
	ip := g.pickIP(h)
	idx := g.newAttack(KindScopeProbing, tv, fmt.Sprintf("%s, %d requests in %s from the holder's own %s", desc, len(reqs), dur.Round(time.Second), ip), detect.ScopeProbing)
	for j, at := range g.times(len(reqs), t0, dur) {
		g.usage(tv, at, ip, reqs[j].r, reqs[j].id, h.agent, idx)
	}
	return true
}

func (g *gen) useAfterRevoke(i int, used map[*lineage]bool) bool {
	h, l := g.target(used)
	if l == nil {
		return false
	}
	variant := i % 4
	var tv *tokenVer
	var t0 time.Time
	if variant == 1 {
		// A token revoked before history began: no ledger event for it.
		born := g.start.Add(-time.Duration(20+g.rng.IntN(40)) * 24 * time.Hour)
		tv = &tokenVer{id: g.newID(born).String(), lin: l, issued: born, revokedAt: g.start.Add(-time.Duration(1+g.rng.IntN(14)) * 24 * time.Hour)}
		tv.claims = events.TokenClaims{Scopes: l.scopes, Audience: l.audience, Expiry: g.end.Add(30 * 24 * time.Hour)}
		t0 = g.uniform(g.start.Add(g.sc.AttackAfter), g.end.Sub(g.start.Add(g.sc.AttackAfter))-2*time.Hour)
	} else {
		var revoked []*tokenVer
		for _, v := range l.tokens {
			if !v.revokedAt.IsZero() && l.history(v.revokedAt) >= minHistory {
				revoked = append(revoked, v)
			}
		}
		if len(revoked) == 0 {
			return false
		}
		tv = revoked[g.rng.IntN(len(revoked))]
		t0 = tv.revokedAt.Add(time.Duration(g.between(2, 30) * float64(time.Hour)))
		if t0.Before(g.start.Add(g.sc.AttackAfter)) {
			return false
		}
	}
	dur := time.Duration(g.between(10, 60) * float64(time.Minute))
	if !t0.Add(dur).Before(g.end) {
		return false
	}
	used[l] = true
	ip := g.attackerIP()
	expected := []string{detect.UseAfterRevoke, detect.NewNetwork}
	var desc string
	switch variant {
	case 1:
		expected = expected[:1]
		desc = fmt.Sprintf("token revoked on %s, before history, used from %s", tv.revokedAt.Format(time.DateOnly), ip)
	case 2:
		ip = g.pickIP(h)
		expected = expected[:1]
		desc = fmt.Sprintf("rotated token reused %s after its revocation from the holder's own %s", t0.Sub(tv.revokedAt).Round(time.Minute), ip)
	default:
		desc = fmt.Sprintf("rotated token found in a leaked config, used %s after its revocation from %s", t0.Sub(tv.revokedAt).Round(time.Minute), ip)
	}
	n := 5 + g.rng.IntN(11)
	idx := g.newAttack(KindUseAfterRevoke, tv, fmt.Sprintf("%s: %d requests in %s", desc, n, dur.Round(time.Second)), expected...)
	reads := l.reads()
	for _, at := range g.times(n, t0, dur) {
		g.usage(tv, at, ip, reads[g.rng.IntN(len(reads))], -1, attackerAgent, idx)
	}
	return true
}

func (g *gen) slowExfiltration(i int, used map[*lineage]bool) bool {
	h, l := g.target(used, office, always)
	if l == nil {
		return false
	}
	t0 := g.localAt(h, g.attackDay(), g.between(0.5, 2))
	dur := time.Duration(g.between(3, 6) * float64(time.Hour))
	tv := g.validToken(l, t0, t0.Add(dur))
	if tv == nil {
		return false
	}
	used[l] = true
	n := 6 + g.rng.IntN(7)
	expected := []string{detect.NewNetwork}
	if h.profile == office {
		expected = append(expected, detect.OddHours)
	}
	ip := g.attackerIP()
	idx := g.newAttack(KindSlowExfiltration, tv, fmt.Sprintf("%d reads over %s from %s starting %s local time (%s holder)",
		n, dur.Round(time.Minute), ip, t0.Format("Mon 15:04 MST"), profileNames[h.profile]), expected...)
	reads := l.reads()
	for _, at := range g.times(n, t0, dur) {
		g.usage(tv, at, ip, reads[g.rng.IntN(len(reads))], -1, attackerAgent, idx)
	}
	return true
}

func (g *gen) sharedToken(i int, used map[*lineage]bool) bool {
	h, l := g.target(used)
	if l == nil {
		return false
	}
	t0 := g.activeTime(h)
	dur := time.Duration(g.between(5, 10) * float64(time.Minute))
	tv := g.validToken(l, t0, t0.Add(dur))
	if tv == nil {
		return false
	}
	used[l] = true
	k := 3 + g.rng.IntN(3)
	ips := make([]netip.Addr, k)
	for j := range ips {
		ips[j] = g.attackerIP()
	}
	idx := g.newAttack(KindSharedToken, tv, fmt.Sprintf("used from %d new networks within %s, alongside the holder", k, dur.Round(time.Second)),
		detect.MultiNetwork, detect.NewNetwork)
	for _, ip := range ips {
		for _, at := range g.times(3+g.rng.IntN(6), t0, dur) {
			g.usage(tv, at, ip, g.pickRoute(l), -1, h.agent, idx)
		}
	}
	return true
}
