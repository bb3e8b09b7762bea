package simulate

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// sourceIssuer is the envelope source of ledger events.
const sourceIssuer = "issuer/sim-1"

// Dataset is a generated simulation: the events in time order, the
// labelled attacks among them and where the benign drift applies.
type Dataset struct {
	Scenario Scenario
	Events   []events.Envelope
	Attacks  []Attack
	// Exposures say where and when each benign variant applies;
	// TokenDays how many (token, day) pairs of benign use each variant
	// covers (Steady: those no drift covers).
	Exposures []Exposure
	TokenDays map[string]int
	// BenignTokenDays is the number of distinct (token, day) pairs of
	// benign use, whatever covers them.
	BenignTokenDays int
	// AttackVariants and BenignVariants name the variants in scenario
	// order (BenignVariants starts with Steady).
	AttackVariants, BenignVariants []string
	// UsageEvents and LedgerEvents count the events by kind; AttackEvents
	// the events that belong to attacks; Holders and Tokens the world.
	UsageEvents, LedgerEvents, AttackEvents, Holders, Tokens int
}

// rec is an event before it gets its id.
type rec struct {
	at     time.Time
	source string
	data   events.Payload
	label  label
}

type gen struct {
	sc        Scenario
	rng       *rand.Rand
	ids       *rand.Rand
	start     time.Time
	end       time.Time
	services  []*service
	byName    map[string]*service
	routes    map[string]*route
	holders   []*holder
	classN    map[string]int
	netSeq    map[int]int
	rateScale float64
	recs      []rec
	attacks   []*Attack
	learning  map[*AttackSpec][]*holder
	exposures []Exposure
	broken    []*brokenClient
	enforcers map[*service]*enforcerState
	usedNets  map[[3]byte]bool
	zones     map[string]*time.Location
}

// Generate builds the dataset of a scenario: the world, its tokens and
// normal traffic, the benign drift, the attacks, and the events exactly as
// the issuer and the enforcers would publish them.
func Generate(sc Scenario) (*Dataset, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	g := &gen{
		sc:        sc,
		rng:       rand.New(rand.NewPCG(sc.Seed, 0x636f72646f6e)),
		ids:       rand.New(rand.NewPCG(sc.Seed, 0x7575696437)),
		start:     sc.Start.UTC(),
		end:       sc.End().UTC(),
		byName:    map[string]*service{},
		routes:    map[string]*route{},
		classN:    map[string]int{},
		netSeq:    map[int]int{},
		enforcers: map[*service]*enforcerState{},
		usedNets:  map[[3]byte]bool{},
		zones:     map[string]*time.Location{},
	}
	g.buildServices()
	if err := g.buildHolders(); err != nil {
		return nil, fmt.Errorf("build world: %w", err)
	}
	if err := g.planDrift(); err != nil {
		return nil, fmt.Errorf("plan drift: %w", err)
	}
	if err := g.prepareLearning(); err != nil {
		return nil, fmt.Errorf("plan attacks: %w", err)
	}
	g.calibrate()
	for _, h := range g.holders {
		g.lifecycle(h)
	}
	for _, h := range g.holders {
		g.traffic(h)
	}
	g.monitors()
	g.brokenClients()
	if err := g.injectAttacks(); err != nil {
		return nil, fmt.Errorf("inject attacks: %w", err)
	}
	g.lateExposures()
	return g.finish(), nil
}

