package detect

// observeClient runs new_client around the update of the token's and the
// holder's client sets. Clients are compared by family ("curl/8" and
// "curl/7" are one client: an upgrade is not a new client); a request
// without a client (an older enforcer) says nothing.
func (e *Engine) observeClient(s *tokenState, o *obs) {
	if o.cli == 0 {
		return
	}
	h := o.h
	// Instances: from the holder's own networks.
	e.promote(&h.clients, o.hcslot, o, e.cfg.NewClient.PromoteAfter, func() bool { return h.nets.isKnown(o.hslot) })
	e.checkNewClient(s, o)
	c := &s.core.cli
	ts := o.tcslot
	if ts < 0 {
		ts = c.insert(o.cli)
	}
	if o.cliAlerted {
		c.alerted |= 1 << ts
	}
	if !o.tokLearned && o.allowed && !o.postEnd {
		c.known |= 1 << ts
	}
	hs := record(&h.clients, o.hcslot, o.cli, false, o)
	if o.allowed && !o.postEnd && h.clients.isKnown(hs) {
		o.tn.seen.add(mix64(o.cli ^ saltClient))
	}
}

// checkNewClient flags a request whose client is outside the judging
// baseline (the holder's once learnt, else the token's own), like
// checkNewNetwork; a client the holder knows but the learnt token never
// used is a weak token-level risk signal. A client family is one of the
// most stable traits of a workload (its code), so a new one alerts on its
// own — once per (token, client).
func (e *Engine) checkNewClient(s *tokenState, o *obs) {
	cfg := &e.cfg.NewClient
	h := o.h
	c := &s.core.cli
	tokKnown := o.tcslot >= 0 && c.known&(1<<o.tcslot) != 0
	var level string
	switch {
	case o.holderLearned:
		if h.clients.isKnown(o.hcslot) {
			if o.tokLearned && c.known != 0 && !tokKnown {
				e.signalWeak(s, o, detNewClient)
			}
			return
		}
		if h.clients.known == 0 {
			return // the holder's requests never named a client
		}
		level = LevelHolder
		if !o.tn.seen.has(mix64(o.cli ^ saltClient)) {
			level = LevelTenant
		}
	case o.tokLearned:
		if tokKnown || c.known == 0 {
			return
		}
		level = LevelToken
	default:
		return
	}
	e.signal(s, o, detNewClient, level)
	if o.tcslot >= 0 && c.alerted&(1<<o.tcslot) != 0 {
		e.stats.suppressed[detNewClient]++
		return
	}
	if !cfg.Enabled || !e.admit(s, o, detNewClient) {
		return
	}
	o.cliAlerted = true
	sev := cfg.Severity
	if !o.allowed {
		sev = escalate(sev)
	}
	name := func(k uint64, _ bool) string { return e.clients.name(k) }
	var baseline string
	if level == LevelToken {
		var list []string
		for i := 0; i < tokenClients; i++ {
			if c.known&(1<<i) != 0 {
				list = append(list, e.clients.name(c.keys[i]))
			}
		}
		baseline = "the token's known clients: " + joinOrNone(list) + "; learnt from " + itoa(int(s.core.learnEvents)) + " allowed uses"
	} else {
		baseline = "holder " + s.holder + "'s known clients: " + h.clients.list(h.clients.known, name) + "; learnt from " +
			itoa(int(h.learnEvents)) + " allowed uses of its tokens since " + fmtTime(h.firstSeen)
	}
	seen := "request with client " + o.u.Client + " (family " + e.clients.name(o.cli) + ") from " + o.u.SourceIP
	if level == LevelTenant {
		seen += "; no holder of tenant " + s.tenant + " uses it"
	}
	e.emit(s, o, detNewClient, level, sev, seen, baseline, map[string]string{"client_family": e.clients.name(o.cli)})
}

func joinOrNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	out := list[0]
	for _, s := range list[1:] {
		out += ", " + s
	}
	return out
}
