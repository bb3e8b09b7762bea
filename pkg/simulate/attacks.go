package simulate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Attack labels one injected attack.
type Attack struct {
	ID string `json:"id"`
	// Variant is the AttackSpec it was made from.
	Variant string `json:"variant"`
	// TokenIDs are the tokens the attacker presented (none for forged
	// ones); Sources the addresses the attack came from.
	TokenIDs []string `json:"token_ids,omitempty"`
	Sources  []string `json:"sources"`
	// Tenant and Holder attacked (empty for forged tokens).
	Tenant string `json:"tenant,omitempty"`
	Holder string `json:"holder,omitempty"`
	// Start and End are the event times of its first and last event;
	// DetectBy the latest event time of an anomaly that still detects it.
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	DetectBy time.Time `json:"detect_by"`
	// EventIDs are all its events (usage, and the issuance of minted
	// tokens).
	EventIDs    []string `json:"event_ids"`
	Description string   `json:"description"`

	within time.Duration
}

// unknownKid is the key id an attacker's token names when it names a key
// the enforcers do not have (one retired long ago).
const unknownKid = "sig-2024-01"

// attackPlan is an attack being made.
type attackPlan struct {
	spec *AttackSpec
	idx  int // 1 + index into gen.attacks
	h    *holder
}

// prepareLearning deploys the holders that learning-target attacks need:
// new workloads whose token leaks in their first hours.
func (g *gen) prepareLearning() error {
	g.learning = map[*AttackSpec][]*holder{}
	for i := range g.sc.Attacks {
		a := &g.sc.Attacks[i]
		if a.Target != TargetLearning {
			continue
		}
		lo := g.start.Add(24 * time.Hour)
		span := g.end.Sub(lo) - 2*24*time.Hour
		if span <= 0 {
			return fmt.Errorf("attack %s: the scenario is too short to deploy a new holder in it", a.Variant)
		}
		for range g.attackCount(a) {
			w := g.classFor("")
			for try := 0; w.Tokens.Renew != renewRotate && try < 100; try++ {
				w = g.classFor("") // a workload that holds one token at a time, rotated
			}
			h, err := g.newHolder(w, g.uniform(lo, span).Truncate(time.Millisecond))
			if err != nil {
				return err
			}
			h.attacked = true
			g.learning[a] = append(g.learning[a], h)
		}
	}
	return nil
}

func (g *gen) attackCount(a *AttackSpec) int {
	if g.sc.AttacksPerKind > 0 {
		return g.sc.AttacksPerKind
	}
	return a.Count
}

// injectAttacks makes every attack of the scenario, each on its own token.
func (g *gen) injectAttacks() error {
	for i := range g.sc.Attacks {
		a := &g.sc.Attacks[i]
		for k := range g.attackCount(a) {
			ok := false
			for try := 0; try < 600 && !ok; try++ {
				ok = g.attack(a, k, try)
			}
			if !ok {
				return fmt.Errorf("attack %s #%d: no holder and time fit it: the scenario is too small or too short", a.Variant, k+1)
			}
		}
	}
	return nil
}

