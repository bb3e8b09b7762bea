package simulate

import (
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// tokenVer is one token: its claims, when clients present it and how it
// ends.
type tokenVer struct {
	id        string
	h         *holder
	issued    time.Time
	from, to  time.Time // clients present it in [from, to)
	revokedAt time.Time // zero: never revoked
	claims    events.TokenClaims
	// attack is 1 + the index of the attack that minted it (0: the
	// holder's own).
	attack int
}

// active returns the token the holder's clients present at t, or nil.
func (h *holder) active(t time.Time) *tokenVer {
	for i := len(h.tokens) - 1; i >= 0; i-- {
		tv := h.tokens[i]
		if tv.attack == 0 && !t.Before(tv.from) && t.Before(tv.to) {
			return tv
		}
	}
	return nil
}

// claimsAt are the claims a token issued to h at t carries.
func (g *gen) claimsAt(h *holder, t time.Time) events.TokenClaims {
	c := events.TokenClaims{
		Scopes:      h.scopesAt(t),
		Audience:    slices.Clone(h.audience),
		Networks:    slices.Clone(h.phaseAt(t).claimNets),
		Environment: g.sc.Enforcer.Environment,
		NotBefore:   t.Truncate(time.Second),
		Expiry:      t.Add(h.class.Tokens.TTL.D()).Truncate(time.Second),
	}
	if h.window != nil {
		c.Windows = []events.Window{*h.window}
	}
	return c
}

// requestedBy is where the issuer saw a token of h requested from at t,
// and who asked.
func (g *gen) requestedBy(h *holder, t time.Time, rotation bool) (*events.IssuanceContext, string) {
	switch h.class.IssuedBy {
	case issuedSelf:
		return &events.IssuanceContext{SourceIP: g.pickIP(h, t).String(), Client: normalizeClient(h.agent)}, "workload/" + h.name
	case issuedCI:
		return &events.IssuanceContext{SourceIP: ciAddr(h.tenantIdx).String(), Client: normalizeClient(ciAgent)}, "ci@" + h.tenant
	}
	if rotation {
		return nil, "issuer/rotation"
	}
	return nil, "automation@" + h.tenant
}

// issue records a new token of h at t.
func (g *gen) issue(h *holder, t time.Time, id string, rotatedFrom *tokenVer) *tokenVer {
	if id == "" {
		id = g.newID(t).String()
	}
	tv := &tokenVer{id: id, h: h, issued: t, from: t, to: g.end, claims: g.claimsAt(h, t)}
	req, actor := g.requestedBy(h, t, rotatedFrom != nil)
	ev := &events.TokenIssued{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, KeyID: g.sc.Enforcer.KeyID, Claims: tv.claims, Actor: actor, Requested: req}
	if rotatedFrom != nil {
		ev.RotatedFrom = rotatedFrom.id
	}
	g.add(t, sourceIssuer, ev, label{})
	h.tokens = append(h.tokens, tv)
	return tv
}

// revoke records the revocation of tv at t.
func (g *gen) revoke(tv *tokenVer, t time.Time, actor, reason string) {
	tv.revokedAt = t
	h := tv.h
	g.add(t, sourceIssuer, &events.TokenRevoked{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, KeyID: g.sc.Enforcer.KeyID,
		Kind: events.RevokeToken, Actor: actor, Reason: reason, Expiry: tv.claims.Expiry}, label{})
}

// lifecycle issues the holder's tokens from its birth to the end.
func (g *gen) lifecycle(h *holder) {
	if h.class.Tokens.Renew == renewPerRun {
		g.perRunLifecycle(h)
		return
	}
	ts := h.class.Tokens
	t := h.born.Add(time.Duration(g.rng.Int64N(int64(10 * time.Minute))))
	if h.born.Equal(g.start) {
		// A workload running before the scenario began holds a token
		// issued some time ago.
		t = g.start.Add(-time.Duration(g.rng.Int64N(int64(ts.RotateEvery.Min / 2))))
	}
	from := t
	var prev *tokenVer
	nextID := ""
	ri := 0
	for t.Before(g.end) {
		tv := g.issue(h, t, nextID, prev)
		tv.from = from
		nextID, prev = "", nil
		for ri < len(h.reissues) && !h.reissues[ri].at.After(t) {
			ri++
		}
		rotateAt := t.Add(g.span(ts.RotateEvery)).Truncate(time.Millisecond)
		if ri < len(h.reissues) && h.reissues[ri].at.Before(rotateAt) && h.reissues[ri].at.Before(tv.claims.Expiry) {
			// A redeploy or a change of context: a fresh token, rolled
			// out over a few minutes; the old one is revoked after.
			re := h.reissues[ri]
			ri++
			next := re.at
			switchAt := g.uniform(next, 5*time.Minute)
			tv.to = switchAt
			if end := switchAt.Add(time.Minute); end.Before(g.end) {
				g.revoke(tv, end, "deployer@"+h.tenant, re.reason)
				g.stragglers(tv, end)
			}
			t, from = next, switchAt
			continue
		}
		if g.rng.Float64() < ts.Late {
			// Nobody rotated in time: the token expires and clients are
			// denied "expired" until a new one is issued.
			exp := tv.claims.Expiry
			if !exp.Before(g.end) {
				return
			}
			g.add(exp, sourceIssuer, &events.TokenExpired{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, Expiry: exp}, label{})
			next := g.uniform(exp.Add(2*time.Minute), 8*time.Minute)
			tv.to = next
			t, from = next, next
			continue
		}
		if !rotateAt.Before(g.end) {
			return
		}
		graceUntil := rotateAt.Add(ts.Grace.D())
		switchAt := g.uniform(rotateAt, ts.Grace.D()/2)
		nextID = g.newID(rotateAt).String()
		tv.to = switchAt
		g.add(rotateAt, sourceIssuer, &events.TokenRotated{TokenID: tv.id, SuccessorID: nextID, Tenant: h.tenant, Holder: h.name,
			GraceUntil: graceUntil, Actor: "issuer/rotation"}, label{})
		if graceUntil.Before(g.end) {
			g.revoke(tv, graceUntil, "issuer/rotation", "rotated")
			g.stragglers(tv, graceUntil)
		}
		prev = tv
		t, from = rotateAt, switchAt
	}
}

// stragglers: now and then a client that missed the switch presents the
// old token a few more times, as part of its normal work.
func (g *gen) stragglers(tv *tokenVer, revoked time.Time) {
	h := tv.h
	if g.rng.Float64() >= h.class.Tokens.Stragglers {
		return
	}
	for n := 1 + g.rng.IntN(3); n > 0; n-- {
		at := g.uniform(revoked.Add(5*time.Second), 5*time.Minute)
		if h.rhythm(at) > 0 && at.Before(g.end) {
			r := g.pickCall(h, at)
			g.send(request{at: at, tv: tv, ip: g.clientIP(h, tv, at), r: r, resource: g.resource(h, r), agent: h.agent})
		}
	}
}

// perRunLifecycle: a nightly job gets a fresh token minutes before each
// run (and at each forced re-issue) and lets it expire.
func (g *gen) perRunLifecycle(h *holder) {
	var issues []time.Time
	s := h.born.In(h.loc)
	for d := 0; ; d++ {
		day := time.Date(s.Year(), s.Month(), s.Day()+d, 0, 0, 0, 0, h.loc)
		if !day.Before(g.end) {
			break
		}
		at := day.Add(time.Duration(h.class.Hours.Start * float64(time.Hour))).Add(-time.Duration(2+g.rng.IntN(9)) * time.Minute)
		if !at.Before(h.born) && at.Before(g.end) {
			issues = append(issues, at)
		}
	}
	for _, r := range h.reissues {
		issues = append(issues, r.at)
	}
	slices.SortFunc(issues, func(a, b time.Time) int { return a.Compare(b) })
	for i, at := range issues {
		tv := g.issue(h, at, "", nil)
		if i+1 < len(issues) {
			tv.to = issues[i+1]
		}
		if exp := tv.claims.Expiry; exp.Before(g.end) && exp.Before(tv.to) {
			g.add(exp, sourceIssuer, &events.TokenExpired{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, Expiry: exp}, label{})
		}
	}
}
