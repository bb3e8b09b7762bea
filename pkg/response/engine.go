package response

import (
	"container/list"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// Outcome is what the revoker does about one anomaly.
type Outcome string

// The outcomes of a decision.
const (
	// OutcomeRevoke: revoke the token and alert.
	OutcomeRevoke Outcome = "revoke"
	// OutcomeDryRun: the policy says revoke (or narrow, or step up:
	// Decision.Step), but in dry-run mode; record and alert what would
	// have been done.
	OutcomeDryRun Outcome = "dry_run"
	// OutcomeNarrow: quarantine the token for Decision.For (only its read
	// scopes, only from its holder's known networks) and alert.
	OutcomeNarrow Outcome = "narrow"
	// OutcomeStepUp: deny the token for Decision.For unless the request
	// presents the client certificate it is bound to, and alert.
	OutcomeStepUp Outcome = "step_up"
	// OutcomeShadow: record on the ledger the step the rule would have
	// taken (Decision.Step) and change nothing.
	OutcomeShadow Outcome = "shadow"
	// OutcomeAlert: alert only; the token stays alive.
	OutcomeAlert Outcome = "alert"
	// OutcomeBreakGlass: a break-glass token; never auto-revoked, paged
	// at critical severity.
	OutcomeBreakGlass Outcome = "break_glass"
	// OutcomeUncorroborated: a revoke rule matched but its corroborate
	// requirement is not met (yet): alert only, saying what is missing
	// (Decision.Corroboration). A later anomaly that brings the missing
	// evidence revokes.
	OutcomeUncorroborated Outcome = "uncorroborated"
)

// Decision is the policy's verdict on one anomaly.
type Decision struct {
	// Outcome is what to do.
	Outcome Outcome
	// Rule names the rule that matched; empty when none did (alert).
	Rule string
	// WouldRevoke is true when the matching rule's action is revoke, even
	// if the outcome is a dry run or a break-glass page.
	WouldRevoke bool
	// Step is the graduated-response step the matching rule takes or,
	// for a dry run, a shadow or a break-glass page, would take
	// (events.StepNarrow, StepStepUp, StepRevoke); "" for an alert.
	Step string
	// For is how long a narrow or step_up restriction lasts.
	For time.Duration
	// Severity is the severity to alert with: the anomaly's (the highest
	// of a combination), critical for a break-glass token.
	Severity string
	// Related are the ids of the other anomalies that completed a
	// combination rule.
	Related []string
	// Corroboration, for a rule with corroborate, is the evidence found
	// (a revoke) or what is missing (OutcomeUncorroborated), in words.
	Corroboration string
}

// EngineOptions bounds an Engine's memory.
type EngineOptions struct {
	// MaxTokens bounds the tokens whose recent anomalies are remembered
	// for combination rules; the least recently seen is forgotten first
	// (default 100000).
	MaxTokens int
	// PerToken bounds the anomalies remembered per token (default 32).
	PerToken int
}

// Engine applies a Policy to anomalies. It remembers recent anomalies per
// token, within bounds, to evaluate combination rules. It is safe for
// concurrent use.
type Engine struct {
	p        *Policy
	window   time.Duration
	maxTok   int
	perToken int

	mu     sync.Mutex
	tokens map[string]*list.Element // → *history
	lru    *list.List               // front = most recently seen
}

type seen struct {
	id       string
	detector string
	severity string
	enforcer string
	decision string
	at       time.Time
}

type history struct {
	token string
	items []seen
}

// NewEngine returns an engine for p (Default when nil).
func NewEngine(p *Policy, o EngineOptions) *Engine {
	if p == nil {
		p = Default()
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 100_000
	}
	if o.PerToken <= 0 {
		o.PerToken = 32
	}
	return &Engine{p: p, window: p.MaxWindow(), maxTok: o.MaxTokens, perToken: o.PerToken,
		tokens: map[string]*list.Element{}, lru: list.New()}
}

// Policy returns the engine's policy.
func (e *Engine) Policy() *Policy { return e.p }

// Tracked is the number of tokens with remembered anomalies (the bound is
// EngineOptions.MaxTokens).
func (e *Engine) Tracked() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tokens)
}