// attack tries to make the k-th attack of spec a; false to try again.
func (g *gen) attack(a *AttackSpec, k, try int) bool {
	if a.Token == TokenNone {
		return g.forgery(a)
	}
	var h *holder
	if a.Target == TargetLearning {
		h = g.learning[a][k]
	} else if h = g.learntTarget(try); h == nil {
		return false
	}
	n := g.count(a.Requests)
	dur := g.span(a.Over)
	if !a.Every.IsZero() {
		dur = time.Duration(n-1) * a.Every.Max
	}
	var t0 time.Time
	var tv *tokenVer
	switch {
	case a.Target == TargetLearning:
		first := h.firstToken()
		if first == nil {
			return false
		}
		t0 = first.issued.Add(g.span(a.After))
	case a.Token == TokenRevoked:
		var revoked []*tokenVer
		for _, v := range h.tokens {
			if v.attack == 0 && !v.revokedAt.IsZero() {
				revoked = append(revoked, v)
			}
		}
		if len(revoked) == 0 {
			return false
		}
		tv = revoked[g.rng.IntN(len(revoked))]
		t0 = tv.revokedAt.Add(g.span(a.After))
	default:
		t0 = g.attackTime(h, a.When)
	}
	t0 = t0.Truncate(time.Millisecond)
	if t0.IsZero() || (a.Target == TargetLearnt && t0.Before(g.start.Add(g.sc.AttackAfter))) || !t0.Add(dur).Before(g.end.Add(-time.Hour)) {
		return false
	}
	if a.Target == TargetLearnt && !g.farFromOtherAttacks(h, t0, try) {
		return false
	}
	end := t0.Add(dur)
	switch a.Token {
	case TokenCurrent:
		if tv = h.active(t0); tv == nil || !end.Before(tv.to) || !end.Before(tv.claims.Expiry) || (!tv.revokedAt.IsZero() && !end.Before(tv.revokedAt)) {
			return false
		}
	case TokenRevokedBeforeHistory:
		issued := g.start.Add(-time.Duration(20+g.rng.IntN(40)) * 24 * time.Hour).Truncate(time.Second)
		tv = &tokenVer{id: g.newID(issued).String(), h: h, issued: issued, claims: g.claimsAt(h, issued)}
		tv.revokedAt = issued.Add(time.Duration(g.rng.Int64N(int64(h.class.Tokens.TTL.D() / 2))))
	}
	if tv != nil && a.Token != TokenRevokedBeforeHistory && slices.ContainsFunc(g.attacks, func(x *Attack) bool { return slices.Contains(x.TokenIDs, tv.id) }) {
		return false
	}
	plan := &attackPlan{spec: a, h: h}
	g.attacks = append(g.attacks, &Attack{ID: fmt.Sprintf("atk-%02d", len(g.attacks)+1), Variant: a.Variant, Tenant: h.tenant, Holder: h.name})
	plan.idx = len(g.attacks)
	atk := g.attacks[plan.idx-1]
	h.attacked = true
	h.attackTimes = append(h.attackTimes, t0)

	agent := h.agent
	if a.Client == ClientAttacker {
		agent = g.attackerAgent(h)
	}
	ips := g.attackSources(a, h, t0)
	for _, ip := range ips {
		atk.Sources = append(atk.Sources, ip.String())
	}
	tokens := []*tokenVer{tv}
	if a.Token == TokenMinted {
		tokens = g.mint(plan, g.count(a.Tokens), t0, dur, ips[0], agent)
	}
	for _, v := range tokens {
		atk.TokenIDs = append(atk.TokenIDs, v.id)
	}
	sent := 0
	for _, v := range tokens {
		for _, ip := range ips {
			from, span := t0, dur
			if len(tokens) > 1 { // minted tokens: each used right after its issuance
				from = v.issued.Add(time.Duration(1+g.rng.IntN(20)) * time.Second)
				span = dur / time.Duration(len(tokens)) / 2
			}
			times := g.attackTimes(a, n, from, span)
			targets := g.actionPlan(a, h, v, n, from)
			for j, at := range times {
				g.send(request{at: at, tv: v, ip: ip, r: targets[j].r, resource: targets[j].res, agent: agent, label: label{attack: plan.idx}})
				sent++
			}
		}
	}
	atk.within = a.DetectWithin.D()
	atk.Description = fmt.Sprintf("%s: %d requests from %s with %s, starting %s local (%s holder %s), %s",
		a.Variant, sent, describeSources(atk.Sources), normalizeClient(agent), t0.In(h.loc).Format("Mon 15:04 MST"), h.class.Rhythm, h.name, strings.TrimSpace(firstSentence(a.Description)))
	return true
}

