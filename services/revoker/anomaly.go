package revoker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/response"
)

// ResponseRecord is what the revoker did about one anomaly: the
// anomaly-response record kept in memory (Responses), counted in metrics
// and logged as an audit line. Dry runs leave no ledger event; this record
// is their trace.
type ResponseRecord struct {
	At        time.Time `json:"at"`
	AnomalyID string    `json:"anomaly_id"`
	TokenID   string    `json:"token_id"`
	Tenant    string    `json:"tenant"`
	Holder    string    `json:"holder"`
	Detector  string    `json:"detector"`
	Severity  string    `json:"severity"`
	// Rule is the response rule that matched ("" when none did).
	Rule string `json:"rule,omitempty"`
	// Decision is the policy's verdict; Outcome what was done.
	Decision response.Outcome `json:"decision"`
	Outcome  alert.Outcome    `json:"outcome"`
	// Related are the other anomalies of a combination rule.
	Related []string `json:"related,omitempty"`
	// Enforcer is the enforcer the anomaly's usage event is attributed to.
	Enforcer string `json:"enforcer,omitempty"`
	// Corroboration is what a rule with corroborate found, or what it
	// missed (decision uncorroborated: alerted, not revoked).
	Corroboration string `json:"corroboration,omitempty"`
}

// respond applies the response policy to one anomaly: revoke, record a dry
// run, alert, or page for a break-glass token; then alert on-call. An
// error leaves the anomaly unacknowledged for a retry.
func (r *Revoker) respond(ctx context.Context, env events.Envelope, a *events.AnomalyDetected) error {
	now := r.now()
	r.stats.anomalies.Add(1)
	if a.IsSource() {
		r.respondSource(now, a)
		return nil
	}
	info, known := r.index.get(a.TokenID, now)
	if !known {
		r.syncIndex(ctx)
		info, known = r.index.get(a.TokenID, now)
	}
	if !known && a.EventTime.Add(r.o.MaxTokenTTL).Before(now) {
		// Any token used that long ago has expired since: nothing to do.
		r.stats.stale.Add(1)
		r.o.Log.Debug().Str("anomaly_id", a.AnomalyID).Str("token_id", a.TokenID).Msg("stale anomaly skipped")
		return nil
	}
	if !known {
		info = TokenInfo{ID: a.TokenID, Tenant: a.Tenant, Holder: a.Holder, Expiry: now.Add(r.o.MaxTokenTTL)}
	}
	dead := info.Revoked
	if !dead {
		d, err := r.denied(ctx, info)
		if err != nil {
			return err
		}
		dead = d
	}
	dec := r.engine.Decide(a, info.BreakGlass)
	reason := fmt.Sprintf("%s anomaly %s (severity %s, response rule %s)", a.Detector, a.AnomalyID, a.Severity, ruleName(dec.Rule))
	if dec.Corroboration != "" && dec.Outcome != response.OutcomeUncorroborated {
		reason += "; " + dec.Corroboration
	}
	n := alert.Notice{
		TokenID: a.TokenID, Tenant: a.Tenant, Holder: a.Holder, BreakGlass: info.BreakGlass,
		Observation: alert.Observation{AnomalyID: a.AnomalyID, Detector: a.Detector, Severity: a.Severity,
			Seen: a.Evidence.Seen, Baseline: a.Evidence.Baseline, SourceIP: a.SourceIP, At: a.EventTime, Details: a.Evidence.Details},
		Severity: dec.Severity, Rule: dec.Rule,
		ResolveAt: info.Expiry, ResolveReason: "token expired",
	}
	log := r.o.Log.With().Str("anomaly_id", a.AnomalyID).Str("token_id", a.TokenID).Str("tenant", a.Tenant).
		Str("holder", a.Holder).Str("detector", a.Detector).Str("severity", a.Severity).Str("rule", dec.Rule).
		Str("enforcer", a.Enforcer).Logger()
	switch {
	case dec.Outcome == response.OutcomeBreakGlass:
		n.Outcome = alert.OutcomeBreakGlass
		n.Action = "Break-glass token: the policy would have " + wouldHave(dec.Step) + "."
	case dead:
		n.Outcome = alert.OutcomeAlreadyRevoked
		n.Action = "No action needed: enforcers already deny it."
		n.ResolveAt = now.Add(r.o.ResolveQuiet)
		n.ResolveReason = fmt.Sprintf("token already dead; no new anomaly for %s", r.o.ResolveQuiet)
	case dec.Outcome == response.OutcomeRevoke:
		res, err := r.Revoke(ctx, Request{Kind: events.RevokeToken, TokenID: a.TokenID, Tenant: a.Tenant, Holder: a.Holder,
			Actor: r.o.Source, Reason: reason, AnomalyID: a.AnomalyID})
		if err != nil {
			return fmt.Errorf("revoke token %s: %w", a.TokenID, err)
		}
		n.Outcome = alert.OutcomeRevoked
		if len(res.Revoked) == 0 {
			n.Outcome = alert.OutcomeAlreadyRevoked
		}
		n.Action = "Reason: " + reason + "."
	case dec.Outcome == response.OutcomeNarrow || dec.Outcome == response.OutcomeStepUp:
		q := RestrictRequest{TokenID: a.TokenID, Step: dec.Step, For: dec.For, Networks: knownNetworks(a), Escalate: true,
			Actor: r.o.Source, Reason: reason, Rule: dec.Rule, AnomalyID: a.AnomalyID, Risk: a.Risk}
		res, err := r.restrict(ctx, info, q, now)
		if errors.Is(err, ErrBadRequest) && len(q.Networks) > 0 {
			// Evidence the revoker cannot read: the token's own networks
			// (or a step-up) instead.
			log.Warn().Err(err).Msg("known networks of the evidence unusable; narrowing to the token's own")
			q.Networks = nil
			res, err = r.restrict(ctx, info, q, now)
		}
		if err != nil {
			return fmt.Errorf("%s token %s: %w", dec.Step, a.TokenID, err)
		}
		switch {
		case res.Already == "revoked":
			n.Outcome = alert.OutcomeAlreadyRevoked
			n.Action = "No action needed: enforcers already deny it."
		case res.Step == events.StepNarrow:
			n.Outcome = alert.OutcomeQuarantined
			n.Action = fmt.Sprintf("Quarantined until %s: only its read scopes (%s) from its holder's known networks (%s). Reason: %s.",
				res.Until.UTC().Format(time.RFC3339), orNone(res.Scopes), orNone(res.Networks), reason)
		default:
			n.Outcome = alert.OutcomeSteppedUp
			n.Action = fmt.Sprintf("Stepped up until %s: denied unless the request presents the client certificate the token is bound to. Reason: %s.",
				res.Until.UTC().Format(time.RFC3339), reason)
			if res.Escalated != "" {
				n.Action += " (" + res.Escalated + ")"
			}
		}
		if res.Already == "restricted" {
			n.Action += " Already in force: unchanged."
		}
	case dec.Outcome == response.OutcomeShadow:
		if err := r.Shadow(ctx, info, dec.Step, r.o.Source, reason, dec.Rule, a.AnomalyID, a.Risk); err != nil {
			return fmt.Errorf("shadow of token %s: %w", a.TokenID, err)
		}
		n.Outcome = alert.OutcomeAlertOnly
		n.Action = "Shadow rule " + dec.Rule + ": the policy would have " + wouldHave(dec.Step) + " (recorded on the ledger; nothing changed)."
		log.Info().Bool("audit", true).Bool("shadow", true).Str("would", dec.Step).Str("reason", reason).
			Msg("shadow: step recorded, nothing changed")
	case dec.Outcome == response.OutcomeUncorroborated:
		// One enforcer's word (possibly a forged or stolen credential's),
		// or denials only: on-call decides.
		n.Outcome = alert.OutcomeAlertOnly
		step := ruleStep(r.engine.Policy(), dec.Rule)
		n.Action = fmt.Sprintf("Not %s: response rule %s %s only on corroborated evidence, %s.", pastStep(step), dec.Rule, presentStep(step), dec.Corroboration)
		log.Info().Bool("audit", true).Str("would", step).Str("corroboration", dec.Corroboration).
			Msg("rule matched without corroboration: alerted only")
	case dec.Outcome == response.OutcomeDryRun:
		n.Outcome = alert.OutcomeDryRun
		n.Action = "The policy would have " + wouldHave(dec.Step) + ": " + reason + "."
		// The audit line of a dry run: no ledger event, no denylist entry.
		msg := "dry run: token would have been revoked"
		if dec.Step != events.StepRevoke {
			msg = "dry run: token would have been restricted (" + dec.Step + ")"
		}
		log.Info().Bool("audit", true).Bool("dry_run", true).Str("would", dec.Step).Str("reason", reason).Msg(msg)
	default:
		n.Outcome = alert.OutcomeAlertOnly
	}
	if len(dec.Related) > 0 {
		n.Action += fmt.Sprintf(" Combination with anomalies %v.", dec.Related)
	}
	r.alerts.Notify(n)
	if n.Outcome == alert.OutcomeRevoked {
		r.alerts.Resolve(a.TokenID, "token revoked by "+r.o.Source+": "+reason)
	}
	r.record(ResponseRecord{At: now, AnomalyID: a.AnomalyID, TokenID: a.TokenID, Tenant: a.Tenant, Holder: a.Holder,
		Detector: a.Detector, Severity: a.Severity, Rule: dec.Rule, Decision: dec.Outcome, Outcome: n.Outcome, Related: dec.Related,
		Enforcer: a.Enforcer, Corroboration: dec.Corroboration})
	log.Info().Str("decision", string(dec.Outcome)).Str("outcome", string(n.Outcome)).Msg("anomaly handled")
	return nil
}

