package policy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestMaxTokenLife: the longest life of a token minted under a policy
// counts every holder's max_ttl and the built-in admin ceiling's, unless the
// policy declares the admin holder itself; the compose deployment's policy
// (holders of 24h and 6h) must still cover its 90-day admin tokens.
func TestMaxTokenLife(t *testing.T) {
	const head = "version: 1\nholders:\n"
	holder := func(tenant, name, ttl string) string {
		return "  - {tenant: " + tenant + ", holder: " + name + ", scopes: [x:read], audiences: [x], max_ttl: " + ttl + "}\n"
	}
	parse := func(t *testing.T, doc string) *Policy {
		t.Helper()
		p, err := Parse("test.yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		p    func(t *testing.T) *Policy
		want time.Duration
	}{
		{"no policy known", func(*testing.T) *Policy { return nil }, AdminMaxTTL},
		{"short holders: the admin ceiling", func(t *testing.T) *Policy {
			return parse(t, head+holder("acme", "a", "24h")+holder("acme", "b", "6h"))
		}, AdminMaxTTL},
		{"a holder longer than the admin ceiling", func(t *testing.T) *Policy {
			return parse(t, head+holder("acme", "a", "24h")+holder("acme", "archive", "365d"))
		}, 365 * 24 * time.Hour},
		{"the policy's own cordon/admin, shorter", func(t *testing.T) *Policy {
			return parse(t, head+holder("acme", "a", "24h")+holder(events.AdminTenant, events.AdminHolder, "7d"))
		}, 7 * 24 * time.Hour},
		{"the policy's own cordon/admin, longer", func(t *testing.T) *Policy {
			return parse(t, head+holder(events.AdminTenant, events.AdminHolder, "180d"))
		}, 180 * 24 * time.Hour},
		{"the compose deployment's policy", func(t *testing.T) *Policy {
			return mustLoad(t, filepath.Join("..", "..", "deploy", "compose", "policy.yaml"))
		}, AdminMaxTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p(t).MaxTokenLife(); got != tt.want {
				t.Errorf("MaxTokenLife = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestAdminCeiling: the built-in ceiling is the contract's admin identity,
// with every admin scope, and WithAdminCeiling adds it only when the policy
// does not declare the admin holder.
func TestAdminCeiling(t *testing.T) {
	c := AdminCeiling()
	if c.Tenant != events.AdminTenant || c.Holder != events.AdminHolder || !slices.Equal(c.Audiences, []string{events.AdminAudience}) ||
		!slices.Equal(c.Scopes, events.AdminScopes()) || c.MaxTTL != AdminMaxTTL {
		t.Fatalf("AdminCeiling = %+v", c)
	}
	for _, s := range c.Scopes {
		if !strings.HasPrefix(s, events.AdminTenant+":") {
			t.Errorf("admin scope %q is not a %s: scope", s, events.AdminTenant)
		}
	}
	p := mustLoad(t, filepath.Join(fixtures, "default.yaml"))
	q := p.WithAdminCeiling()
	if got := mustCeiling(t, q, events.AdminTenant, events.AdminHolder); got.MaxTTL != AdminMaxTTL {
		t.Fatalf("admin ceiling max_ttl %s", got.MaxTTL)
	}
	if _, err := p.Lookup(events.AdminTenant, events.AdminHolder); err == nil {
		t.Fatal("WithAdminCeiling modified the original policy")
	}
}
