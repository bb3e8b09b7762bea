package detect

// checkNewNetwork flags, once the token's baseline is learnt, a use from a
// network that is not part of it. It runs before the network set is
// updated with the event.
func (e *Engine) checkNewNetwork(s *tokenState, o *obs, learned bool) {
	cfg := &e.cfg.NewNetwork
	if !cfg.Enabled || !learned || o.knownNetwork(s) {
		return
	}
	if !e.admit(s, o, detNewNetwork) {
		return
	}
	n := &s.core.net
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	network := netString(o.key, o.v6, p4, p6)
	sev := cfg.Severity
	if !o.allowed {
		sev = escalate(sev)
	}
	seen := "use from network " + network + " (source " + o.u.SourceIP + ")"
	if o.slot >= 0 {
		seen += ", first seen " + fmtTime(int64(n.first[o.slot])) + " and not yet part of the baseline"
	}
	baseline := "known networks: " + n.list(n.known, p4, p6) + "; learnt from " + itoa(int(s.core.learnEvents)) +
		" allowed uses since " + fmtTime(s.core.firstSeen)
	e.emit(s, o, detNewNetwork, sev, seen, baseline, map[string]string{
		"network":        network,
		"known_networks": itoa(popcount(n.known)),
	})
}

func popcount(m uint16) int {
	c := 0
	for ; m != 0; m &= m - 1 {
		c++
	}
	return c
}
