package detect

import (
	"errors"
	"fmt"
	"strings"
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
	// AddressSpace is the wider prefix that makes a tenant's address
	// space: a network outside every space the tenant's workloads use is
	// foreign — a strong signal on its own — while a new network inside
	// one is a weak one (a new subnet, a move, a new cluster).
	AddressSpace AddressSpaceConfig `yaml:"address_space"`
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

	// MaxHolders bounds the holders (tenant/holder workloads) with a
	// baseline in memory, the least recently seen forgotten first. Each
	// costs a few KiB (Stats.HolderStateBytes).
	MaxHolders int `yaml:"max_holders"`
	// MaxTenants bounds the tenants with a baseline (1 KiB each).
	MaxTenants int `yaml:"max_tenants"`
	// MaxSources bounds the source networks followed for forging bursts.
	MaxSources int `yaml:"max_sources"`
	// HolderLearning says when a holder's baseline — every token it was
	// ever issued, across rotations and re-issues — is trusted. Once it
	// is, a new token of the holder is judged against it from its first
	// request, whatever its own learning says.
	HolderLearning LearningConfig `yaml:"holder_learning"`
	// RolloutTokens: a network or client outside a learnt holder's
	// baseline joins it once this many distinct tokens of the holder used
	// it, allowed — a rollout (a new egress, a client upgrade), not one
	// stolen credential. At least 2.
	RolloutTokens int `yaml:"rollout_tokens"`
	// Sensitive lists scope patterns ("secrets:*", "*:delete"; '*' matches
	// any run of characters) whose routes get their own volume baseline and
	// whose never-seen use is more severe.
	Sensitive []string `yaml:"sensitive"`

	// NewClient: a client (user agent family) the holder never used.
	NewClient NewClientConfig `yaml:"new_client"`
	// IssuanceMismatch: use unlike the context the token was requested from.
	IssuanceMismatch IssuanceMismatchConfig `yaml:"issuance_mismatch"`
	// NewAction: an action (method, route, scope) the holder never did.
	NewAction NewActionConfig `yaml:"new_action"`
	// ResourceSweep: many distinct resources of one route in a short time.
	ResourceSweep ResourceSweepConfig `yaml:"resource_sweep"`
	// ForgingBurst: many unreadable or forged tokens from one source.
	ForgingBurst ForgingBurstConfig `yaml:"forging_burst"`
	// Risk combines the signals of a token into one score.
	Risk RiskConfig `yaml:"risk"`
}

// AddressSpaceConfig sizes a tenant's address spaces.
type AddressSpaceConfig struct {
	// IPv4Prefix is the prefix length of an IPv4 address space, between 8
	// and ipv4_prefix.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// IPv6Prefix is the prefix length of an IPv6 address space, between 16
	// and ipv6_prefix.
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// NewClientConfig tunes the new_client detector: a request whose client
// (events.UsageDecided.Client, compared by family: "curl/8" and "curl/7"
// are one client) is outside the holder's baseline.
type NewClientConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher when the request was denied.
	Severity string `yaml:"severity"`
	// PromoteAfter makes a new client part of the holder's baseline when
	// it is used again, allowed, this long after its first sighting.
	PromoteAfter time.Duration `yaml:"promote_after"`
}

// IssuanceMismatchConfig tunes the issuance_mismatch detector: a token
// requested from network N with client C (events.TokenIssued.Requested)
// used from another network and another client, neither of which is in
// its holder's baseline. It needs no learning: it is the pattern of a
// credential minted for a workload and used from somewhere else.
type IssuanceMismatchConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert when both the network and the client are
	// unlike; one step lower when the client is unknown on either side.
	Severity string `yaml:"severity"`
}

// NewActionConfig tunes the new_action detector ("new terms"): an action
// — method, route (ids folded) and scope — that the holder did not do
// within History, once the holder is learnt. One such action is a risk
// factor (a deployment adds routes every week); it alerts on its own when
// its scope is sensitive, or when one token does MinDistinct of them
// within risk.window.
type NewActionConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher for a sensitive scope.
	Severity string `yaml:"severity"`
	// History is the look-back of the holder's actions: an action not
	// done within it (at least, and at most twice it) is new again.
	History time.Duration `yaml:"history"`
	// MinDistinct is how many distinct never-seen actions one token must
	// do within risk.window to alert without a sensitive scope. 1 alerts
	// on every new action. Between 1 and 255.
	MinDistinct int `yaml:"min_distinct"`
}

