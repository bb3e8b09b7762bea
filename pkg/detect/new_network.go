package detect

// checkNewNetwork flags a use from a network outside the baseline that
// judges the token: its holder's once the holder is learnt (so a new token
// of a known workload is judged from its first request), else the token's
// own once it is learnt. The level says which baseline broke — tenant
// when no holder of the tenant uses the network either. A network the
// holder knows but the (learnt) token never used is a weak, token-level
// risk signal, not an alert. It runs before the sets are updated.
func (e *Engine) checkNewNetwork(s *tokenState, o *obs) {
	cfg := &e.cfg.NewNetwork
	h := o.h
	var level string
	switch {
	case o.holderLearned:
		if h.nets.isKnown(o.hslot) {
			if o.tokLearned && !o.knownNetwork(s) {
				e.signalWeak(s, o, detNewNetwork)
			}
			return
		}
		level = LevelHolder
		if !o.tn.seen.has(netHash(o.key, o.v6)) {
			level = LevelTenant
		}
	case o.tokLearned:
		if o.knownNetwork(s) {
			return
		}
		level = LevelToken
	default:
		return
	}
	e.signal(s, o, detNewNetwork, level)
	if !cfg.Enabled || !e.admit(s, o, detNewNetwork) {
		return
	}
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	network := netString(o.key, o.v6, p4, p6)
	sev := cfg.Severity
	if !o.allowed {
		sev = escalate(sev)
	}
	seen := "use from network " + network + " (source " + o.u.SourceIP + ")"
	var baseline string
	known := 0
	if level == LevelToken {
		n := &s.core.net
		if o.slot >= 0 {
			seen += ", first seen " + fmtTime(int64(n.first[o.slot])) + " and not yet part of the baseline"
		}
		known = popcount(n.known)
		baseline = "the token's known networks: " + n.list(n.known, p4, p6) + "; learnt from " + itoa(int(s.core.learnEvents)) +
			" allowed uses since " + fmtTime(s.core.firstSeen)
	} else {
		if o.hslot >= 0 {
			seen += ", first seen for the holder " + fmtTime(int64(h.nets.first[o.hslot])) + " and not yet part of its baseline"
		}
		if level == LevelTenant {
			seen += "; no holder of tenant " + s.tenant + " uses it"
		}
		known = h.nets.countKnown()
		baseline = "holder " + s.holder + "'s known networks: " + h.nets.list(h.nets.known, func(k uint64, v6 bool) string { return netString(k, v6, p4, p6) }) +
			"; learnt from " + itoa(int(h.learnEvents)) + " allowed uses of its tokens since " + fmtTime(h.firstSeen)
	}
	e.emit(s, o, detNewNetwork, level, sev, seen, baseline, map[string]string{
		"network":        network,
		"known_networks": itoa(known),
	})
}

func popcount(m uint16) int {
	c := 0
	for ; m != 0; m &= m - 1 {
		c++
	}
	return c
}
