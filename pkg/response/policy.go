package response

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// ErrInvalid is wrapped by every error about the response section.
var ErrInvalid = errors.New("invalid response policy")

// Error is an error in the response section, located by file, line and
// field, such as response.rules[1].action. Every error about the response
// section is an *Error whose Err is ErrInvalid, so errors.Is(err,
// ErrInvalid) holds.
type Error = yamlnode.Error

// Action is what a rule does about a matching anomaly.
type Action string

// The actions a rule may take.
const (
	// ActionRevoke revokes the token (kind "token") and alerts.
	ActionRevoke Action = "revoke"
	// ActionAlert alerts on-call and leaves the token alive.
	ActionAlert Action = "alert"
	// ActionShadow records on the ledger the step the rule would take
	// (Rule.Would) and changes nothing: a rule on trial.
	ActionShadow Action = "shadow"
	// ActionNarrow quarantines the token for Rule.For: only its read
	// scopes, only from its holder's known networks.
	ActionNarrow Action = "narrow"
	// ActionStepUp denies the token for Rule.For unless the request
	// presents the client certificate the token is bound to.
	ActionStepUp Action = "step_up"
)

// Actions are the rule actions, weakest first.
var Actions = []Action{ActionAlert, ActionShadow, ActionNarrow, ActionStepUp, ActionRevoke}

// restricts reports whether a changes what enforcers allow.
func (a Action) restricts() bool {
	return a == ActionNarrow || a == ActionStepUp || a == ActionRevoke
}

// Step is the graduated-response step of an enforcing action
// (events.StepNarrow, StepStepUp, StepRevoke; "" otherwise).
func (a Action) Step() string {
	switch a {
	case ActionNarrow:
		return events.StepNarrow
	case ActionStepUp:
		return events.StepStepUp
	case ActionRevoke:
		return events.StepRevoke
	}
	return ""
}

// DefaultRestriction is how long a narrow or step_up rule restricts a
// token when it sets no `for`.
const DefaultRestriction = time.Hour

// KnownDetectors are the detector names the response policy accepts:
// pkg/detect's own list (so that the two cannot drift) and the issuer's
// leak reports (events.DetectorLeakedPublic). A typo in a revoke
// rule would silently disable it, so unknown names are errors.
var KnownDetectors = append(detect.Detectors(), events.DetectorLeakedPublic)

// MaxWithin bounds a combination or corroboration window: the engine keeps
// per-token memory for the longest window of the policy.
const MaxWithin = 24 * time.Hour

// DefaultCorroborationWindow is a corroboration's window when it sets none
// and its rule has no all_of window either.
const DefaultCorroborationWindow = 10 * time.Minute

// MaxMinEnforcers bounds corroborate.min_enforcers: the engine remembers a
// bounded number of anomalies per token (EngineOptions.PerToken).
const MaxMinEnforcers = 16

// Corroboration is the evidence a revoke rule needs beyond its match
// before it revokes automatically. A usage event is attributed to the
// enforcer that published it (NATS lets each enforcer report only as
// itself), so one compromised enforcer credential can forge the anomalies
// of one enforcer, not more; and only denied requests can be fabricated
// without a working token. Evidence is the token's anomalies — any
// detector — whose event time is within Within of the deciding one.
type Corroboration struct {
	// MinEnforcers, when set (2 or more), is how many distinct enforcers
	// must have reported anomalous use of the token.
	MinEnforcers int
	// RequireAllowed requires one of those anomalies to have been
	// triggered by an allowed request, not only by denials.
	RequireAllowed bool
	// Within is the evidence window, either side of the deciding anomaly.
	Within time.Duration
}

// Policy is a decoded response policy.
type Policy struct {
	// DryRun records what would be revoked and revokes nothing.
	DryRun bool
	// Rules are tried in order; the first match decides.
	Rules []Rule
	// Default is true when the rules are the built-in defaults.
	Default bool
	// File is the name the policy was loaded under.
	File string
}