// respondSource handles a source-level anomaly (a burst of forged or
// unreadable tokens from one network): there is no token to look up,
// deny or revoke, so it is alerted on — with what the matching rule would
// have done — and recorded. Its alert is grouped under "source:<network>"
// and resolves after ResolveQuiet.
func (r *Revoker) respondSource(now time.Time, a *events.AnomalyDetected) {
	dec := r.engine.Decide(a, false)
	// Alerts group by token id: a source groups by its network instead,
	// so two forging sources are two alerts.
	src := a.Evidence.Details["network"]
	if src == "" {
		src = a.SourceIP
	}
	n := alert.Notice{
		TokenID: "source:" + src, Tenant: a.Tenant, Holder: a.Holder,
		Observation: alert.Observation{AnomalyID: a.AnomalyID, Detector: a.Detector, Severity: a.Severity,
			Seen: a.Evidence.Seen, Baseline: a.Evidence.Baseline, SourceIP: a.SourceIP, At: a.EventTime, Details: a.Evidence.Details},
		Severity: dec.Severity, Rule: dec.Rule, Outcome: alert.OutcomeAlertOnly,
		Action:        "Source " + a.SourceIP + ": no token to revoke; block or investigate the source.",
		ResolveAt:     now.Add(r.o.ResolveQuiet),
		ResolveReason: fmt.Sprintf("no new anomaly from the source for %s", r.o.ResolveQuiet),
	}
	if dec.Corroboration != "" {
		n.Action += " (" + dec.Corroboration + ")"
	}
	r.alerts.Notify(n)
	r.record(ResponseRecord{At: now, AnomalyID: a.AnomalyID, TokenID: a.TokenID, Tenant: a.Tenant, Holder: a.Holder,
		Detector: a.Detector, Severity: a.Severity, Rule: dec.Rule, Decision: dec.Outcome, Outcome: n.Outcome, Enforcer: a.Enforcer,
		Corroboration: dec.Corroboration})
	r.o.Log.Info().Str("anomaly_id", a.AnomalyID).Str("subject", events.AnomalySource).Str("source_ip", a.SourceIP).
		Str("tenant", a.Tenant).Str("detector", a.Detector).Str("severity", a.Severity).Str("rule", dec.Rule).
		Str("decision", string(dec.Outcome)).Str("outcome", string(n.Outcome)).Msg("source anomaly alerted")
}

