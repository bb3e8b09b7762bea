package policy

import (
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// AdminMaxTTL is the longest life of a token of Cordon's administrators
// under the built-in admin ceiling (AdminCeiling), and the default life of
// the bootstrap admin token.
const AdminMaxTTL = 90 * 24 * time.Hour

// AdminCeiling returns the built-in ceiling of Cordon's administrators
// (events.AdminTenant/events.AdminHolder): every admin scope, audience
// events.AdminAudience, tokens of at most AdminMaxTTL. It applies unless a
// policy declares that holder itself (WithAdminCeiling).
func AdminCeiling() Ceiling {
	return Ceiling{
		Tenant: events.AdminTenant, Holder: events.AdminHolder, Description: "built-in: Cordon administrators",
		Scopes: events.AdminScopes(), Audiences: []string{events.AdminAudience}, MaxTTL: AdminMaxTTL,
	}
}

// WithAdminCeiling returns the policy the issuer mints under: p with the
// built-in admin ceiling, unless p declares events.AdminTenant/
// events.AdminHolder itself (see WithCeiling).
func (p *Policy) WithAdminCeiling() *Policy { return p.WithCeiling(AdminCeiling()) }

// MaxTokenLife is the longest life (expiry minus not-before) any token
// minted under p can have: the largest max_ttl of its holders and of the
// built-in admin ceiling, unless p declares the admin holder itself. It is
// how long a revocation that names more than one token (a holder, a key, a
// tenant) must stay in force, and how far back a revoker must read the
// ledger to know every live token. A nil policy (no holders known) has
// the admin ceiling's, AdminMaxTTL.
func (p *Policy) MaxTokenLife() time.Duration {
	if p == nil {
		return AdminMaxTTL
	}
	var longest time.Duration
	for _, c := range p.WithAdminCeiling().Holders {
		longest = max(longest, c.MaxTTL)
	}
	return longest
}