// Rule matches anomalies and says what to do about them.
type Rule struct {
	// Name identifies the rule in alerts, logs and metrics.
	Name string
	// Detectors, when set, match an anomaly from any of them.
	Detectors []string
	// MinSeverity, when set, is the least severity that matches.
	MinSeverity string
	// MinRisk, when set (above 0), is the least risk score
	// (events.AnomalyDetected.Risk) that matches.
	MinRisk float64
	// Tenants and Holders, when set, restrict the rule to them.
	Tenants []string
	Holders []string
	// AllOf, when set, is a combination: the anomaly's detector is one of
	// them and every other one fired for the same token within Within.
	AllOf  []string
	Within time.Duration
	// Action is what a match does.
	Action Action
	// For, for narrow and step_up, is how long the restriction lasts
	// (DefaultRestriction when unset; never past the token's expiry).
	For time.Duration
	// Would, for shadow, is the step recorded as what the rule would have
	// taken (narrow, step_up or revoke; revoke when unset).
	Would Action
	// Corroborate, when set (revoke, narrow and step_up), is the evidence
	// the step needs: without it the match alerts instead, saying why
	// (OutcomeUncorroborated).
	Corroborate *Corroboration
	// DryRun makes a revoke, narrow or step_up of this rule a dry run.
	DryRun bool
	// Line is where the rule is declared (0 for the defaults).
	Line int
}

// Default returns the built-in response policy: revoke on critical, or on
// high from new_network, use_after_revoke, scope_probing or risk_score
// (weak signals that together crossed the risk threshold); alert
// otherwise.
func Default() *Policy {
	return &Policy{
		Default: true,
		File:    "(default response policy)",
		Rules: []Rule{
			{Name: "critical", MinSeverity: events.SeverityCritical, Action: ActionRevoke},
			{Name: "high-risk", Detectors: []string{detect.NewNetwork, detect.UseAfterRevoke, detect.ScopeProbing, detect.RiskScore},
				MinSeverity: events.SeverityHigh, Action: ActionRevoke},
		},
	}
}

// MaxWindow is the longest combination or corroboration window of the
// policy (0 when it has neither).
func (p *Policy) MaxWindow() time.Duration {
	var w time.Duration
	for i := range p.Rules {
		w = max(w, p.Rules[i].Within)
		if c := p.Rules[i].Corroborate; c != nil {
			w = max(w, c.Within)
		}
	}
	return w
}

// String summarises the policy for logs.
func (p *Policy) String() string {
	names := make([]string, len(p.Rules))
	for i := range p.Rules {
		names[i] = p.Rules[i].Name + "→" + string(p.Rules[i].Action)
		switch r := &p.Rules[i]; r.Action {
		case ActionNarrow, ActionStepUp:
			names[i] += "(" + r.For.String() + ")"
		case ActionShadow:
			names[i] += "(would " + string(r.Would) + ")"
		}
		if c := p.Rules[i].Corroborate; c != nil {
			names[i] += "(corroborated: " + c.String() + ")"
		}
		if p.Rules[i].DryRun {
			names[i] += "(dry-run)"
		}
	}
	s := strings.Join(names, ", ")
	if p.DryRun {
		s = "dry-run: " + s
	}
	return s
}

// String says what the corroboration requires.
func (c *Corroboration) String() string {
	var parts []string
	if c.MinEnforcers > 0 {
		parts = append(parts, strconv.Itoa(c.MinEnforcers)+" enforcers")
	}
	if c.RequireAllowed {
		parts = append(parts, "an allowed request")
	}
	return strings.Join(parts, " and ") + " within " + c.Within.String()
}

// matches reports whether r matches a without looking at the combination.
func (r *Rule) matches(a *events.AnomalyDetected) bool {
	if len(r.Detectors) > 0 && !slices.Contains(r.Detectors, a.Detector) {
		return false
	}
	if r.MinSeverity != "" && events.SeverityRank(a.Severity) < events.SeverityRank(r.MinSeverity) {
		return false
	}
	if r.MinRisk > 0 && !(a.Risk >= r.MinRisk) {
		return false
	}
	if len(r.Tenants) > 0 && !slices.Contains(r.Tenants, a.Tenant) {
		return false
	}
	if len(r.Holders) > 0 && !slices.Contains(r.Holders, a.Holder) {
		return false
	}
	if len(r.AllOf) > 0 && !slices.Contains(r.AllOf, a.Detector) {
		return false
	}
	return true
}
