package simulate

import (
	"errors"
	"fmt"
	"time"
)

// ErrScenario is wrapped by every invalid-scenario error.
var ErrScenario = errors.New("invalid scenario")

// Scenario parameterises a simulation. The same scenario (seed included)
// always yields the same events, ids and labels.
type Scenario struct {
	// Seed drives every random choice.
	Seed uint64 `json:"seed"`
	// Start is the beginning of simulated time (UTC); Days its length.
	Start time.Time `json:"start"`
	Days  int       `json:"days"`
	// Tenants, Holders and Services size the world: holders (calling
	// workloads) are spread over tenants and call the target services.
	Tenants  int `json:"tenants"`
	Holders  int `json:"holders"`
	Services int `json:"services"`
	// UsageEvents is the approximate number of normal usage events.
	UsageEvents int `json:"usage_events"`
	// RotateEvery is the mean life of a token before it is rotated; tokens
	// expire at 1.5 times that. RotationGrace is how long a rotated
	// predecessor stays valid.
	RotateEvery   time.Duration `json:"rotate_every_ns"`
	RotationGrace time.Duration `json:"rotation_grace_ns"`
	// LateRotation is the share of rotations that come only after the token
	// expired (clients see "expired" denials until the successor arrives).
	LateRotation float64 `json:"late_rotation"`
	// Stragglers is the probability that, after a revocation by rotation,
	// a client retries with the old token a few times.
	Stragglers float64 `json:"stragglers"`
	// ScopeMissingRate is the share of a holder's requests that hit a
	// route it has no scope for (a misconfigured call, denied).
	ScopeMissingRate float64 `json:"scope_missing_rate"`
	// AttacksPerKind is how many attacks of each kind are injected, all
	// after AttackAfter (so that baselines exist) and on distinct tokens.
	AttacksPerKind int           `json:"attacks_per_kind"`
	AttackAfter    time.Duration `json:"attack_after_ns"`
}

// DefaultScenario is two weeks of 50 holders over 5 tenants and 12
// services, about 200,000 usage events and 20 attacks: a full replay takes
// seconds.
func DefaultScenario() Scenario {
	return Scenario{
		Seed:             1,
		Start:            time.Date(2026, time.March, 2, 0, 0, 0, 0, time.UTC), // a Monday; US DST starts on the 8th
		Days:             14,
		Tenants:          5,
		Holders:          50,
		Services:         12,
		UsageEvents:      200_000,
		RotateEvery:      4 * 24 * time.Hour,
		RotationGrace:    30 * time.Minute,
		LateRotation:     0.1,
		Stragglers:       0.3,
		ScopeMissingRate: 0.002,
		AttacksPerKind:   4,
		AttackAfter:      4 * 24 * time.Hour,
	}
}

// End is the end of simulated time.
func (s Scenario) End() time.Time { return s.Start.Add(time.Duration(s.Days) * 24 * time.Hour) }

// Validate reports the first unusable parameter.
func (s Scenario) Validate() error {
	checks := []struct {
		ok    bool
		field string
		want  string
		got   any
	}{
		{!s.Start.IsZero(), "start", "set", s.Start},
		{s.Days >= 2, "days", "at least 2", s.Days},
		{s.Tenants >= 1 && s.Tenants <= len(tenantNames), "tenants", fmt.Sprintf("between 1 and %d", len(tenantNames)), s.Tenants},
		{s.Holders >= s.Tenants, "holders", "at least one per tenant", s.Holders},
		{s.Services >= 3 && s.Services <= len(serviceNames), "services", fmt.Sprintf("between 3 and %d", len(serviceNames)), s.Services},
		{s.UsageEvents >= 100, "usage_events", "at least 100", s.UsageEvents},
		{s.RotateEvery >= time.Hour, "rotate_every", "at least 1h", s.RotateEvery},
		{s.RotationGrace >= 0 && s.RotationGrace < s.RotateEvery/2, "rotation_grace", "in [0, rotate_every/2)", s.RotationGrace},
		{s.LateRotation >= 0 && s.LateRotation <= 1, "late_rotation", "in [0, 1]", s.LateRotation},
		{s.Stragglers >= 0 && s.Stragglers <= 1, "stragglers", "in [0, 1]", s.Stragglers},
		{s.ScopeMissingRate >= 0 && s.ScopeMissingRate < 0.5, "scope_missing_rate", "in [0, 0.5)", s.ScopeMissingRate},
		{s.AttacksPerKind >= 0, "attacks_per_kind", "not negative", s.AttacksPerKind},
		{s.AttackAfter >= 0 && s.AttackAfter < time.Duration(s.Days-1)*24*time.Hour, "attack_after", "in [0, days-1)", s.AttackAfter},
	}
	for _, c := range checks {
		if !c.ok {
			return fmt.Errorf("%w: %s: want %s, got %v", ErrScenario, c.field, c.want, c.got)
		}
	}
	return nil
}