// learntTarget picks a holder working since the start and untouched by
// drift, those not attacked yet first.
func (g *gen) learntTarget(try int) *holder {
	var fresh, used []*holder
	for _, h := range g.holders {
		if !h.born.Equal(g.start) || h.drifted {
			continue
		}
		if len(h.attackTimes) == 0 && !h.attacked {
			fresh = append(fresh, h)
		} else if len(h.attackTimes) > 0 {
			used = append(used, h)
		}
	}
	if len(fresh) > 0 && try < 400 {
		return fresh[g.rng.IntN(len(fresh))]
	}
	if len(used) == 0 {
		return nil
	}
	return used[g.rng.IntN(len(used))]
}

// farFromOtherAttacks: two attacks on one holder are three days apart, so
// that one does not hide in the other's aftermath — or, in a world too
// small for that (late tries), six hours apart.
func (g *gen) farFromOtherAttacks(h *holder, t0 time.Time, try int) bool {
	gap := 3 * 24 * time.Hour
	if try >= 500 {
		gap = 6 * time.Hour
	}
	for _, t := range h.attackTimes {
		if d := t0.Sub(t); d < gap && d > -gap {
			return false
		}
	}
	return true
}

// firstToken returns the holder's first own token.
func (h *holder) firstToken() *tokenVer {
	for _, tv := range h.tokens {
		if tv.attack == 0 {
			return tv
		}
	}
	return nil
}

// attackTime draws a time after AttackAfter at which the holder is quiet,
// busy, or any.
func (g *gen) attackTime(h *holder, when string) time.Time {
	lo := g.start.Add(g.sc.AttackAfter)
	span := g.end.Sub(lo) - 2*time.Hour
	for range 300 {
		t := g.uniform(lo, span)
		switch {
		case when == WhenOffHours && h.quiet(t):
			return t
		case when == WhenActive && h.rhythm(t) >= 0.4:
			return t
		case when == WhenAny:
			return t
		}
	}
	return time.Time{}
}

