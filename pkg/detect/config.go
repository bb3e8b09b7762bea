package detect

import (
	"errors"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid detector config")

// Config holds every threshold of the engine. The policy file embeds it under
// `detectors:`; fields left out keep the values of DefaultConfig.
type Config struct {
	// MaxTokens bounds the number of tokens with state in memory; when a new
	// token arrives and the table is full, the least recently seen token is
	// forgotten. Each tracked token costs well under 2 KiB.
	MaxTokens int `yaml:"max_tokens"`
	// Cooldown is how long the same (token, detector) pair stays silent after
	// an alert, in event time. Zero alerts on every matching event.
	Cooldown time.Duration `yaml:"cooldown"`
	// IPv4Prefix is the prefix length that makes an IPv4 "network" (24: a
	// /24; 32 tracks single addresses). Between 8 and 32.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// IPv6Prefix is the prefix length that makes an IPv6 "network" (64 or
	// 48 are usual). Between 16 and 64.
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// Learning is the period during which a token's baselines (networks,
	// hours, concurrency) are learnt and the baseline detectors stay silent.
	Learning LearningConfig `yaml:"learning"`

	// NewNetwork: first use from a network outside the baseline.
	NewNetwork NewNetworkConfig `yaml:"new_network"`
	// OddHours: use outside the learnt hour-of-week profile.
	OddHours OddHoursConfig `yaml:"odd_hours"`
	// ScopeProbing: distinct denied scopes, enumeration of ids.
	ScopeProbing ScopeProbingConfig `yaml:"scope_probing"`
	// UseAfterRevoke: use after revocation, rotation or expiry.
	UseAfterRevoke UseAfterRevokeConfig `yaml:"use_after_revoke"`
	// VolumeSpike: requests per minute far above the token's baseline.
	VolumeSpike VolumeSpikeConfig `yaml:"volume_spike"`
	// MultiNetwork: several networks at once.
	MultiNetwork MultiNetworkConfig `yaml:"multi_network"`
}

// LearningConfig says when a token's baseline is trusted. Both conditions
// must hold; set one to zero to use only the other.
type LearningConfig struct {
	// MinEvents is the number of allowed uses to observe first.
	MinEvents int `yaml:"min_events"`
	// MinAge is the event time elapsed since the token's first allowed use.
	MinAge time.Duration `yaml:"min_age"`
}

// NewNetworkConfig tunes the new_network detector: first use from a network
// (IPv4Prefix / IPv6Prefix) the token was not used from while learning.
type NewNetworkConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher when the request was denied.
	Severity string `yaml:"severity"`
	// PromoteAfter makes a new network part of the baseline when the token
	// is used from it again, allowed, this long after its first sighting
	// (the alert went out and nobody revoked the token). Zero never promotes.
	PromoteAfter time.Duration `yaml:"promote_after"`
}

// OddHoursConfig tunes the odd_hours detector: use at an hour of the week
// the token's profile says it is not used. The profile is kept in the zone
// of the token's time-of-use window claim (UTC when it has none).
type OddHoursConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher when the request was denied.
	Severity string `yaml:"severity"`
	// MinShare: a use is odd when the token was never used in that hour of
	// the week nor the hours next to it, and either those hours of the day
	// or (once the profile covers a week) this kind of day — weekday or
	// weekend — hold less than this share of its use. Shares are upper 95%
	// bounds, so a token needs about 3/MinShare uses before anything is odd.
	MinShare float64 `yaml:"min_share"`
}

// ScopeProbingConfig tunes the scope_probing detector.
type ScopeProbingConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert.
	Severity string `yaml:"severity"`
	// Window is the length of the sliding window in which distinct denials
	// are counted, and the longest an enumeration run may take.
	Window time.Duration `yaml:"window"`
	// Reasons are the deny reasons that count as probing.
	Reasons []string `yaml:"reasons"`
	// MinDistinct is how many distinct (method, route, scope) denials with
	// one of Reasons within Window make probing. Between 2 and 16.
	MinDistinct int `yaml:"min_distinct"`
	// EnumRun is how many consecutive requests to the same route, whose
	// last numeric segment moves by at most EnumMaxStep each time, make an
	// enumeration (allowed or denied). Zero disables enumeration.
	EnumRun int `yaml:"enum_run"`
	// EnumMaxStep is the largest id step that still counts as sequential.
	EnumMaxStep int `yaml:"enum_max_step"`
}