// ResourceSweepConfig tunes the resource_sweep detector: one token
// touching many distinct resources (events.UsageDecided.Resource, which
// the enforcer reports next to the route pattern) of one route within
// Window, allowed or denied.
type ResourceSweepConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert.
	Severity string `yaml:"severity"`
	// Window is how long distinct resources are collected.
	Window time.Duration `yaml:"window"`
	// MinDistinct is the least number of distinct resources that is a
	// sweep: denied ones alone need no baseline; with allowed ones the
	// count must also exceed Factor times the holder's normal breadth (the
	// most distinct resources one of its tokens touched in one window,
	// decaying), and the holder must be learnt.
	MinDistinct int `yaml:"min_distinct"`
	// Factor: how far above the holder's breadth a sweep is.
	Factor float64 `yaml:"factor"`
}

// ForgingBurstConfig tunes the forging_burst detector: many decisions
// naming no token (unreadable, unknown key, bad signature, throttled)
// from one source network within Window. The enforcer folds those into
// one event per source with a count, which this detector weighs. The
// anomaly is about the source (events.AnomalySource), never a token.
type ForgingBurstConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Severity of an alert; one step higher at 10×MinCount.
	Severity string `yaml:"severity"`
	// Reasons are the deny reasons that count (events.DenyReasons values).
	Reasons []string `yaml:"reasons"`
	// Window is the counting window.
	Window time.Duration `yaml:"window"`
	// MinCount is how many such decisions within Window make a burst.
	MinCount int `yaml:"min_count"`
	// SlowWindow: from a source network that no workload's baseline
	// holds (one that never presented a valid token of a known network),
	// MinCount such decisions within SlowWindow are a burst too — a
	// scanner pacing its guesses. A workload's own network is judged by
	// Window alone: a broken replica retrying a truncated token is a
	// misconfiguration its owner sees, not an attack. Zero turns it off;
	// else at least Window.
	SlowWindow time.Duration `yaml:"slow_window"`
}

// RiskConfig tunes the risk score: each signal a token showed within
// Window weighs Weight (halved when only the token's own baseline was
// broken, not its holder's), and the score is 1 - Π(1 - weight), a
// noisy-OR: independent weak signals add up, none alone reaches 1.
// Every anomaly carries the score and its factors; when the score reaches
// Threshold with at least two signals, a risk_score anomaly is raised.
type RiskConfig struct {
	// Enabled turns the risk_score anomaly on (scores are always computed).
	Enabled bool `yaml:"enabled"`
	// Severity of a risk_score anomaly.
	Severity string `yaml:"severity"`
	// Window is how long a signal counts towards the score.
	Window time.Duration `yaml:"window"`
	// Threshold is the score that raises a risk_score anomaly.
	Threshold float64 `yaml:"threshold"`
	// Weights per signal, each in [0, 1].
	Weights RiskWeights `yaml:"weights"`
}

