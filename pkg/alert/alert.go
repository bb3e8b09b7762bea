package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Status is the state of an alert.
type Status string

// The alert statuses (the words Alertmanager uses).
const (
	StatusFiring   Status = "firing"
	StatusResolved Status = "resolved"
)

// Outcome is what Cordon did about the token.
type Outcome string

// The outcomes an alert reports.
const (
	// OutcomeRevoked: Cordon revoked the token.
	OutcomeRevoked Outcome = "revoked"
	// OutcomeDryRun: the policy says revoke, but Cordon runs in dry-run
	// mode and did nothing.
	OutcomeDryRun Outcome = "dry_run"
	// OutcomeAlertOnly: the policy says alert; the token is still valid.
	OutcomeAlertOnly Outcome = "alert_only"
	// OutcomeBreakGlass: a break-glass token, never revoked automatically.
	OutcomeBreakGlass Outcome = "break_glass"
	// OutcomeAlreadyRevoked: the token was already revoked or expired.
	OutcomeAlreadyRevoked Outcome = "already_revoked"
	// OutcomeQuarantined: Cordon quarantined the token for a while
	// (graduated response, narrow): only its read scopes, only from its
	// holder's known networks.
	OutcomeQuarantined Outcome = "quarantined"
	// OutcomeSteppedUp: Cordon denies the token for a while unless its
	// holder proves possession (graduated response, step_up).
	OutcomeSteppedUp Outcome = "stepped_up"
)

// Describe is a sentence saying what the outcome means.
func (o Outcome) Describe() string {
	switch o {
	case OutcomeRevoked:
		return "Cordon revoked the token; enforcers deny it everywhere."
	case OutcomeDryRun:
		return "Cordon would have revoked the token (dry run): nothing was revoked, the token is still valid."
	case OutcomeAlertOnly:
		return "Alert only: the token is still valid. Revoke it with `cordon revoke --token <id>` if this is not expected."
	case OutcomeBreakGlass:
		return "Break-glass token: never revoked automatically. Check who is using it now."
	case OutcomeAlreadyRevoked:
		return "The token was already revoked or expired; this is use of a dead token."
	case OutcomeQuarantined:
		return "Cordon quarantined the token: enforcers allow only its read scopes from its holder's known networks until the quarantine ends. Lift it with `cordon token release <id>`, or revoke it."
	case OutcomeSteppedUp:
		return "Cordon denies the token unless its holder presents the client certificate it is bound to, until the step-up ends. Lift it with `cordon token release <id>`, or revoke it."
	}
	return string(o)
}

// Observation is one anomaly seen on the token.
type Observation struct {
	AnomalyID string
	Detector  string
	Severity  string
	// Seen is what the detector saw; Baseline is what it expected.
	Seen     string
	Baseline string
	SourceIP string
	At       time.Time
	Details  map[string]string
}

// Alert is the state of the alert about one token, as sent to sinks.
type Alert struct {
	// Status is firing or resolved.
	Status Status
	// TokenID, Tenant and Holder identify the token (never the token itself).
	TokenID string
	Tenant  string
	Holder  string
	// BreakGlass marks a break-glass token.
	BreakGlass bool
	// Severity is the highest severity of the group (low … critical).
	Severity string
	// Outcome is what Cordon did, from the latest decision.
	Outcome Outcome
	// Rule names the response rule that decided.
	Rule string
	// Action details the outcome, such as the revocation reason.
	Action string
	// Observations are the most recent anomalies, oldest first.
	Observations []Observation
	// Count is the number of anomalies in the group (Observations may hold
	// fewer).
	Count int
	// StartsAt is when the group opened; UpdatedAt its last change;
	// EndsAt when it resolved (zero while firing).
	StartsAt  time.Time
	UpdatedAt time.Time
	EndsAt    time.Time
	// Resolution says why the alert resolved.
	Resolution string
	// Source names the Cordon instance that raised it.
	Source string
}

// GroupKey identifies the group: one per token.
func (a *Alert) GroupKey() string { return "cordon/token/" + a.TokenID }

// Fingerprint is a stable short hash of the group's identity (token id),
// the same for every update and the resolve.
func (a *Alert) Fingerprint() string {
	sum := sha256.Sum256([]byte(a.GroupKey()))
	return hex.EncodeToString(sum[:8])
}

// Detectors lists the detectors of the observations, without repeats.
func (a *Alert) Detectors() []string {
	var out []string
	for _, o := range a.Observations {
		dup := false
		for _, d := range out {
			if d == o.Detector {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, o.Detector)
		}
	}
	return out
}

// Latest is the most recent observation (zero when there is none).
func (a *Alert) Latest() Observation {
	if len(a.Observations) == 0 {
		return Observation{}
	}
	return a.Observations[len(a.Observations)-1]
}

// Summary is a one-line summary of the alert.
func (a *Alert) Summary() string {
	did := map[Outcome]string{
		OutcomeRevoked: "revoked", OutcomeDryRun: "would revoke (dry run)", OutcomeAlertOnly: "alert only",
		OutcomeBreakGlass: "BREAK-GLASS token", OutcomeAlreadyRevoked: "already revoked",
		OutcomeQuarantined: "quarantined", OutcomeSteppedUp: "stepped up",
	}[a.Outcome]
	if did == "" {
		did = string(a.Outcome)
	}
	s := fmt.Sprintf("Cordon: %s on token %s (%s/%s), %s — %s",
		strings.Join(a.Detectors(), "+"), a.TokenID, a.Tenant, a.Holder, a.Severity, did)
	if a.Status == StatusResolved {
		s = "RESOLVED " + s
	}
	return s
}

// Seen describes what the detectors saw, one line per observation.
func (a *Alert) Seen() string {
	lines := make([]string, 0, len(a.Observations))
	for _, o := range a.Observations {
		lines = append(lines, fmt.Sprintf("%s (%s) at %s: %s", o.Detector, o.Severity, o.At.UTC().Format(time.RFC3339), o.Seen))
	}
	return strings.Join(lines, "\n")
}

// Baseline describes the baselines the observations broke.
func (a *Alert) Baseline() string {
	lines := make([]string, 0, len(a.Observations))
	for _, o := range a.Observations {
		b := o.Baseline
		if b == "" {
			b = "(none recorded)"
		}
		lines = append(lines, fmt.Sprintf("%s: %s", o.Detector, b))
	}
	return strings.Join(lines, "\n")
}

// Did says what Cordon did, with the action's details.
func (a *Alert) Did() string {
	s := a.Outcome.Describe()
	if a.Action != "" {
		s += " " + a.Action
	}
	if a.Status == StatusResolved && a.Resolution != "" {
		s += " Resolved: " + a.Resolution
	}
	return s
}

// Description is the full text of the alert: what was seen, the baseline,
// and what Cordon did.
func (a *Alert) Description() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Token %s of %s/%s: %d anomal%s since %s.\n", a.TokenID, a.Tenant, a.Holder, a.Count,
		map[bool]string{true: "y", false: "ies"}[a.Count == 1], a.StartsAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Seen:\n%s\n", a.Seen())
	fmt.Fprintf(&b, "Baseline:\n%s\n", a.Baseline())
	fmt.Fprintf(&b, "Cordon: %s", a.Did())
	return b.String()
}

// clone returns a deep copy (sinks get their own).
func (a *Alert) clone() Alert {
	c := *a
	c.Observations = make([]Observation, len(a.Observations))
	copy(c.Observations, a.Observations)
	return c
}
