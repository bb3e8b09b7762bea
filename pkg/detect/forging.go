package detect

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// observeSourceless runs forging_burst on a usage event that names no
// token: the enforcer's folded denials of one source (UsageDecided.Count
// decisions). It counts, per source network, the decisions with one of
// Reasons in a window that opens at the first of them — and, for a source
// network that no holder's baseline holds, in a SlowWindow too — and
// alerts once a count reaches MinCount, at most once per Cooldown per
// source. The anomaly is about the source (events.AnomalySource): TokenID
// is events.SourceTokenID and SourceIP the source.
func (e *Engine) observeSourceless(env events.Envelope, u *events.UsageDecided) []events.AnomalyDetected {
	e.stats.sourceless++
	cfg := &e.cfg.ForgingBurst
	if !hasString(cfg.Reasons, u.Reason) {
		return nil
	}
	a, err := netip.ParseAddr(u.SourceIP)
	if err != nil {
		return nil
	}
	key, v6 := netKey(a, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
	e.keyBuf = sourceKey(e.keyBuf, key, v6)
	i, _ := e.sources.touchBytes(e.keyBuf)
	src := e.sources.at(i)
	t := env.Time.Unix()
	win := int64(cfg.Window / time.Second)
	if src.start == 0 || t-src.start >= win || t < src.start-win {
		src.start, src.count = t, 0
	}
	n := uint64(u.Requests())
	src.count += n
	slowWin := int64(cfg.SlowWindow / time.Second)
	slow := false
	if h := netHash(key, v6); slowWin > 0 && !e.workNets.has(h) && !e.sharedWorkNetwork(h, t) {
		if src.sStart == 0 || t-src.sStart >= slowWin || t < src.sStart-slowWin {
			src.sStart, src.sCount = t, 0
		}
		src.sCount += n
		slow = src.count < uint64(cfg.MinCount) && src.sCount >= uint64(cfg.MinCount)
	}
	if src.count < uint64(cfg.MinCount) && !slow {
		return nil
	}
	if src.cool != 0 && t-src.cool < int64(e.cfg.Cooldown/time.Second) && t >= src.cool {
		e.stats.suppressed[detForgingBurst]++
		return nil
	}
	if !cfg.Enabled {
		return nil
	}
	src.cool = t
	e.stats.anomalies[detForgingBurst]++
	sev := cfg.Severity
	if src.count >= 10*uint64(cfg.MinCount) {
		sev = escalate(sev)
	}
	network := netString(key, v6, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
	tenant := u.Tenant
	if tenant == "" {
		tenant = "_"
	}
	count := strconv.FormatUint(src.count, 10)
	start, window, pattern := src.start, cfg.Window, "burst"
	baseline := "a burst is " + itoa(cfg.MinCount) + " decisions with reasons " + joinOrNone(cfg.Reasons) + " from one network within " +
		cfg.Window.String() + "; someone guessing or forging tokens"
	if slow {
		count = strconv.FormatUint(src.sCount, 10)
		start, window, pattern = src.sStart, cfg.SlowWindow, "slow"
		baseline = "from a network that carries no known workload's tokens, " + itoa(cfg.MinCount) + " decisions with reasons " +
			joinOrNone(cfg.Reasons) + " within " + cfg.SlowWindow.String() + " are a burst too; someone guessing or forging tokens, slowly"
	}
	return []events.AnomalyDetected{{
		AnomalyID: anomalyID(env.ID, ForgingBurst, env.Time),
		Detector:  ForgingBurst,
		Severity:  sev,
		TokenID:   events.SourceTokenID,
		Subject:   events.AnomalySource,
		Tenant:    tenant,
		EventID:   env.ID.String(),
		EventTime: env.Time,
		SourceIP:  u.SourceIP,
		Evidence: events.Evidence{
			Seen: count + " requests naming no readable token from network " + network + " (source " + u.SourceIP + ") within " +
				fmtDur(t-start) + ", latest denied " + u.Reason + " by enforcer " + u.Enforcer,
			Baseline: baseline,
			Details: map[string]string{
				"network": network, "count": count, "reason": u.Reason, "enforcer": u.Enforcer, "service": u.Service,
				"method": u.Method, "route": u.Route, "decision": u.Decision, "level": "source", "window_start": fmtTime(start),
				"window": window.String(), "pattern": pattern,
			},
		},
	}}
}