// RiskWeights is the weight of each signal in the risk score.
type RiskWeights struct {
	NewNetwork       float64 `yaml:"new_network"`
	OddHours         float64 `yaml:"odd_hours"`
	ScopeProbing     float64 `yaml:"scope_probing"`
	UseAfterRevoke   float64 `yaml:"use_after_revoke"`
	VolumeSpike      float64 `yaml:"volume_spike"`
	MultiNetwork     float64 `yaml:"multi_network"`
	NewClient        float64 `yaml:"new_client"`
	IssuanceMismatch float64 `yaml:"issuance_mismatch"`
	NewAction        float64 `yaml:"new_action"`
	ResourceSweep    float64 `yaml:"resource_sweep"`
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
	// Reasons are the deny reasons that count as probing
	// (events.DenyReasons values).
	Reasons []string `yaml:"reasons"`
	// MinDistinct is how many distinct (method, route, scope, resource)
	// denials with one of Reasons within Window make probing. Between 2
	// and 16.
	MinDistinct int `yaml:"min_distinct"`
	// Horizon is the slow count: MinDistinct distinct denied actions
	// (method, route, scope; resources aside) within Horizon make probing
	// too, when they are more than the most one token of the holder is
	// usually denied within it (decaying, half-life a week) — so one
	// probe every few minutes, or every hour, adds up. Zero turns it off;
	// else at least Window.
	Horizon time.Duration `yaml:"horizon"`
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
	// Reasons are the deny reasons meaning "this token is revoked/expired"
	// (events.DenyReasons values); they make a token the ledger never showed us analysable too.
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
	// MinHistory is how much event time of traffic must have been seen
	// before a baseline can judge: the token's own (which then judges
	// it), else its holder's (the busiest minute of any of its tokens).
	MinHistory time.Duration `yaml:"min_history"`
	// SensitiveMinCount is MinCount for the requests of one token to
	// sensitive scopes (Config.Sensitive) in one minute, judged against
	// the holder's busiest such minute: a burst of secret reads stands out
	// even inside a busy token's ordinary traffic.
	SensitiveMinCount int `yaml:"sensitive_min_count"`
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

// DefaultConfig returns the thresholds Cordon ships with. They come from
// what each signal means, not from any evaluation data set:
//
//   - holder_learning 200 allowed uses over 72h: three days cover a
//     workload's daily cycle twice and a weekday/weekend edge in most
//     weeks; 200 uses keep a quiet holder (a nightly job) from being
//     judged on a handful of requests. A token still learns its own
//     baseline (learning: 50 over 48h) for the holders that are not learnt,
//     and a tenant is learnt like a holder (all its holders' uses).
//   - address_space /16 (IPv4) and /48 (IPv6): a /16 is the largest
//     network one cloud VPC or site plan hands out, a /48 the usual IPv6
//     site. A new /24 inside a space the tenant's workloads use is a new
//     subnet, cluster or egress (a risk factor); a network outside all of
//     them is somewhere the tenant does not run (an alert on its own).
//   - rollout_tokens 3: one stolen credential is one token on one host; a
//     new egress or client version reaches every token and instance of
//     the workload. A value three tokens — or three instances with the
//     holder's own client, inside its address space — used is baseline.
//   - issuance_mismatch high: a token used from a network and a client
//     that are unlike where it was requested, and unknown to its holder,
//     is the exfiltration pattern itself; it needs no learning. A holder
//     with no history yet (its first token) cannot tell a CI-requested
//     token used by the workload from a stolen one: there the mismatch is
//     half a risk factor, unless the network is foreign.
//   - new_action low (medium for a sensitive scope), history 7d: a
//     deploy adding a route is normal drift, seen once per holder; a week
//     covers weekly jobs. One new action is a risk factor; 3 by one token
//     within the risk window (a deploy adds one or two routes, a token
//     trying what it can do tries several) or a sensitive one alert.
//   - scope_probing: 5 distinct denials (scope_missing, wrong_audience:
//     a token presented to a service it was not minted for) within 10m,
//     or 5 distinct denied actions within 24h and more than the holder's
//     tokens were denied in a day over the last one to two weeks: a
//     misconfigured workload repeats one mistake; a prober tries one
//     thing after another, however slowly.
//   - resource_sweep 20 distinct resources of one route in 10m, 4× the
//     holder's breadth: a workload that reads one record at a time stays
//     far below; 20 denials of distinct resources are never normal; a
//     holder that normally reads hundreds is judged against its own
//     breadth.
//   - forging_burst 100 in 1m from one /24 (/64): a client retrying a
//     stale token backs off; a hundred failed verifications a minute is
//     guessing or forging. From a network that never carried a known
//     workload's token, the same hundred within an hour.
//   - risk: weights are how much each signal alone moves the score (a new
//     network 0.5, a new client 0.4, an odd hour 0.35); threshold 0.8 is
//     reached by a new network with a new client at an odd hour (0.805),
//     or by any strong signal with a weak one, and by no single signal. A
//     token raises it again only when a signal joins the ones it was
//     raised for.
func DefaultConfig() Config {
	return Config{
		MaxTokens:    1_000_000,
		Cooldown:     time.Hour,
		IPv4Prefix:   24,
		IPv6Prefix:   64,
		AddressSpace: AddressSpaceConfig{IPv4Prefix: 16, IPv6Prefix: 48},
		Learning:     LearningConfig{MinEvents: 50, MinAge: 48 * time.Hour},
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
			Reasons:     []string{events.ReasonScopeMissing, events.ReasonWrongAudience},
			MinDistinct: 5,
			Horizon:     24 * time.Hour,
			EnumRun:     8,
			EnumMaxStep: 2,
		},
		UseAfterRevoke: UseAfterRevokeConfig{
			Enabled:   true,
			Severity:  events.SeverityHigh,
			Reasons:   []string{events.ReasonRevoked, events.ReasonExpired},
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
			// A workload reads a secret a few times a minute at most (at
			// start-up, on rotation); ten in a minute, and Factor times its
			// usual, is a dump.
			SensitiveMinCount: 10,
		},
		MultiNetwork: MultiNetworkConfig{
			Enabled:     true,
			Severity:    events.SeverityHigh,
			Window:      10 * time.Minute,
			MinNetworks: 3,
		},
		MaxHolders:     100_000,
		MaxTenants:     10_000,
		MaxSources:     100_000,
		HolderLearning: LearningConfig{MinEvents: 200, MinAge: 72 * time.Hour},
		RolloutTokens:  3,
		Sensitive:      []string{"secrets:*", "*:admin", "*:delete", "*:export", "keys:*", "iam:*"},
		NewClient: NewClientConfig{
			Enabled:      true,
			Severity:     events.SeverityLow,
			PromoteAfter: 24 * time.Hour,
		},
		IssuanceMismatch: IssuanceMismatchConfig{
			Enabled:  true,
			Severity: events.SeverityHigh,
		},
		NewAction: NewActionConfig{
			Enabled:     true,
			Severity:    events.SeverityLow,
			History:     7 * 24 * time.Hour,
			MinDistinct: 3,
		},
		ResourceSweep: ResourceSweepConfig{
			Enabled:     true,
			Severity:    events.SeverityHigh,
			Window:      10 * time.Minute,
			MinDistinct: 20,
			Factor:      4,
		},
		ForgingBurst: ForgingBurstConfig{
			Enabled:    true,
			Severity:   events.SeverityMedium,
			Reasons:    []string{events.ReasonMalformed, events.ReasonBadSignature, events.ReasonUnknownKey, events.ReasonThrottled},
			Window:     time.Minute,
			MinCount:   100,
			SlowWindow: time.Hour,
		},
		Risk: RiskConfig{
			Enabled:   true,
			Severity:  events.SeverityHigh,
			Window:    time.Hour,
			Threshold: 0.8,
			Weights: RiskWeights{
				NewNetwork: 0.5, OddHours: 0.35, ScopeProbing: 0.7, UseAfterRevoke: 0.9, VolumeSpike: 0.35,
				MultiNetwork: 0.6, NewClient: 0.4, IssuanceMismatch: 0.7, NewAction: 0.35, ResourceSweep: 0.7,
			},
		},
	}
}