// UseAfterRevokeConfig tunes the use_after_revoke detector: use of a token
// after it was revoked, retired by a rotation (grace over) or expired, known
// from the ledger or from the enforcer's deny reason.
type UseAfterRevokeConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert for a denied use; an allowed use after the end
	// is always critical (the denylist did not reach that enforcer).
	Severity string `yaml:"severity"`
	// Reasons are the deny reasons meaning "this token is revoked/expired";
	// they make a token the ledger never showed us analysable too.
	Reasons []string `yaml:"reasons"`
	// Grace tolerates stragglers: denied retries from the token's known
	// networks within Grace of the end are normal after a rotation.
	Grace time.Duration `yaml:"grace"`
	// ClockSkew ignores uses this close to the end: enforcer clocks and the
	// issuer's differ a little.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// VolumeSpikeConfig tunes the volume_spike detector: requests per minute
// against the token's own decaying peak rate.
type VolumeSpikeConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher at 4×Factor the baseline.
	Severity string `yaml:"severity"`
	// MinCount is the least number of requests in one minute that can be a
	// spike, whatever the baseline.
	MinCount int `yaml:"min_count"`
	// Factor: a minute is a spike when its count exceeds Factor times the
	// baseline peak.
	Factor float64 `yaml:"factor"`
	// HalfLife is how fast the baseline peak per minute decays; a long one
	// keeps weekday peaks over a quiet weekend.
	HalfLife time.Duration `yaml:"half_life"`
	// MinHistory is how much event time of the token's traffic must have
	// been seen before it can alert.
	MinHistory time.Duration `yaml:"min_history"`
}

// MultiNetworkConfig tunes the multi_network detector: use from several
// distinct networks at once.
type MultiNetworkConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert.
	Severity string `yaml:"severity"`
	// Window: networks used within this much event time count as "at once".
	Window time.Duration `yaml:"window"`
	// MinNetworks is the least number of networks at once that alerts; a
	// token seen on more networks at once while learning needs one more
	// than that. Between 2 and 16.
	MinNetworks int `yaml:"min_networks"`
}

// Deny reasons the default configuration knows. They must match the
// enforcer's closed set of reasons.
const (
	ReasonScopeMissing = "scope_missing"
	ReasonRevoked      = "revoked"
	ReasonExpired      = "expired"
)

// DefaultConfig returns the thresholds Cordon ships with.
func DefaultConfig() Config {
	return Config{
		MaxTokens:  1_000_000,
		Cooldown:   time.Hour,
		IPv4Prefix: 24,
		IPv6Prefix: 64,
		Learning:   LearningConfig{MinEvents: 50, MinAge: 48 * time.Hour},
		NewNetwork: NewNetworkConfig{
			Enabled:      true,
			Severity:     events.SeverityMedium,
			PromoteAfter: 24 * time.Hour,
		},
		OddHours: OddHoursConfig{
			Enabled:  true,
			Severity: events.SeverityLow,
			MinShare: 0.02,
		},
		ScopeProbing: ScopeProbingConfig{
			Enabled:     true,
			Severity:    events.SeverityHigh,
			Window:      10 * time.Minute,
			Reasons:     []string{ReasonScopeMissing},
			MinDistinct: 5,
			EnumRun:     8,
			EnumMaxStep: 2,
		},
		UseAfterRevoke: UseAfterRevokeConfig{
			Enabled:   true,
			Severity:  events.SeverityHigh,
			Reasons:   []string{ReasonRevoked, ReasonExpired},
			Grace:     15 * time.Minute,
			ClockSkew: 5 * time.Second,
		},
		VolumeSpike: VolumeSpikeConfig{
			Enabled:    true,
			Severity:   events.SeverityMedium,
			MinCount:   30,
			Factor:     5,
			HalfLife:   72 * time.Hour,
			MinHistory: 24 * time.Hour,
		},
		MultiNetwork: MultiNetworkConfig{
			Enabled:     true,
			Severity:    events.SeverityHigh,
			Window:      10 * time.Minute,
			MinNetworks: 3,
		},
	}
}

