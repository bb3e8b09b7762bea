package detect

// checkIssuance flags a use of a token from a network unlike the one it
// was requested from (events.TokenIssued.Requested) and unknown to its
// holder, with a client unlike the requester's and unknown to the holder:
// a credential minted for a workload in one place and used from another.
// It needs no learning at all — it fires on the token's first request —
// and stays silent when the client matches the requester's (the same
// workload behind another egress) or the holder's baseline has the
// network. When the client is unknown on either side only the network
// speaks, one severity step lower. It runs before the sets are updated.
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
	if clientUnknown {
		// Only the network speaks, and new_network says as much: half a
		// signal, so the two do not count one fact twice.
		e.signalWeighted(s, o, detIssuanceMismatch, level, e.weights[detIssuanceMismatch]*weakFactor)
	} else {
		e.signal(s, o, detIssuanceMismatch, level)
	}
	if !cfg.Enabled || !e.admit(s, o, detIssuanceMismatch) {
		return
	}
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