// wouldHave says what a step would have done, for alerts.
func wouldHave(step string) string {
	switch step {
	case events.StepRevoke:
		return "revoked it"
	case events.StepNarrow:
		return "quarantined it (narrow)"
	case events.StepStepUp:
		return "stepped it up"
	}
	return "only alerted"
}

// pastStep and presentStep name a step in an alert's sentence.
func pastStep(step string) string {
	switch step {
	case events.StepNarrow:
		return "quarantined"
	case events.StepStepUp:
		return "stepped up"
	}
	return "revoked"
}

func presentStep(step string) string {
	switch step {
	case events.StepNarrow:
		return "quarantines"
	case events.StepStepUp:
		return "steps up"
	}
	return "revokes"
}

// ruleStep is the step the named rule of p takes ("" when it takes none).
func ruleStep(p *response.Policy, name string) string {
	for i := range p.Rules {
		if p.Rules[i].Name == name {
			return p.Rules[i].Action.Step()
		}
	}
	return ""
}

func ruleName(r string) string {
	if r == "" {
		return "(none: alert)"
	}
	return r
}

func (r *Revoker) record(rec ResponseRecord) {
	r.stats.response(string(rec.Outcome))
	r.respMu.Lock()
	defer r.respMu.Unlock()
	r.responses = append(r.responses, rec)
	if over := len(r.responses) - r.o.MaxResponses; over > 0 {
		r.responses = append(r.responses[:0:0], r.responses[over:]...)
	}
}

// Responses returns the most recent anomaly-response records, oldest
// first (at most Options.MaxResponses).
func (r *Revoker) Responses() []ResponseRecord {
	r.respMu.Lock()
	defer r.respMu.Unlock()
	return append([]ResponseRecord(nil), r.responses...)
}
