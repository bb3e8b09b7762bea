package detect

import (
	"strconv"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// How a token's end became known.
const (
	endNone     uint8 = iota
	endRevoked        // ledger: token.revoked
	endRotated        // ledger: token.rotated, grace over
	endExpired        // ledger: claims expiry or token.expired
	endReported       // an enforcer denied it as revoked/expired
)

var endNames = [...]string{"", "revoked", "retired by rotation", "expired", "reported revoked/expired by an enforcer"}

// setEnd records an end of the token; the earliest end wins.
func (c *tokenCore) setEnd(at int64, kind uint8) {
	if at <= 0 {
		return
	}
	if c.endAt == 0 || at < c.endAt {
		c.endAt, c.endKind = at, kind
	}
}

// checkUseAfterRevoke flags use of a token after its end. Denied retries
// from the token's own networks within Grace of the end are stragglers (a
// client that has not picked up its rotated token yet); an allowed use after
// the end, a use from elsewhere, or use continuing past Grace is not.
//
// A token the engine never saw (no ledger event, no use) that an enforcer
// denies as revoked or expired ended before anything the engine knows: it
// alerts at once.
func (e *Engine) checkUseAfterRevoke(s *tokenState, o *obs, learned bool) {
	cfg := &e.cfg.UseAfterRevoke
	c := &s.core
	u := o.u
	endReason := !o.allowed && hasString(cfg.Reasons, u.Reason)
	// The enforcer's word counts when the ledger told us of no end yet
	// (missed, evicted, or a token the issuer never saw).
	if endReason && (c.endAt == 0 || c.endAt > o.t) {
		c.setEnd(o.t, endReported)
		if o.fresh {
			o.postEnd = true
			e.signal(s, o, detUseAfterRevoke, LevelToken)
			if cfg.Enabled && e.admit(s, o, detUseAfterRevoke) {
				e.emit(s, o, detUseAfterRevoke, LevelToken, cfg.Severity,
					"use of a token denied as "+u.Reason+" from "+u.SourceIP,
					"token unknown to the ledger and never used before: it ended before anything this auditor knows",
					map[string]string{"end": endNames[endReported], "enforcer": u.Enforcer})
			}
			return
		}
	}
	if c.endAt == 0 || o.t < c.endAt+int64(cfg.ClockSkew/time.Second) {
		return
	}
	o.postEnd = true
	after := o.t - c.endAt
	// A straggler comes from where the token was in use: its baseline, its
	// holder's, or a network it was used from before its end (a workload
	// that moved lately). Without any use while valid there is nothing to
	// tolerate stragglers by.
	usedBefore := o.slot >= 0 && int64(c.net.first[o.slot]) < c.endAt
	elsewhere := o.hasAddr && (c.learnEvents == 0 || !o.knownNetwork(s) && !o.h.nets.isKnown(o.hslot) && !usedBefore)
	if !o.allowed && after <= int64(cfg.Grace/time.Second) && !elsewhere {
		return
	}
	e.signal(s, o, detUseAfterRevoke, LevelToken)
	if !cfg.Enabled || !e.admit(s, o, detUseAfterRevoke) {
		return
	}
	sev := cfg.Severity
	why := "used " + fmtDur(after) + " after its end"
	switch {
	case o.allowed:
		sev = events.SeverityCritical
		why = "allowed " + fmtDur(after) + " after its end: the denylist did not reach enforcer " + u.Enforcer
	case elsewhere:
		why += ", from a network outside its baseline"
	}
	seen := "token " + why + " (" + u.Decision + "/" + u.Reason + " from " + u.SourceIP + ")"
	baseline := "token " + endNames[c.endKind] + " at " + fmtTime(c.endAt) + "; stragglers tolerated for " +
		cfg.Grace.String() + " from known networks (" + c.net.list(c.net.known, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix) + ")"
	e.emit(s, o, detUseAfterRevoke, LevelToken, sev, seen, baseline, map[string]string{
		"end":         endNames[c.endKind],
		"end_at":      fmtTime(c.endAt),
		"after_s":     itoa(int(after)),
		"learned":     strconv.FormatBool(learned),
		"enforcer":    u.Enforcer,
		"ledger_seen": strconv.FormatBool(c.flags&flagLedger != 0),
	})
}
