package detect_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/detect"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := detect.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigYAMLOverDefaults(t *testing.T) {
	// The policy file embeds the config under `detectors:`; fields it
	// leaves out keep their defaults.
	doc := `
detectors:
  cooldown: 30m
  ipv6_prefix: 48
  learning:
    min_events: 200
  odd_hours:
    enabled: false
  scope_probing:
    reasons: [scope_missing, wrong_audience]
  volume_spike:
    factor: 8
    half_life: 168h
`
	var policy struct {
		Detectors detect.Config `yaml:"detectors"`
	}
	policy.Detectors = detect.DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&policy); err != nil {
		t.Fatal(err)
	}
	c := policy.Detectors
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	def := detect.DefaultConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"cooldown", c.Cooldown, 30 * time.Minute},
		{"ipv6_prefix", c.IPv6Prefix, 48},
		{"ipv4_prefix kept", c.IPv4Prefix, def.IPv4Prefix},
		{"learning.min_events", c.Learning.MinEvents, 200},
		{"learning.min_age kept", c.Learning.MinAge, def.Learning.MinAge},
		{"odd_hours.enabled", c.OddHours.Enabled, false},
		{"odd_hours.min_share kept", c.OddHours.MinShare, def.OddHours.MinShare},
		{"scope_probing.reasons", strings.Join(c.ScopeProbing.Reasons, ","), "scope_missing,wrong_audience"},
		{"volume_spike.factor", c.VolumeSpike.Factor, 8.0},
		{"volume_spike.half_life", c.VolumeSpike.HalfLife, 168 * time.Hour},
		{"volume_spike.min_count kept", c.VolumeSpike.MinCount, def.VolumeSpike.MinCount},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		field string
		mod   func(*detect.Config)
	}{
		{"max_tokens", func(c *detect.Config) { c.MaxTokens = 0 }},
		{"cooldown", func(c *detect.Config) { c.Cooldown = -time.Second }},
		{"ipv4_prefix", func(c *detect.Config) { c.IPv4Prefix = 33 }},
		{"ipv6_prefix", func(c *detect.Config) { c.IPv6Prefix = 128 }},
		{"learning.min_events", func(c *detect.Config) { c.Learning.MinEvents = -1 }},
		{"odd_hours.min_share", func(c *detect.Config) { c.OddHours.MinShare = 1.5 }},
		{"scope_probing.min_distinct", func(c *detect.Config) { c.ScopeProbing.MinDistinct = 17 }},
		{"scope_probing.enum_run", func(c *detect.Config) { c.ScopeProbing.EnumRun = 2 }},
		{"scope_probing.window", func(c *detect.Config) { c.ScopeProbing.Window = 0 }},
		{"volume_spike.factor", func(c *detect.Config) { c.VolumeSpike.Factor = 1 }},
		{"volume_spike.half_life", func(c *detect.Config) { c.VolumeSpike.HalfLife = time.Second }},
		{"multi_network.min_networks", func(c *detect.Config) { c.MultiNetwork.MinNetworks = 1 }},
		{"new_network.severity", func(c *detect.Config) { c.NewNetwork.Severity = "urgent" }},
		{"address_space.ipv4_prefix", func(c *detect.Config) { c.AddressSpace.IPv4Prefix = 25 }},
		{"address_space.ipv6_prefix", func(c *detect.Config) { c.AddressSpace.IPv6Prefix = 8 }},
		{"scope_probing.horizon", func(c *detect.Config) { c.ScopeProbing.Horizon = time.Minute }},
		{"new_action.min_distinct", func(c *detect.Config) { c.NewAction.MinDistinct = 0 }},
		{"forging_burst.slow_window", func(c *detect.Config) { c.ForgingBurst.SlowWindow = time.Second }},
		{"scope_probing.reasons[1]", func(c *detect.Config) { c.ScopeProbing.Reasons = []string{"scope_missing", "audience_mismatch"} }},
		{"use_after_revoke.reasons[0]", func(c *detect.Config) { c.UseAfterRevoke.Reasons = []string{"Revoked"} }},
		{"forging_burst.reasons[0]", func(c *detect.Config) { c.ForgingBurst.Reasons = []string{""} }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			c := detect.DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if !errors.Is(err, detect.ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Validate: %v, want an ErrConfig naming %s", err, tt.field)
			}
			if _, err := detect.New(c); !errors.Is(err, detect.ErrConfig) {
				t.Fatalf("New accepted an invalid config: %v", err)
			}
		})
	}
}
