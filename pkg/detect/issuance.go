package detect

// checkIssuance judges a use of a token from a network unlike the one it
// was requested from (events.TokenIssued.Requested) and unknown to its
// holder, with a client unlike the requester's and unknown to the holder:
// a credential minted for a workload in one place and used from another.
// It needs no learning — it speaks on the token's first request — and
// stays silent when the client matches the requester's (the same workload
// behind another egress) or the holder's baseline has the network or the
// client: the holder's history is its issuance→use pattern (tokens
// requested by CI from one network, used by the workload from its own).
//
// A holder with no history yet (its very first token, a workload just
// deployed) cannot tell a token requested by CI and used by the workload
// from a stolen one: there the mismatch is half a risk factor, unless the
// network is foreign to the tenant (Engine.foreign). When the client is
// unknown on either side only the network speaks, one severity step
// lower. It alerts once per (token, network). It runs before the sets are
// updated.
func (e *Engine) checkIssuance(s *tokenState, o *obs) {
	cfg := &e.cfg.IssuanceMismatch
	iss := &s.core.iss
	if iss.flags&issNet == 0 || !o.hasAddr || o.postEnd {
		return
	}
	if iss.net == o.key && (iss.flags&issV6 != 0) == o.v6 {
		return
	}
	h := o.h
	if h.nets.isKnown(o.hslot) || o.knownNetwork(s) {
		// The holder uses that network; or the token's own baseline has
		// it (its first use from there was judged).
		return
	}
	clientUnknown := iss.client == 0 || o.cli == 0
	if !clientUnknown && (o.cli == iss.client || h.clients.isKnown(o.hcslot)) {
		return
	}
	level := LevelToken
	if h.nets.known != 0 {
		level = LevelHolder
	}
	strong := h.nets.known != 0 || e.foreign(s, o)
	w := e.weights[detIssuanceMismatch]
	if clientUnknown || !strong {
		// Only the network speaks (and new_network says as much), or
		// nothing tells the workload's own use from another: half a
		// signal.
		w *= weakFactor
	}
	e.signalWeighted(s, o, detIssuanceMismatch, level, w)
	if !strong {
		return
	}
	if o.slot >= 0 && s.core.net.alerted&bit(o.slot) != 0 {
		e.stats.suppressed[detIssuanceMismatch]++
		return
	}
	if !cfg.Enabled || !e.admit(s, o, detIssuanceMismatch) {
		return
	}
	o.netAlerted = true
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	reqNet := netString(iss.net, iss.flags&issV6 != 0, p4, p6)
	network := netString(o.key, o.v6, p4, p6)
	sev := cfg.Severity
	seen := "use from network " + network + " (source " + o.u.SourceIP + ")"
	reqClient := "unknown"
	if iss.client != 0 {
		reqClient = e.clients.name(iss.client)
	}
	if clientUnknown {
		sev = deescalate(sev)
		seen += "; client unknown on one side"
	} else {
		seen += " with client " + o.u.Client
	}
	baseline := "token requested from network " + reqNet + " with client " + reqClient + "; holder " + s.holder + "'s known networks: " +
		h.nets.list(h.nets.known, func(k uint64, v6 bool) string { return netString(k, v6, p4, p6) }) +
		", known clients: " + h.clients.list(h.clients.known, func(k uint64, _ bool) string { return e.clients.name(k) })
	if h.nets.known == 0 {
		baseline += "; the network is outside every address space of the tenant's workloads"
	}
	e.emit(s, o, detIssuanceMismatch, level, sev, seen, baseline, map[string]string{
		"network":           network,
		"requested_network": reqNet,
		"requested_client":  reqClient,
	})
}

// deescalate returns the next severity down.
func deescalate(sev string) string {
	switch sev {
	case "critical":
		return "high"
	case "high":
		return "medium"
	}
	return "low"
}
