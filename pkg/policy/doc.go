// Package policy reads Cordon's policy file and checks token requests against
// it.
//
// The policy declares, for every holder (a service or workload of a tenant),
// the ceiling of what a token minted for it may allow. The issuer refuses to
// mint anything beyond it: Check names exactly which claim exceeds which
// limit. The file is YAML, decoded through yaml.Node so that every error
// names the file, the line and the field and quotes the offending value:
//
//	policy.yaml:14: holders[2].networks[0]: "10.0.0.0/33" is not a CIDR
//
// # File format
//
//	version: 1                       # required, must be 1
//	holders:                         # required, a list of ceilings
//	  - tenant: acme                 # required, a name (a-z A-Z 0-9 - _, at most 64)
//	    holder: billing-api          # required, a name; (tenant, holder) is unique
//	    description: invoices API    # optional, free text
//	    scopes:                      # required: resource:action; resource:* allows every action
//	      [invoices:read, invoices:write, customers:read]
//	    audiences: [payments, ledger]   # required: the services a token may reach; "*" is any
//	    networks: [10.20.0.0/16, "2001:db8:20::/48"]  # optional: source CIDRs (a bare IP is a /32 or /128)
//	    environments: [prod]         # optional
//	    windows:                     # optional: time-of-use windows
//	      - {days: [mon, tue, wed, thu, fri], start: "07:00", end: "21:00", zone: Europe/Paris}
//	      - "sat-sun 10:00-16:00 Europe/Paris"    # the same, compact form
//	    max_ttl: 24h                 # required: Go duration, or days such as 7d or 1d12h
//	    require_device: false        # optional: tokens must be bound to a client certificate
//	    break_glass: false           # optional: break-glass (emergency) tokens may be minted
//	detectors: {...}                 # optional, kept as a yaml.Node for the auditor
//	response: {...}                  # optional, kept as a yaml.Node for the revoker
//
// The commands that only detect (cordon replay, cordon eval) read the file
// with ParseDetectionOnly, which accepts a file holding just the detectors:
// and response: sections (version and holders optional, validated when
// present); the issuer reads it with Parse, which requires both.
//
// Unknown keys, duplicate keys and duplicate (tenant, holder) pairs are
// errors. Anchors, aliases and merge keys (<<: *defaults) may be used to
// share settings between holders; top-level keys starting with "x-" are
// ignored, so that they can hold such anchors:
//
//	x-office-hours: &office-hours
//	  windows: ["mon-fri 07:00-21:00 Europe/Paris"]
//	holders:
//	  - tenant: acme
//	    <<: *office-hours
//	    ...
//
// # Unrestricted dimensions
//
// An empty or absent networks, environments or windows list in a ceiling
// means the holder is unrestricted in that dimension: its tokens may carry
// any networks (or none, meaning any source), any environment (or none), any
// windows (or none, meaning any time). A non-empty list is a limit: every
// token must then carry that dimension, inside the limit.
//
// # Narrowing requests
//
// A Request may omit dimensions; Narrow fills them from the ceiling before
// Check: audience, networks and windows default to the ceiling's, the
// environment to the ceiling's only environment (a ceiling with several makes
// the caller choose), and the TTL to max_ttl, so a token is never minted
// without expiry. Scopes are never defaulted: a request names the scopes it
// needs (least privilege).
package policy