// Decide records the anomaly and returns what to do about it. breakGlass
// says whether the token is a break-glass token. Deciding the same anomaly
// id twice (a redelivery) does not count it twice.
//
// A source-level anomaly (a.IsSource: a burst of forged tokens from one
// network) names no token: the first matching rule names it, but the
// outcome is always OutcomeAlert — there is nothing to revoke — and it is
// not remembered for combination rules.
func (e *Engine) Decide(a *events.AnomalyDetected, breakGlass bool) Decision {
	d := Decision{Outcome: OutcomeAlert, Severity: a.Severity}
	if a.IsSource() {
		for i := range e.p.Rules {
			r := &e.p.Rules[i]
			if !r.matches(a) || len(r.AllOf) > 0 {
				continue
			}
			d.Rule = r.Name
			if r.Action.restricts() {
				d.Corroboration = "source-level anomaly: no token to " + string(r.Action)
			}
			break
		}
		return d
	}
	hist := e.record(a)
	for i := range e.p.Rules {
		r := &e.p.Rules[i]
		if !r.matches(a) {
			continue
		}
		related, sev, ok := combination(r, a, hist)
		if !ok {
			continue
		}
		d.Rule, d.Related = r.Name, related
		if events.SeverityRank(sev) > events.SeverityRank(d.Severity) {
			d.Severity = sev
		}
		if r.Action == ActionShadow {
			d.Outcome, d.Step = OutcomeShadow, r.Would.Step()
			d.WouldRevoke = r.Would == ActionRevoke
			break
		}
		if r.Action.restricts() {
			if r.Corroborate != nil {
				ok, why := corroborated(r.Corroborate, a, hist)
				d.Corroboration = why
				if !ok {
					d.Outcome = OutcomeUncorroborated
					break
				}
			}
			d.Step, d.For = r.Action.Step(), r.For
			d.WouldRevoke = r.Action == ActionRevoke
			switch r.Action {
			case ActionNarrow:
				d.Outcome = OutcomeNarrow
			case ActionStepUp:
				d.Outcome = OutcomeStepUp
			default:
				d.Outcome = OutcomeRevoke
			}
			if e.p.DryRun || r.DryRun {
				d.Outcome = OutcomeDryRun
			}
		}
		break
	}
	if breakGlass {
		d.Outcome = OutcomeBreakGlass
		d.Severity = events.SeverityCritical
	}
	return d
}

// combination checks the all_of condition of r against the token's recent
// anomalies: every other detector of r.AllOf must have fired within
// r.Within of a. It returns the related anomaly ids and their highest
// severity.
func combination(r *Rule, a *events.AnomalyDetected, hist []seen) ([]string, string, bool) {
	if len(r.AllOf) == 0 {
		return nil, "", true
	}
	var related []string
	sev := a.Severity
	for _, det := range r.AllOf {
		if det == a.Detector {
			continue
		}
		found := false
		for i := len(hist) - 1; i >= 0; i-- {
			h := hist[i]
			if h.detector != det || h.id == a.AnomalyID {
				continue
			}
			if d := h.at.Sub(a.EventTime); d <= r.Within && d >= -r.Within {
				related = append(related, h.id)
				if events.SeverityRank(h.severity) > events.SeverityRank(sev) {
					sev = h.severity
				}
				found = true
				break
			}
		}
		if !found {
			return nil, "", false
		}
	}
	return related, sev, true
}

// corroborated checks c against the token's anomalies within c.Within of
// a (hist includes a). It says, in words, what it found or what is missing.
func corroborated(c *Corroboration, a *events.AnomalyDetected, hist []seen) (bool, string) {
	var enforcers []string
	allowed := false
	for _, h := range hist {
		if d := h.at.Sub(a.EventTime); d > c.Within || d < -c.Within {
			continue
		}
		if h.enforcer != "" && !slices.Contains(enforcers, h.enforcer) {
			enforcers = append(enforcers, h.enforcer)
		}
		allowed = allowed || h.decision == events.DecisionAllow
	}
	slices.Sort(enforcers)
	var missing, found []string
	if c.MinEnforcers > 0 {
		s := fmt.Sprintf("%d of %d enforcers (%s) reported it within %s", len(enforcers), c.MinEnforcers, orNone(enforcers), c.Within)
		if len(enforcers) < c.MinEnforcers {
			missing = append(missing, s)
		} else {
			found = append(found, s)
		}
	}
	if c.RequireAllowed {
		if allowed {
			found = append(found, "an allowed request was among them")
		} else {
			missing = append(missing, fmt.Sprintf("only denied requests within %s, no allowed one", c.Within))
		}
	}
	if len(missing) > 0 {
		return false, "uncorroborated: " + strings.Join(missing, "; ")
	}
	return true, "corroborated: " + strings.Join(found, "; ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// record remembers a for combination and corroboration rules and returns
// a copy of the token's recent anomalies (including a). Without such rules
// it remembers nothing.
func (e *Engine) record(a *events.AnomalyDetected) []seen {
	if e.window == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var h *history
	if el, ok := e.tokens[a.TokenID]; ok {
		e.lru.MoveToFront(el)
		h = el.Value.(*history)
	} else {
		if len(e.tokens) >= e.maxTok {
			old := e.lru.Back()
			e.lru.Remove(old)
			delete(e.tokens, old.Value.(*history).token)
		}
		h = &history{token: a.TokenID}
		e.tokens[a.TokenID] = e.lru.PushFront(h)
	}
	dup := false
	for _, s := range h.items {
		if s.id == a.AnomalyID {
			dup = true
			break
		}
	}
	if !dup {
		h.items = append(h.items, seen{id: a.AnomalyID, detector: a.Detector, severity: a.Severity,
			enforcer: a.Enforcer, decision: a.Decision, at: a.EventTime})
	}
	// Forget what no window can reach any more (relative to the newest
	// event time), then cap the count.
	newest := a.EventTime
	for _, s := range h.items {
		if s.at.After(newest) {
			newest = s.at
		}
	}
	kept := h.items[:0]
	for _, s := range h.items {
		if newest.Sub(s.at) <= e.window {
			kept = append(kept, s)
		}
	}
	if over := len(kept) - e.perToken; over > 0 {
		kept = kept[over:]
	}
	h.items = kept
	return append([]seen(nil), h.items...)
}