// Validate reports the first out-of-range field, named as in the policy
// file (under `detectors:`).
func (c Config) Validate() error {
	checks := []struct {
		ok    bool
		field string
		want  string
		got   any
	}{
		{c.MaxTokens >= 1, "max_tokens", "at least 1", c.MaxTokens},
		{c.Cooldown >= 0, "cooldown", "not negative", c.Cooldown},
		{c.IPv4Prefix >= 8 && c.IPv4Prefix <= 32, "ipv4_prefix", "between 8 and 32", c.IPv4Prefix},
		{c.IPv6Prefix >= 16 && c.IPv6Prefix <= 64, "ipv6_prefix", "between 16 and 64", c.IPv6Prefix},
		{c.Learning.MinEvents >= 0, "learning.min_events", "not negative", c.Learning.MinEvents},
		{c.Learning.MinAge >= 0, "learning.min_age", "not negative", c.Learning.MinAge},
		{c.NewNetwork.PromoteAfter >= 0, "new_network.promote_after", "not negative", c.NewNetwork.PromoteAfter},
		{c.OddHours.MinShare >= 0 && c.OddHours.MinShare < 1, "odd_hours.min_share", "in [0, 1)", c.OddHours.MinShare},
		{c.ScopeProbing.Window > 0, "scope_probing.window", "positive", c.ScopeProbing.Window},
		{c.ScopeProbing.MinDistinct >= 2 && c.ScopeProbing.MinDistinct <= maxProbeDistinct, "scope_probing.min_distinct", fmt.Sprintf("between 2 and %d", maxProbeDistinct), c.ScopeProbing.MinDistinct},
		{c.ScopeProbing.EnumRun == 0 || c.ScopeProbing.EnumRun >= 3, "scope_probing.enum_run", "0 (off) or at least 3", c.ScopeProbing.EnumRun},
		{c.ScopeProbing.EnumMaxStep >= 1, "scope_probing.enum_max_step", "at least 1", c.ScopeProbing.EnumMaxStep},
		{c.UseAfterRevoke.Grace >= 0, "use_after_revoke.grace", "not negative", c.UseAfterRevoke.Grace},
		{c.UseAfterRevoke.ClockSkew >= 0, "use_after_revoke.clock_skew", "not negative", c.UseAfterRevoke.ClockSkew},
		{c.VolumeSpike.MinCount >= 1, "volume_spike.min_count", "at least 1", c.VolumeSpike.MinCount},
		{c.VolumeSpike.Factor > 1, "volume_spike.factor", "greater than 1", c.VolumeSpike.Factor},
		{c.VolumeSpike.HalfLife >= time.Minute, "volume_spike.half_life", "at least 1m", c.VolumeSpike.HalfLife},
		{c.VolumeSpike.MinHistory >= 0, "volume_spike.min_history", "not negative", c.VolumeSpike.MinHistory},
		{c.MultiNetwork.Window > 0, "multi_network.window", "positive", c.MultiNetwork.Window},
		{c.MultiNetwork.MinNetworks >= 2 && c.MultiNetwork.MinNetworks <= maxNetworks, "multi_network.min_networks", fmt.Sprintf("between 2 and %d", maxNetworks), c.MultiNetwork.MinNetworks},
	}
	for _, ck := range checks {
		if !ck.ok {
			return fmt.Errorf("%w: %s: want %s, got %v", ErrConfig, ck.field, ck.want, ck.got)
		}
	}
	sevs := []struct{ field, v string }{
		{"new_network.severity", c.NewNetwork.Severity},
		{"odd_hours.severity", c.OddHours.Severity},
		{"scope_probing.severity", c.ScopeProbing.Severity},
		{"use_after_revoke.severity", c.UseAfterRevoke.Severity},
		{"volume_spike.severity", c.VolumeSpike.Severity},
		{"multi_network.severity", c.MultiNetwork.Severity},
	}
	for _, s := range sevs {
		if events.SeverityRank(s.v) < 0 {
			return fmt.Errorf("%w: %s: %q is not one of low, medium, high, critical", ErrConfig, s.field, s.v)
		}
	}
	return nil
}
