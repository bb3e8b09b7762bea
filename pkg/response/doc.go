// Package response is Cordon's response policy: what the revoker does about
// an anomaly — revoke the token, restrict it for a while (narrow, step_up),
// record what a rule on trial would do (shadow), or alert on-call and leave
// it alive.
//
// The policy is the `response:` section of the policy file. It is decoded
// from a yaml.Node, so every error names the file, the line and the field
// and quotes the offending value:
//
//	policy.yaml:57: response.rules[1].action: "revok" is not one of alert, shadow, narrow, step_up, revoke
//
// # Format
//
//	response:
//	  dry_run: false                 # optional: decide, record and alert, but revoke nothing
//	  rules:                         # optional; absent or empty means the default rules below
//	    - name: exfiltration         # optional, unique; defaults to "rules[i]"
//	      all_of: [new_network, odd_hours]  # optional: a combination — every one of these
//	      within: 10m                #   detectors fired for the same token within this window
//	      action: revoke             # required: alert | shadow | narrow | step_up | revoke
//	    - name: probing
//	      detectors: [scope_probing] # optional: any of these detectors (default: any)
//	      min_severity: high         # optional: low | medium | high | critical (default: low)
//	      min_risk: 0.8              # optional: the anomaly's risk score is at least this (above 0, at most 1)
//	      tenants: [acme]            # optional: only these tenants
//	      holders: [billing-api]     # optional: only these holders
//	      action: revoke
//	      dry_run: true              # optional: this rule only records what it would revoke
//	    - name: everything-else
//	      action: alert
//
// # Graduated response
//
// Between alerting and revoking, a rule may restrict a token for a while,
// and the first matching rule decides, so the risk score and the detectors
// choose the step:
//
//	rules:
//	  - name: very-risky
//	    min_risk: 0.9
//	    action: revoke
//	  - name: prove-it
//	    min_risk: 0.75
//	    action: step_up              # deny until the holder proves possession
//	    for: 30m                     # optional (default 1h, at most 168h; never past the token's expiry)
//	  - name: quarantine
//	    detectors: [new_network, new_client]
//	    min_risk: 0.5
//	    action: narrow               # only its read scopes, only from its holder's known networks
//	    for: 2h
//	  - name: trial
//	    detectors: [odd_hours]
//	    action: shadow               # record on the ledger what would have been done
//	    would: narrow                # optional: narrow | step_up | revoke (default revoke)
//
// narrow quarantines the token: enforcers allow only requests for its read
// scopes (a scope whose last segment is read, list or view,
// events.IsReadScope) from
// the networks its holder is known to use — the known networks the
// auditor's detectors put in the anomaly's evidence (known_networks) or,
// without them, the token's own networks. A token with neither cannot be
// narrowed to anything meaningful, so the revoker steps it up instead:
// a step the evidence cannot support is taken one step stronger, never
// weaker. step_up denies the token except on requests that present the
// client certificate the token is bound to (its device binding); a token
// with no binding is denied until the restriction ends or is released.
// Both reach every enforcer through the denylist broadcast, like a
// revocation, and end by themselves after `for`, or earlier with
// `cordon token release`. Each step is a ledger event (token.restricted,
// token.released) naming the rule, the anomaly and the actor. dry_run and
// the global dry_run apply to narrow and step_up as to revoke, and
// corroborate may guard them too.
//
// # Risk
//
// Every anomaly carries its token's risk score (events.AnomalyDetected.Risk,
// in [0, 1]) with its factors: the detector signals of the token's recent
// past, each with the level of the baseline it broke (token, holder,
// tenant) and its weight, combined as 1 - Π(1 - weight) (pkg/detect). Weak
// signals add up: a new network, a new client and an odd hour together
// reach 0.8 where each alone is noise. min_risk acts on the score,
// whatever the detector:
//
//	rules:
//	  - name: risky
//	    min_risk: 0.8
//	    action: revoke
//
// An anomaly from an older auditor has no score (0) and matches no
// min_risk rule. min_risk must be a number above 0 and at most 1; anything
// else is an error naming the file and line.
//
// # Source-level anomalies
//
// forging_burst is about a source network, not a token
// (events.AnomalySource; token_id "-"): many unreadable, forged or
// unknown-key tokens from one place. Rules match it like any anomaly, but
// it is only ever alerted on: there is no token to revoke, and a revoke
// rule that matches it says so in the alert.
//
// A revoke rule may also ask for corroboration before it revokes
// automatically:
//
//	rules:
//	  - name: leaked
//	    detectors: [new_network, scope_probing]
//	    action: revoke
//	    corroborate:               # optional, action: revoke only
//	      min_enforcers: 2         # distinct enforcers reported anomalous use of the token (2 to 16)
//	      require_allowed: true    # and one of those anomalies came from an allowed request
//	      within: 15m              # evidence window, either side (default: the rule's within, else 10m)
//
// The evidence is the token's anomalies of any detector whose event time is
// within the window of the deciding one, each carrying the enforcer and
// the decision (allow or deny) of the usage event that raised it
// (events.AnomalyDetected.Enforcer, Decision). The auditor accepts a usage
// event only from the enforcer whose subject it arrived on, and NATS lets
// each enforcer's credential publish only on its own, so min_enforcers
// means that many independent credentials saw the misuse: one stolen or
// buggy enforcer cannot get tokens revoked alone. require_allowed asks for
// more than denials, which anyone can provoke with a token they cannot use.
// A match whose corroboration is missing alerts instead of revoking
// (OutcomeUncorroborated) and says what is missing, such as
// "uncorroborated: 1 of 2 enforcers (edge-1) reported it within 15m0s"; a
// later anomaly that completes the evidence revokes. At least one of
// min_enforcers and require_allowed must be set.
//
// Rules are tried in file order and the first rule that matches decides, so
// put exceptions before general rules. An anomaly no rule matches is alerted
// on: Cordon never drops an anomaly silently. A rule matches when every
// condition it sets holds for the anomaly (detectors, min_severity, tenants,
// holders) and, for all_of, when the anomaly's own detector is one of all_of
// and each of the other all_of detectors fired for the same token with an
// event time within `within` of it (either side, since anomalies may arrive
// out of order). The Engine remembers recent anomalies per token for that,
// within a bounded number of tokens.
//
// The global dry_run wins over every rule: in dry-run mode nothing is ever
// revoked. A rule's own dry_run can only make that rule more careful.
//
// # Break-glass tokens
//
// Break-glass (emergency) tokens are never revoked automatically, whatever
// the rules say; every anomaly on one pages at the highest severity
// (critical), saying what the policy would have done.
//
// # Default policy
//
// When the policy file has no response section, or it lists no rules,
// Default applies:
//
//	rules:
//	  - name: critical
//	    min_severity: critical
//	    action: revoke
//	  - name: high-risk
//	    detectors: [new_network, use_after_revoke, scope_probing, risk_score]
//	    min_severity: high
//	    action: revoke
//
// that is: revoke on any critical anomaly, revoke on a high one from
// new_network, use_after_revoke, scope_probing or risk_score (weak signals
// of one token that together crossed the risk threshold), and alert on
// everything else. The defaults ask for no corroboration.
package response
