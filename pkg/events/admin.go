package events

// Cordon's own administrators. The control plane (the issuer's API and
// commands, the revoker's cordon.cmd.revoke, the auditor's analyst API)
// accepts only tokens of tenant AdminTenant with audience AdminAudience,
// and each operation needs one of the admin scopes below (pkg/adminauth
// judges them, pkg/policy holds the built-in ceiling of AdminHolder). They
// are part of the contract because every service, the ledger and the CLI
// must name them alike.
const (
	// AdminTenant is the tenant of Cordon's own admin tokens.
	AdminTenant = "cordon"
	// AdminHolder is the holder of the bootstrap admin token and of the
	// built-in admin ceiling.
	AdminHolder = "admin"
	// AdminAudience is the audience an admin token must name.
	AdminAudience = "cordon"
)

// Admin scopes: what each operation of the control plane needs. A token's
// scope "cordon:*" covers all of them.
const (
	// ScopeIssue mints tokens (issuer).
	ScopeIssue = "cordon:issue"
	// ScopeRotate rotates tokens (issuer).
	ScopeRotate = "cordon:rotate"
	// ScopeRevoke revokes tokens, holders, keys and tenants (revoker).
	ScopeRevoke = "cordon:revoke"
	// ScopeRead lists and inspects tokens and keys (issuer) and queries
	// usage and anomalies (auditor's analyst API).
	ScopeRead = "cordon:read"
	// ScopeKeys rotates and retires signing keys (issuer).
	ScopeKeys = "cordon:keys"
)

// AdminScopes returns the scopes of the bootstrap admin token and of the
// built-in admin ceiling: every admin scope. The slice is the caller's.
func AdminScopes() []string {
	return []string{ScopeIssue, ScopeRotate, ScopeRevoke, ScopeRead, ScopeKeys}
}
