package revoker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
)

// Canary tokens.
//
// The issuer records a canary on the ledger (TokenIssued.Canary); the
// revoker puts it on the denylist at once, with a record that marks it, so
// that every enforcer denies it from the start and knows it for a canary.
// An enforcer reports each use on events.CanarySubject; the revoker checks
// that the token is a canary of the ledger (an enforcer's word alone cannot
// page anyone about a real token) and alerts on-call: critical, with the
// source, the client, the route and the holder it was planted for. A use
// from a known secret scanner's verification (CanaryOptions.ScannerAgents,
// ScannerNetworks) is labelled as such and alerted at low severity, not
// paged.

// CanaryOptions recognise the verification probes of secret scanners.
type CanaryOptions struct {
	// ScannerAgents are user-agent substrings (case-insensitive) of
	// secret scanners' verification requests (default
	// DefaultScannerAgents).
	ScannerAgents []string
	// ScannerNetworks are their source networks.
	ScannerNetworks []netip.Prefix
}

// DefaultScannerAgents are user-agent substrings of common secret
// scanners that try the tokens they find.
var DefaultScannerAgents = []string{"trufflehog", "gitguardian", "ggshield", "gitleaks", "secret-scanning", "secretscanner"}

// canaryCounters count canary reports.
type canaryCounters struct {
	trips, probes, refused atomic.Uint64
}

// CanaryStats are the canary counters: Trips alerted critical, Probes
// recognised as a scanner's verification, Refused reports about tokens
// that are not canaries or malformed.
type CanaryStats struct {
	Trips, Probes, Refused uint64
}

// CanaryStats returns the canary counters.
func (r *Revoker) CanaryStats() CanaryStats {
	return CanaryStats{Trips: r.canaryStats.trips.Load(), Probes: r.canaryStats.probes.Load(), Refused: r.canaryStats.refused.Load()}
}

// denyCanary puts a canary on the denylist; false when the write failed
// and the message was handed back for a retry.
func (r *Revoker) denyCanary(msg jetstream.Msg, env events.Envelope, p *events.TokenIssued) bool {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	rec := events.DenyRecord{Kind: events.RevokeToken, TokenID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, KeyID: p.KeyID,
		Reason: "canary token", Actor: p.Actor, RevokedAt: env.Time, Expiry: p.Claims.Expiry, Canary: true}
	if _, err := r.writeToken(ctx, rec, 0); err != nil {
		r.o.Log.Error().Err(err).Str("token_id", p.TokenID).Msg("canary: denylist write failed, will retry")
		r.pendWrite(rec)
		_ = msg.NakWithDelay(retryDelay)
		return false
	}
	r.o.Log.Info().Str("token_id", p.TokenID).Str("tenant", p.Tenant).Str("holder", p.Holder).Msg("canary token on the denylist")
	return true
}

// startCanaries listens to the enforcers' canary reports (one replica of
// a queue group answers each).
func (r *Revoker) startCanaries() error {
	sub, err := r.o.NC.QueueSubscribe(events.SubjectCanaryPrefix+"*", "cordon-revoker", r.canaryMsg)
	if err != nil {
		return fmt.Errorf("revoker: subscribe %s*: %w", events.SubjectCanaryPrefix, err)
	}
	r.canarySub = sub
	return nil
}

// canaryMsg alerts on one report.
func (r *Revoker) canaryMsg(m *nats.Msg) {
	var rep events.CanaryTripped
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Validate() != nil || m.Subject != events.CanarySubject(rep.Enforcer) {
		r.canaryStats.refused.Add(1)
		r.o.Log.Warn().Str("subject", m.Subject).Msg("canary: malformed report, or one naming another enforcer, ignored")
		return
	}
	info, ok := r.index.get(rep.TokenID, r.now())
	if !ok {
		r.syncIndex(r.ctx)
		info, ok = r.index.get(rep.TokenID, r.now())
	}
	if !ok || !info.Canary {
		r.canaryStats.refused.Add(1)
		r.o.Log.Warn().Str("token_id", rep.TokenID).Str("enforcer", rep.Enforcer).Msg("canary: report about a token the ledger does not know as a canary, ignored")
		return
	}
	probe := r.scannerProbe(rep)
	sev, what := events.SeverityCritical, "Canary token used"
	action := "Denied everywhere (it always is). Whoever holds it took it from where it was planted for " + info.Tenant + "/" + info.Holder + "."
	if probe {
		r.canaryStats.probes.Add(1)
		sev, what = events.SeverityLow, "Canary token verified by a secret scanner"
		action = "A secret scanner's verification request (recognised by its client or network), not paged: the canary was found where it was planted."
	} else {
		r.canaryStats.trips.Add(1)
	}
	seen := fmt.Sprintf("%s from %s (%s) on %s %s at enforcer %s", what, orDash(rep.SourceIP), orDash(rep.UserAgent), orDash(rep.Method), orDash(rep.Route), rep.Enforcer)
	r.alerts.Notify(alert.Notice{TokenID: rep.TokenID, Tenant: info.Tenant, Holder: info.Holder,
		Observation: alert.Observation{AnomalyID: "canary-" + rep.TokenID + "-" + rep.Time.UTC().Format("20060102T150405.000000000"),
			Detector: events.DetectorCanaryUsed, Severity: sev, Seen: seen,
			Baseline: "a canary token is never used: it was minted for no one", SourceIP: rep.SourceIP, At: rep.Time,
			Details: map[string]string{"enforcer": rep.Enforcer, "route": rep.Route, "method": rep.Method, "client": rep.UserAgent,
				"planted_for": info.Tenant + "/" + info.Holder, "scanner_probe": fmt.Sprint(probe)}},
		Severity: sev, Outcome: alert.OutcomeAlreadyRevoked, Action: action,
		ResolveAt: info.Expiry, ResolveReason: "canary expired"})
	r.o.Log.Warn().Str("token_id", rep.TokenID).Str("tenant", info.Tenant).Str("holder", info.Holder).Str("source_ip", rep.SourceIP).
		Str("enforcer", rep.Enforcer).Bool("scanner_probe", probe).Msg("canary token used")
}

// scannerProbe reports whether a use is a secret scanner's verification.
func (r *Revoker) scannerProbe(rep events.CanaryTripped) bool {
	agents := r.o.Canary.ScannerAgents
	if agents == nil {
		agents = DefaultScannerAgents
	}
	ua := strings.ToLower(rep.UserAgent)
	if ua != "" && slices.ContainsFunc(agents, func(a string) bool { return a != "" && strings.Contains(ua, strings.ToLower(a)) }) {
		return true
	}
	if a, err := netip.ParseAddr(rep.SourceIP); err == nil {
		return slices.ContainsFunc(r.o.Canary.ScannerNetworks, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
