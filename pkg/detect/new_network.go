package detect

// checkNewNetwork judges a use from a network outside the baseline that
// judges the token: its holder's once the holder is learnt (so a new token
// of a known workload is judged from its first request), else the token's
// own once it is learnt, else — a workload deployed hours ago — its
// tenant's once the tenant is learnt.
//
// Where the network lies decides what the deviation means. Inside an
// address space the tenant's workloads use (Config.AddressSpace) it is a
// new subnet, cluster or egress: a risk factor that combines with others
// (risk_score), no alert on its own — a move or a rollout settles it
// (promotion). Outside all of them it is somewhere the tenant does not
// run: it alerts on its own, once per (token, network), at the tenant
// level. A network the holder knows but the (learnt) token never used is
// a weak, token-level risk signal. It runs before the sets are updated.
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
	case o.tenantLearned:
		// Neither the holder nor the token has a baseline to speak of:
		// only a network foreign to the tenant says anything.
		if h.nets.isKnown(o.hslot) || !e.foreign(s, o) {
			return
		}
	default:
		return
	}
	if !e.foreign(s, o) {
		e.signal(s, o, detNewNetwork, level)
		return
	}
	level = LevelTenant
	e.signal(s, o, detNewNetwork, level)
	if o.slot >= 0 && s.core.net.alerted&bit(o.slot) != 0 {
		e.stats.suppressed[detNewNetwork]++
		return
	}
	if !cfg.Enabled || !e.admit(s, o, detNewNetwork) {
		return
	}
	o.netAlerted = true
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	network := netString(o.key, o.v6, p4, p6)
	space := e.spaceString(o.key, o.v6)
	sev := cfg.Severity
	if !o.allowed {
		sev = escalate(sev)
	}
	seen := "use from network " + network + " (source " + o.u.SourceIP + ")"
	if o.hslot >= 0 {
		seen += ", first seen for the holder " + fmtTime(int64(h.nets.first[o.hslot])) + " and not yet part of its baseline"
	}
	seen += "; outside every address space of tenant " + s.tenant + "'s workloads (no network of " + space + " in the baselines of its learnt holders)"
	var baseline string
	known := 0
	judged := LevelTenant
	switch {
	case o.holderLearned:
		judged = LevelHolder
	case o.tokLearned:
		judged = LevelToken
	}
	switch {
	case o.holderLearned || !o.tokLearned && h.nets.known != 0:
		known = h.nets.countKnown()
		baseline = "holder " + s.holder + "'s known networks: " + h.nets.list(h.nets.known, func(k uint64, v6 bool) string { return netString(k, v6, p4, p6) }) +
			"; learnt from " + itoa(int(h.learnEvents)) + " allowed uses of its tokens since " + fmtTime(h.firstSeen)
	default:
		n := &s.core.net
		known = popcount(n.known)
		baseline = "the token's known networks: " + n.list(n.known, p4, p6) + "; learnt from " + itoa(int(s.core.learnEvents)) +
			" allowed uses since " + fmtTime(s.core.firstSeen)
	}
	if !o.holderLearned && !o.tokLearned {
		baseline += "; judged by the tenant's address spaces (neither the holder nor the token is learnt)"
	}
	e.emit(s, o, detNewNetwork, level, sev, seen, baseline, map[string]string{
		"network":              network,
		"address_space":        space,
		"foreign":              "true",
		"judged_by":            judged,
		"known_networks_count": itoa(known),
	})
}

func popcount(m uint16) int {
	c := 0
	for ; m != 0; m &= m - 1 {
		c++
	}
	return c
}