// weights returns the risk weights indexed by detector.
func (w *RiskWeights) byDetector() [numDetectors]float64 {
	var out [numDetectors]float64
	out[detNewNetwork], out[detOddHours], out[detScopeProbing] = w.NewNetwork, w.OddHours, w.ScopeProbing
	out[detUseAfterRevoke], out[detVolumeSpike], out[detMultiNetwork] = w.UseAfterRevoke, w.VolumeSpike, w.MultiNetwork
	out[detNewClient], out[detIssuanceMismatch], out[detNewAction] = w.NewClient, w.IssuanceMismatch, w.NewAction
	out[detResourceSweep] = w.ResourceSweep
	return out
}

// Enabled names the detectors cfg turns on, in the order of Detectors.
func (c Config) Enabled() []string {
	on := [numDetectors]bool{
		detNewNetwork: c.NewNetwork.Enabled, detOddHours: c.OddHours.Enabled, detScopeProbing: c.ScopeProbing.Enabled,
		detUseAfterRevoke: c.UseAfterRevoke.Enabled, detVolumeSpike: c.VolumeSpike.Enabled, detMultiNetwork: c.MultiNetwork.Enabled,
		detNewClient: c.NewClient.Enabled, detIssuanceMismatch: c.IssuanceMismatch.Enabled, detNewAction: c.NewAction.Enabled,
		detResourceSweep: c.ResourceSweep.Enabled, detForgingBurst: c.ForgingBurst.Enabled, detRiskScore: c.Risk.Enabled,
	}
	var names []string
	for d, ok := range on {
		if ok {
			names = append(names, detectorNames[d])
		}
	}
	return names
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
		{c.AddressSpace.IPv4Prefix >= 8 && c.AddressSpace.IPv4Prefix <= c.IPv4Prefix, "address_space.ipv4_prefix", fmt.Sprintf("between 8 and ipv4_prefix (%d)", c.IPv4Prefix), c.AddressSpace.IPv4Prefix},
		{c.AddressSpace.IPv6Prefix >= 16 && c.AddressSpace.IPv6Prefix <= c.IPv6Prefix, "address_space.ipv6_prefix", fmt.Sprintf("between 16 and ipv6_prefix (%d)", c.IPv6Prefix), c.AddressSpace.IPv6Prefix},
		{c.Learning.MinEvents >= 0, "learning.min_events", "not negative", c.Learning.MinEvents},
		{c.Learning.MinAge >= 0, "learning.min_age", "not negative", c.Learning.MinAge},
		{c.NewNetwork.PromoteAfter >= 0, "new_network.promote_after", "not negative", c.NewNetwork.PromoteAfter},
		{c.OddHours.MinShare >= 0 && c.OddHours.MinShare < 1, "odd_hours.min_share", "in [0, 1)", c.OddHours.MinShare},
		{c.ScopeProbing.Window > 0, "scope_probing.window", "positive", c.ScopeProbing.Window},
		{c.ScopeProbing.MinDistinct >= 2 && c.ScopeProbing.MinDistinct <= maxProbeDistinct, "scope_probing.min_distinct", fmt.Sprintf("between 2 and %d", maxProbeDistinct), c.ScopeProbing.MinDistinct},
		{c.ScopeProbing.EnumRun == 0 || c.ScopeProbing.EnumRun >= 3, "scope_probing.enum_run", "0 (off) or at least 3", c.ScopeProbing.EnumRun},
		{c.ScopeProbing.Horizon == 0 || c.ScopeProbing.Horizon >= c.ScopeProbing.Window, "scope_probing.horizon", "0 (off) or at least scope_probing.window", c.ScopeProbing.Horizon},
		{c.ScopeProbing.EnumMaxStep >= 1, "scope_probing.enum_max_step", "at least 1", c.ScopeProbing.EnumMaxStep},
		{c.UseAfterRevoke.Grace >= 0, "use_after_revoke.grace", "not negative", c.UseAfterRevoke.Grace},
		{c.UseAfterRevoke.ClockSkew >= 0, "use_after_revoke.clock_skew", "not negative", c.UseAfterRevoke.ClockSkew},
		{c.VolumeSpike.MinCount >= 1, "volume_spike.min_count", "at least 1", c.VolumeSpike.MinCount},
		{c.VolumeSpike.Factor > 1, "volume_spike.factor", "greater than 1", c.VolumeSpike.Factor},
		{c.VolumeSpike.HalfLife >= time.Minute, "volume_spike.half_life", "at least 1m", c.VolumeSpike.HalfLife},
		{c.VolumeSpike.MinHistory >= 0, "volume_spike.min_history", "not negative", c.VolumeSpike.MinHistory},
		{c.VolumeSpike.SensitiveMinCount >= 1, "volume_spike.sensitive_min_count", "at least 1", c.VolumeSpike.SensitiveMinCount},
		{c.MultiNetwork.Window > 0, "multi_network.window", "positive", c.MultiNetwork.Window},
		{c.MultiNetwork.MinNetworks >= 2 && c.MultiNetwork.MinNetworks <= maxNetworks, "multi_network.min_networks", fmt.Sprintf("between 2 and %d", maxNetworks), c.MultiNetwork.MinNetworks},
		{c.MaxHolders >= 1, "max_holders", "at least 1", c.MaxHolders},
		{c.MaxTenants >= 1, "max_tenants", "at least 1", c.MaxTenants},
		{c.MaxSources >= 1, "max_sources", "at least 1", c.MaxSources},
		{c.HolderLearning.MinEvents >= 0, "holder_learning.min_events", "not negative", c.HolderLearning.MinEvents},
		{c.HolderLearning.MinAge >= 0, "holder_learning.min_age", "not negative", c.HolderLearning.MinAge},
		{c.RolloutTokens >= 2 && c.RolloutTokens <= rolloutBits, "rollout_tokens", fmt.Sprintf("between 2 and %d", rolloutBits), c.RolloutTokens},
		{c.NewClient.PromoteAfter >= 0, "new_client.promote_after", "not negative", c.NewClient.PromoteAfter},
		{c.NewAction.History >= time.Hour, "new_action.history", "at least 1h", c.NewAction.History},
		{c.NewAction.MinDistinct >= 1 && c.NewAction.MinDistinct <= 255, "new_action.min_distinct", "between 1 and 255", c.NewAction.MinDistinct},
		{c.ResourceSweep.Window > 0, "resource_sweep.window", "positive", c.ResourceSweep.Window},
		{c.ResourceSweep.MinDistinct >= 3 && c.ResourceSweep.MinDistinct <= maxSweepDistinct, "resource_sweep.min_distinct", fmt.Sprintf("between 3 and %d", maxSweepDistinct), c.ResourceSweep.MinDistinct},
		{c.ResourceSweep.Factor >= 1, "resource_sweep.factor", "at least 1", c.ResourceSweep.Factor},
		{c.ForgingBurst.Window > 0, "forging_burst.window", "positive", c.ForgingBurst.Window},
		{c.ForgingBurst.MinCount >= 1, "forging_burst.min_count", "at least 1", c.ForgingBurst.MinCount},
		{c.ForgingBurst.SlowWindow == 0 || c.ForgingBurst.SlowWindow >= c.ForgingBurst.Window, "forging_burst.slow_window", "0 (off) or at least forging_burst.window", c.ForgingBurst.SlowWindow},
		{c.Risk.Window > 0, "risk.window", "positive", c.Risk.Window},
		{c.Risk.Threshold > 0 && c.Risk.Threshold <= 1, "risk.threshold", "in (0, 1]", c.Risk.Threshold},
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
		{"new_client.severity", c.NewClient.Severity},
		{"issuance_mismatch.severity", c.IssuanceMismatch.Severity},
		{"new_action.severity", c.NewAction.Severity},
		{"resource_sweep.severity", c.ResourceSweep.Severity},
		{"forging_burst.severity", c.ForgingBurst.Severity},
		{"risk.severity", c.Risk.Severity},
	}
	for _, s := range sevs {
		if events.SeverityRank(s.v) < 0 {
			return fmt.Errorf("%w: %s: %q is not one of low, medium, high, critical", ErrConfig, s.field, s.v)
		}
	}
	w := c.Risk.Weights.byDetector()
	for d, v := range w {
		if !(v >= 0 && v <= 1) {
			return fmt.Errorf("%w: risk.weights.%s: want in [0, 1], got %v", ErrConfig, detectorNames[d], v)
		}
	}
	if len(c.Sensitive) > maxSensitive {
		return fmt.Errorf("%w: sensitive: %d patterns, at most %d", ErrConfig, len(c.Sensitive), maxSensitive)
	}
	for i, p := range c.Sensitive {
		if p == "" || len(p) > 128 || strings.Count(p, "*") > 2 {
			return fmt.Errorf("%w: sensitive[%d]: %q: want a scope pattern of 1 to 128 characters with at most two '*'", ErrConfig, i, p)
		}
	}
	for _, rs := range []struct {
		field   string
		reasons []string
	}{
		{"scope_probing.reasons", c.ScopeProbing.Reasons},
		{"use_after_revoke.reasons", c.UseAfterRevoke.Reasons},
		{"forging_burst.reasons", c.ForgingBurst.Reasons},
	} {
		for i, r := range rs.reasons {
			if !events.IsDenyReason(r) {
				return fmt.Errorf("%w: %s[%d]: %q is not a deny reason an enforcer reports (one of %s)",
					ErrConfig, rs.field, i, r, strings.Join(events.DenyReasons(), ", "))
			}
		}
	}
	return nil
}

// maxSensitive bounds Config.Sensitive.
const maxSensitive = 64

// matchScope reports whether scope matches pattern, where '*' matches any
// run of characters (including none).
func matchScope(pattern, scope string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == scope
	}
	prefix, rest := pattern[:star], pattern[star+1:]
	if !strings.HasPrefix(scope, prefix) {
		return false
	}
	scope = scope[len(prefix):]
	for i := 0; i <= len(scope); i++ {
		if matchScope(rest, scope[i:]) {
			return true
		}
	}
	return false
}
