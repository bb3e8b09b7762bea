package detect

import "time"

// checkMultiNetwork flags use from several networks at once: at least
// MinNetworks distinct networks within Window, and more than the token ever
// used at once while learning, when the event itself comes from a network
// outside the baseline. It runs after the network set was updated with the
// event.
func (e *Engine) checkMultiNetwork(s *tokenState, o *obs, learned bool) {
	cfg := &e.cfg.MultiNetwork
	n := &s.core.net
	since := secs32(o.t - int64(cfg.Window/time.Second))
	count := n.concurrent(since)
	if !learned {
		if count > int(n.maxConcurrent) {
			n.maxConcurrent = uint8(count)
		}
		return
	}
	// The alert goes to a use from outside the baseline: the use that
	// makes the crowd, not the holder's own traffic next to it.
	need := max(cfg.MinNetworks, int(n.maxConcurrent)+1)
	if !cfg.Enabled || count < need || o.knownNetwork(s) || !e.admit(s, o, detMultiNetwork) {
		return
	}
	var recent uint16
	for i := 0; i < maxNetworks; i++ {
		if n.used&bit(i) != 0 && n.last[i] >= since {
			recent |= bit(i)
		}
	}
	p4, p6 := e.cfg.IPv4Prefix, e.cfg.IPv6Prefix
	e.emit(s, o, detMultiNetwork, cfg.Severity,
		itoa(count)+" networks within "+cfg.Window.String()+": "+n.list(recent, p4, p6),
		"at most "+itoa(int(n.maxConcurrent))+" network(s) at once while learning; known networks: "+n.list(n.known, p4, p6),
		map[string]string{
			"networks":       itoa(count),
			"unknown":        itoa(popcount(recent &^ n.known)),
			"max_concurrent": itoa(int(n.maxConcurrent)),
		})
}