// newID returns a UUIDv7 for an event at t, random bits from the seed.
func (g *gen) newID(t time.Time) uuid.UUID {
	var u uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	binary.BigEndian.PutUint16(u[6:], uint16(g.ids.Uint32()))
	binary.BigEndian.PutUint64(u[8:], g.ids.Uint64())
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

func (g *gen) add(at time.Time, source string, p events.Payload, l label) {
	g.recs = append(g.recs, rec{at: at.Truncate(time.Millisecond), source: source, data: p, label: l})
}

// uniform returns a time uniformly in [a, a+d), to the millisecond.
func (g *gen) uniform(a time.Time, d time.Duration) time.Time {
	if d > 0 {
		a = a.Add(time.Duration(g.rng.Int64N(int64(d))))
	}
	return a.Truncate(time.Millisecond)
}

// finish folds the token-less denials, orders the events in time, gives
// them their ids, and fills in the labels and the benign token-days.
func (g *gen) finish() *Dataset {
	g.flushFolded()
	sort.SliceStable(g.recs, func(i, j int) bool { return g.recs[i].at.Before(g.recs[j].at) })
	d := &Dataset{Scenario: g.sc, Events: make([]events.Envelope, 0, len(g.recs)), Exposures: g.exposures, TokenDays: map[string]int{}}
	d.BenignVariants = []string{Steady}
	for _, b := range g.sc.Benign {
		d.BenignVariants = append(d.BenignVariants, b.Variant)
	}
	for _, a := range g.sc.Attacks {
		d.AttackVariants = append(d.AttackVariants, a.Variant)
	}
	attackedFrom := map[string]time.Time{} // token → when its attack began
	for _, r := range g.recs {
		env := events.Envelope{ID: g.newID(r.at), Type: r.data.EventType(), Time: r.at.UTC(), Source: r.source, Version: events.SchemaVersion, Data: r.data}
		d.Events = append(d.Events, env)
		if env.Type == events.TypeUsageDecided {
			d.UsageEvents++
		} else {
			d.LedgerEvents++
		}
		if r.label.attack > 0 {
			a := g.attacks[r.label.attack-1]
			if len(a.EventIDs) == 0 {
				a.Start = env.Time
				for _, id := range a.TokenIDs {
					if _, ok := attackedFrom[id]; !ok {
						attackedFrom[id] = env.Time
					}
				}
			}
			a.End = env.Time
			a.EventIDs = append(a.EventIDs, env.ID.String())
			d.AttackEvents++
		}
	}
	for _, a := range g.attacks {
		within := a.within
		if within <= 0 {
			within = a.End.Sub(a.Start) + 15*time.Minute
		}
		a.DetectBy = a.Start.Add(within)
		d.Attacks = append(d.Attacks, *a)
	}
	d.TokenDays, d.BenignTokenDays = benignTokenDays(d.Events, g.exposures, attackedFrom)
	tokens := map[string]bool{}
	for _, h := range g.holders {
		for _, tv := range h.tokens {
			tokens[tv.id] = true
		}
	}
	d.Holders, d.Tokens = len(g.holders), len(tokens)
	return d
}

// benignTokenDays counts, per benign variant, the (token, UTC day) pairs
// of benign use it covers: a token in use on a day is one "benign token
// per day". A pair no exposure covers is Steady's.
func benignTokenDays(envs []events.Envelope, exps []Exposure, attackedFrom map[string]time.Time) (map[string]int, int) {
	byHolder := map[[2]string][]int{}
	for i, e := range exps {
		k := [2]string{e.Tenant, e.Holder}
		byHolder[k] = append(byHolder[k], i)
	}
	type pair struct {
		token string
		day   int64
	}
	seen := map[string]map[pair]bool{}
	all := map[pair]bool{}
	mark := func(v string, p pair) {
		if seen[v] == nil {
			seen[v] = map[pair]bool{}
		}
		seen[v][p] = true
	}
	for _, env := range envs {
		u, ok := env.Data.(*events.UsageDecided)
		if !ok || u.TokenID == "" {
			continue
		}
		if t, ok := attackedFrom[u.TokenID]; ok && !env.Time.Before(t) {
			continue
		}
		p := pair{u.TokenID, env.Time.Unix() / 86400}
		all[p] = true
		covered := false
		for _, i := range byHolder[[2]string{u.Tenant, u.Holder}] {
			if e := exps[i]; !env.Time.Before(e.From) && !env.Time.After(e.To) {
				mark(e.Variant, p)
				covered = true
			}
		}
		if !covered {
			mark(Steady, p)
		}
	}
	out := map[string]int{}
	for v, s := range seen {
		out[v] = len(s)
	}
	return out, len(all)
}

// Labels returns the dataset's labels: what Score needs besides the
// anomalies.
func (d *Dataset) Labels() Labels {
	return Labels{Scenario: d.Scenario, Attacks: d.Attacks, Exposures: d.Exposures, TokenDays: d.TokenDays,
		BenignTokenDays: d.BenignTokenDays, AttackVariants: d.AttackVariants, BenignVariants: d.BenignVariants}
}