// attackTimes spreads n requests over span from t0, or spaces them.
func (g *gen) attackTimes(a *AttackSpec, n int, t0 time.Time, span time.Duration) []time.Time {
	out := make([]time.Time, n)
	if !a.Every.IsZero() {
		t := t0
		for i := range out {
			out[i] = t
			t = t.Add(g.span(a.Every)).Truncate(time.Millisecond)
		}
		return out
	}
	for i := range out {
		out[i] = g.uniform(t0, span)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// attackerAgent draws an attacker's tool, one that does not report the
// holder's own client when there is such a tool.
func (g *gen) attackerAgent(h *holder) string {
	var others []string
	for _, ua := range g.sc.AttackerClients {
		if normalizeClient(ua) != normalizeClient(h.agent) {
			others = append(others, ua)
		}
	}
	if len(others) == 0 {
		others = g.sc.AttackerClients
	}
	return others[g.rng.IntN(len(others))]
}

// attackSources returns the addresses the attack comes from.
func (g *gen) attackSources(a *AttackSpec, h *holder, t0 time.Time) []netip.Addr {
	switch a.From {
	case FromNewNetworks:
		ips := make([]netip.Addr, g.count(a.Networks))
		for i := range ips {
			ips[i] = g.attackerIP()
		}
		return ips
	case FromHolderAddress:
		return []netip.Addr{g.pickIP(h, t0)}
	case FromHolderNetwork:
		p := h.phaseAt(t0)
		return []netip.Addr{hostIn(p.nets[0], 200+g.rng.IntN(50))}
	}
	return []netip.Addr{g.attackerIP()}
}

func describeSources(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return fmt.Sprintf("%d networks (%s, …)", len(s), s[0])
}

func firstSentence(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if i := strings.Index(s, ". "); i > 0 {
		return s[:i+1]
	}
	return s
}

// mint issues n tokens for the holder, requested by the attacker (a stolen
// deployment credential) from ip with agent, spread over the attack.
func (g *gen) mint(p *attackPlan, n int, t0 time.Time, dur time.Duration, ip netip.Addr, agent string) []*tokenVer {
	h := p.h
	out := make([]*tokenVer, n)
	for i := range out {
		at := t0.Add(dur * time.Duration(i) / time.Duration(n)).Truncate(time.Millisecond)
		claims := g.claimsAt(h, at)
		claims.Scopes = append(claims.Scopes, h.class.Ceiling...)
		claims.Audience = nil
		for _, s := range g.servicesOf(claims.Scopes) {
			claims.Audience = append(claims.Audience, s.name)
		}
		tv := &tokenVer{id: g.newID(at).String(), h: h, issued: at, from: at, to: at, claims: claims, attack: p.idx}
		h.tokens = append(h.tokens, tv)
		g.add(at, sourceIssuer, &events.TokenIssued{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, KeyID: g.sc.Enforcer.KeyID,
			Claims: claims, Actor: "ci-deployer@" + h.tenant, Requested: &events.IssuanceContext{SourceIP: ip.String(), Client: normalizeClient(agent)}},
			label{attack: p.idx})
		out[i] = tv
	}
	return out
}

// target is one request's route and resource.
type target struct {
	r   *route
	res string
}

// actionPlan is what n requests of the attack do with token tv.
func (g *gen) actionPlan(a *AttackSpec, h *holder, tv *tokenVer, n int, t0 time.Time) []target {
	covered := func(r *route) bool {
		return slices.Contains(tv.claims.Audience, r.svc.name) &&
			slices.ContainsFunc(tv.claims.Scopes, func(s string) bool { return token.ScopeCovers(s, r.scope) })
	}
	inAudience := func(r *route) bool { return slices.Contains(tv.claims.Audience, r.svc.name) }
	pick := func(pred func(*route) bool) []*route {
		var out []*route
		for _, s := range g.services {
			for _, r := range s.routes {
				if r.since.IsZero() && pred(r) {
					out = append(out, r)
				}
			}
		}
		return out
	}
	usualReads := func() []*route {
		var out []*route
		for _, c := range h.calls {
			if c.r.read() && c.since.IsZero() {
				out = append(out, c.r)
			}
		}
		return out
	}
	seq := g.randomID(h.audSvc[0])
	used := map[int]bool{}
	id := func(r *route) string {
		if !r.hasID() {
			return ""
		}
		switch a.IDs {
		case IDsSequential:
			seq++
			return g.paramValues(r, seq)
		case IDsRandom:
			for {
				x := g.randomID(r.svc)
				if !used[x] {
					used[x] = true
					return g.paramValues(r, x)
				}
			}
		}
		return g.resource(h, r)
	}
	var routes []*route
	cycle := false
	switch a.Actions {
	case ActUsual:
		for range n {
			routes = append(routes, g.pickCall(h, t0))
		}
	case ActUsualReads:
		routes = usualReads()
	case ActUnseenAllowed:
		routes = pick(func(r *route) bool {
			return covered(r) && !slices.ContainsFunc(h.calls, func(c call) bool { return c.r == r })
		})
		if len(routes) == 0 {
			routes = usualReads()
		}
	case ActProbe:
		unheld := pick(func(r *route) bool { return inAudience(r) && !covered(r) })
		foreign := pick(func(r *route) bool { return !inAudience(r) && r.read() })
		g.rng.Shuffle(len(unheld), func(i, j int) { unheld[i], unheld[j] = unheld[j], unheld[i] })
		g.rng.Shuffle(len(foreign), func(i, j int) { foreign[i], foreign[j] = foreign[j], foreign[i] })
		routes = append(unheld, foreign[:min(len(foreign), 3+g.rng.IntN(4))]...)
		g.rng.Shuffle(len(routes), func(i, j int) { routes[i], routes[j] = routes[j], routes[i] })
		cycle = true
	case ActSensitive:
		routes = pick(func(r *route) bool { return r.sensitive && covered(r) })
		if len(routes) == 0 {
			routes = pick(func(r *route) bool { return r.sensitive && inAudience(r) })
		}
	case ActSweepHeld:
		cands := []*route{}
		for _, r := range usualReads() {
			if r.hasID() {
				cands = append(cands, r)
			}
		}
		if len(cands) == 0 {
			cands = pick(func(r *route) bool { return covered(r) && r.hasID() })
		}
		routes = cands[g.rng.IntN(len(cands)):][:1]
	case ActSweepUnheld:
		cands := pick(func(r *route) bool { return inAudience(r) && !covered(r) && r.hasID() })
		if len(cands) == 0 {
			cands = pick(func(r *route) bool { return !inAudience(r) && r.hasID() })
		}
		routes = cands[g.rng.IntN(len(cands)):][:1]
	}
	if len(routes) == 0 {
		routes = []*route{g.pickCall(h, t0)}
	}
	out := make([]target, n)
	for i := range out {
		var r *route
		switch {
		case a.Actions == ActUsual:
			r = routes[i]
		case cycle:
			r = routes[i%len(routes)]
		default:
			r = routes[g.rng.IntN(len(routes))]
		}
		out[i] = target{r: r, res: id(r)}
	}
	return out
}

// forgery: requests with tokens that do not verify, from one source,
// against one service: someone guessing, or tampering with a token's
// claims (a bad signature), or replaying one signed by a key that no
// longer exists.
func (g *gen) forgery(a *AttackSpec) bool {
	svc := g.services[g.rng.IntN(len(g.services))]
	lo := g.start.Add(g.sc.AttackAfter)
	t0 := g.uniform(lo, g.end.Sub(lo)-3*time.Hour)
	n := g.count(a.Requests)
	dur := g.span(a.Over)
	if !a.Every.IsZero() {
		dur = time.Duration(n-1) * a.Every.Max
	}
	if !t0.Add(dur).Before(g.end.Add(-time.Hour)) {
		return false
	}
	var ip netip.Addr
	agent := g.sc.AttackerClients[g.rng.IntN(len(g.sc.AttackerClients))]
	if a.From == FromHolderAddress {
		hs := g.eligible("", nil)
		if len(hs) == 0 {
			return false
		}
		ip = g.pickIP(hs[0], t0)
		if a.Client == ClientHolder {
			agent = hs[0].agent
		}
	} else {
		ip = g.attackerIP()
	}
	g.attacks = append(g.attacks, &Attack{ID: fmt.Sprintf("atk-%02d", len(g.attacks)+1), Variant: a.Variant, Sources: []string{ip.String()}})
	idx := len(g.attacks)
	kid := ""
	switch a.Forged {
	case events.ReasonBadSignature:
		kid = g.sc.Enforcer.KeyID
	case events.ReasonUnknownKey:
		kid = unknownKid
	}
	var targets []*route
	for _, r := range svc.routes {
		if r.since.IsZero() && (r.sensitive || r.read()) {
			targets = append(targets, r)
		}
	}
	for j, at := range g.attackTimes(a, n, t0, dur) {
		key := fmt.Sprintf("forged:%d", idx)
		if a.Varied {
			key = fmt.Sprintf("forged:%d:%d", idx, j)
		}
		r := targets[g.rng.IntN(len(targets))]
		g.send(request{at: at, ip: ip, r: r, resource: g.paramValues(r, g.randomID(svc)), agent: agent, label: label{attack: idx},
			forged: a.Forged, forgedKey: key, forgedKid: kid})
	}
	atk := g.attacks[idx-1]
	atk.within = a.DetectWithin.D()
	atk.Description = fmt.Sprintf("%s: %d requests with %s tokens (%s) from %s against %s, %s", a.Variant, n,
		map[bool]string{true: "varied", false: "one repeated"}[a.Varied], a.Forged, ip, svc.name, firstSentence(a.Description))
	return true
}
