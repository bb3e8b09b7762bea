package detect

import "time"

// checkMultiNetwork flags use of one token from several networks at once:
// at least MinNetworks distinct networks within Window, and more than one
// token ever used at once while learning (the token's own figure once it
// is learnt, else its holder's), when the event itself comes from a
// network outside the judging baseline. It runs after the network sets
// were updated with the event.
func (e *Engine) checkMultiNetwork(s *tokenState, o *obs) {
	cfg := &e.cfg.MultiNetwork
	n := &s.core.net
	h := o.h
	since := secs32(o.t - int64(cfg.Window/time.Second))
	count := n.concurrent(since)
	if !o.tokLearned && count > int(n.maxConcurrent) {
		n.maxConcurrent = uint8(count)
	}
	if !o.holderLearned && count > int(h.maxConcurrent) {
		h.maxConcurrent = uint8(count)
	}
	if !o.tokLearned && !o.holderLearned {
		return
	}
	maxConc, whose := h.maxConcurrent, "its holder's tokens"
	level := LevelHolder
	if o.tokLearned {
		maxConc, whose, level = n.maxConcurrent, "the token", LevelToken
	}
	// The alert goes to a use from outside the baseline: the use that
	// makes the crowd, not the holder's own traffic next to it.
	need := max(cfg.MinNetworks, int(maxConc)+1)
	if count < need || o.knownNetworkJudged(s) {
		return
	}
	e.signal(s, o, detMultiNetwork, level)
	if !cfg.Enabled || !e.admit(s, o, detMultiNetwork) {
		return
	}
	var recent uint16
	for i := 0; i < maxNetworks; i++ {
		if n.used&bit(i) != 0 && n.last[i] >= since {
			recent |= bit(i)
		}
	}
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	e.emit(s, o, detMultiNetwork, level, cfg.Severity,
		itoa(count)+" networks within "+cfg.Window.String()+": "+n.list(recent, p4, p6),
		"at most "+itoa(int(maxConc))+" network(s) at once for "+whose+" while learning; the token's known networks: "+n.list(n.known, p4, p6),
		map[string]string{
			"networks":       itoa(count),
			"unknown":        itoa(popcount(recent &^ n.known)),
			"max_concurrent": itoa(int(maxConc)),
		})
}
