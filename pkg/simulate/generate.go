package simulate

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// The deny reasons the detectors know, as the simulated enforcer writes them.
const (
	reasonScopeMissing = detect.ReasonScopeMissing
	reasonRevoked      = detect.ReasonRevoked
	reasonExpired      = detect.ReasonExpired
)

const (
	sourceIssuer = "issuer/sim-1"
	keyID        = "sig-2026-03"
)

// Dataset is a generated simulation: the events in time order and the
// labelled attacks among them.
type Dataset struct {
	Scenario Scenario
	Events   []events.Envelope
	Attacks  []Attack
	// UsageEvents and LedgerEvents count the events by kind; AttackEvents
	// the usage events that belong to attacks.
	UsageEvents, LedgerEvents, AttackEvents int
}

// rec is an event before it gets its id.
type rec struct {
	at     time.Time
	source string
	data   events.Payload
	attack int // 1 + index into gen.attacks, 0 for normal traffic
}

type gen struct {
	sc       Scenario
	rng      *rand.Rand
	ids      *rand.Rand
	start    time.Time
	end      time.Time
	services []*service
	holders  []*holder
	recs     []rec
	attacks  []*Attack
	usedNets map[[3]byte]bool
	zones    map[string]*time.Location
}

// Generate builds the dataset of a scenario.
func Generate(sc Scenario) (*Dataset, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	g := &gen{
		sc:       sc,
		rng:      rand.New(rand.NewPCG(sc.Seed, 0x636f72646f6e)),
		ids:      rand.New(rand.NewPCG(sc.Seed, 0x7575696437)),
		start:    sc.Start.UTC(),
		end:      sc.End().UTC(),
		usedNets: map[[3]byte]bool{},
		zones:    map[string]*time.Location{},
	}
	if err := g.buildWorld(); err != nil {
		return nil, fmt.Errorf("build world: %w", err)
	}
	g.calibrate()
	for _, h := range g.holders {
		for _, l := range h.lineages {
			g.lifecycle(l)
		}
	}
	for _, h := range g.holders {
		g.traffic(h)
	}
	if err := g.injectAttacks(); err != nil {
		return nil, fmt.Errorf("inject attacks: %w", err)
	}
	return g.finish(), nil
}

// newID returns a UUIDv7 for an event at t, random bits from the seed.
func (g *gen) newID(t time.Time) uuid.UUID {
	var u uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	binary.BigEndian.PutUint16(u[6:], uint16(g.ids.Uint32()))
	binary.BigEndian.PutUint64(u[8:], g.ids.Uint64())
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

func (g *gen) add(at time.Time, source string, p events.Payload, attack int) {
	g.recs = append(g.recs, rec{at: at.Truncate(time.Millisecond), source: source, data: p, attack: attack})
}

// uniform returns a time uniformly in [a, a+d), to the millisecond.
func (g *gen) uniform(a time.Time, d time.Duration) time.Time {
	if d > 0 {
		a = a.Add(time.Duration(g.rng.Int64N(int64(d))))
	}
	return a.Truncate(time.Millisecond)
}

func (g *gen) between(lo, hi float64) float64 { return lo + (hi-lo)*g.rng.Float64() }

// calibrate sets each holder's peak rate so that the expected number of
// normal usage events is sc.UsageEvents, holders weighted log-normally.
func (g *gen) calibrate() {
	weights := make([]float64, len(g.holders))
	sum := 0.0
	for i := range g.holders {
		w := math.Exp(0.8 * g.rng.NormFloat64())
		weights[i] = min(max(w, 0.3), 4)
		sum += weights[i]
	}
	const step = 10 * time.Minute
	for i, h := range g.holders {
		mass := 0.0 // hours at full rhythm over the scenario
		for t := g.start.Add(step / 2); t.Before(g.end); t = t.Add(step) {
			mass += h.rhythm(t) * step.Hours()
		}
		want := float64(g.sc.UsageEvents) * weights[i] / sum
		h.perHour = want / mass
	}
}

// lifecycle issues a lineage's tokens and rotates them until the end:
// successor issued, clients switching within the grace, the predecessor
// revoked when the grace is over (a few clients late), and now and then a
// rotation that comes only after the token expired.
func (g *gen) lifecycle(l *lineage) {
	h := l.h
	t := g.uniform(g.start, 30*time.Minute)
	from := t
	var prev *tokenVer
	nextID := ""
	for t.Before(g.end) {
		if nextID == "" {
			nextID = g.newID(t).String()
		}
		tv := &tokenVer{id: nextID, lin: l, issued: t, from: from, to: g.end}
		nextID = ""
		tv.claims = events.TokenClaims{
			Scopes:      slices.Clone(l.scopes),
			Audience:    slices.Clone(l.audience),
			Networks:    slices.Clone(h.claimNets),
			Environment: "prod",
			NotBefore:   t,
			Expiry:      t.Add(g.sc.RotateEvery * 3 / 2).Truncate(time.Second),
		}
		if h.window != nil {
			tv.claims.Windows = []events.Window{*h.window}
		}
		issued := &events.TokenIssued{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, KeyID: keyID, Claims: tv.claims, Actor: "ops@" + h.tenant}
		if prev != nil {
			issued.RotatedFrom = prev.id
			issued.Actor = "issuer/rotation"
		}
		g.add(t, sourceIssuer, issued, 0)
		l.tokens = append(l.tokens, tv)
		prev = tv

		rotateAt := t.Add(time.Duration(float64(g.sc.RotateEvery) * g.between(0.8, 1.2))).Truncate(time.Millisecond)
		if g.rng.Float64() < g.sc.LateRotation {
			// Nobody rotated in time: the token expires, clients get
			// "expired" until a new token is issued a few minutes later.
			exp := tv.claims.Expiry
			if !exp.Before(g.end) {
				break
			}
			g.add(exp, sourceIssuer, &events.TokenExpired{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, Expiry: exp}, 0)
			next := g.uniform(exp.Add(2*time.Minute), 8*time.Minute)
			tv.to = next
			t, from = next, next
			continue
		}
		if !rotateAt.Before(g.end) {
			break
		}
		graceUntil := rotateAt.Add(g.sc.RotationGrace)
		switchAt := g.uniform(rotateAt, g.sc.RotationGrace/2)
		nextID = g.newID(rotateAt).String()
		tv.to, tv.revokedAt = switchAt, graceUntil
		// The rotation is recorded; the next turn issues the successor.
		t, from = rotateAt, switchAt
		g.add(rotateAt, sourceIssuer, &events.TokenRotated{TokenID: tv.id, SuccessorID: nextID, Tenant: h.tenant, Holder: h.name, GraceUntil: graceUntil, Actor: "issuer/rotation"}, 0)
		g.add(graceUntil, sourceIssuer, &events.TokenRevoked{TokenID: tv.id, Tenant: h.tenant, Holder: h.name, KeyID: keyID, Kind: events.RevokeToken, Actor: "issuer/rotation", Reason: "rotated", Expiry: tv.claims.Expiry}, 0)
		if graceUntil.Before(g.end) && g.rng.Float64() < g.sc.Stragglers {
			// Late clients retry as part of their normal work: only
			// while the holder is active.
			for n := 1 + g.rng.IntN(3); n > 0; n-- {
				at := g.uniform(graceUntil.Add(5*time.Second), 5*time.Minute)
				if h.rhythm(at) > 0 {
					g.usage(tv, at, g.pickIP(h), g.pickRoute(l), -1, h.agent, 0)
				}
			}
		}
	}
}
