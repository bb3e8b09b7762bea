package detect

import (
	"math"
	"time"
)

// actionKey hashes an action: the method, the route with every segment
// holding a digit folded (ids, UUIDs, dates; the real enforcer reports
// patterns anyway) and the scope.
func actionKey(method, route, scope string) uint64 {
	h := fnv64(method) ^ 0x9e3779b97f4a7c15
	seg, digit := 0, false
	flush := func(end int) {
		if digit {
			h = (h ^ '#') * 1099511628211
		} else {
			for i := seg; i < end; i++ {
				h = (h ^ uint64(route[i])) * 1099511628211
			}
		}
	}
	for i := 0; i < len(route); i++ {
		c := route[i]
		if c == '?' {
			route = route[:i]
			break
		}
		if c == '/' {
			flush(i)
			h = (h ^ '/') * 1099511628211
			seg, digit = i+1, false
			continue
		}
		if c >= '0' && c <= '9' {
			digit = true
		}
	}
	flush(len(route))
	return mix64(h ^ fnv64(scope))
}

// checkNewAction judges ("new terms") an action — method, route, scope —
// that the holder did not do within its history (the current and the
// previous History-long generation of its action filter), once the holder
// is learnt. Every action joins the filter, so each new one counts once
// per holder: a deploy adding a route is one risk factor, not one per
// token. A lone new action is a risk factor (deployments add routes); it
// alerts on its own when its scope is sensitive, or when the token did
// MinDistinct distinct new actions within risk.window (trying what it can
// do), and each new action raises the factor's weight (noisy-OR). Only
// allowed requests count (what the holder does; denials are probing's). A
// filter false positive hides a new action; it never invents one.
func (e *Engine) checkNewAction(s *tokenState, o *obs) {
	cfg := &e.cfg.NewAction
	h := o.h
	u := o.u
	k := actionKey(u.Method, u.Route, u.Scope)
	hist := int64(cfg.History.Seconds())
	switch {
	case h.actGen == 0:
		h.actGen = o.t
	case o.t-h.actGen >= 2*hist:
		h.actions = [2]bloom1k{}
		h.actGen = o.t
	case o.t-h.actGen >= hist:
		h.actions[1], h.actions[0] = h.actions[0], bloom1k{}
		h.actGen = o.t
	}
	if !o.allowed || o.postEnd {
		// Only what the holder did counts: a denied attempt is probing's
		// to judge, and does not teach.
		return
	}
	known := h.actions[0].has(k) || h.actions[1].has(k)
	h.actions[0].add(k)
	if known || !o.holderLearned {
		return
	}
	r := &s.core.risk
	now := max(secs32(o.t), 1)
	if r.actsAt == 0 || now < r.actsAt || now-r.actsAt > uint32(e.cfg.Risk.Window/time.Second) {
		r.acts = 0
	}
	if r.acts < ^uint8(0) {
		r.acts++
	}
	r.actsAt = now
	n := int(r.acts)
	e.signalWeighted(s, o, detNewAction, LevelHolder, 1-math.Pow(1-e.weights[detNewAction], float64(n)))
	if !o.sensitive && n < cfg.MinDistinct {
		return
	}
	if !cfg.Enabled || !e.admit(s, o, detNewAction) {
		return
	}
	sev := cfg.Severity
	if o.sensitive {
		sev = escalate(sev)
	}
	seen := "action " + u.Method + " " + u.Route
	if u.Scope != "" {
		seen += " (scope " + u.Scope + ")"
	}
	seen += ", allowed, never done by holder " + s.holder + " within " + cfg.History.String()
	if n > 1 {
		seen += "; the token's " + itoa(n) + "th such action within " + e.cfg.Risk.Window.String()
	}
	e.emit(s, o, detNewAction, LevelHolder, sev, seen,
		"holder "+s.holder+"'s actions since "+fmtTime(min(h.actGen, o.t))+" and the "+cfg.History.String()+" before; learnt from "+
			itoa(int(h.learnEvents))+" allowed uses of its tokens since "+fmtTime(h.firstSeen)+"; one new action is a risk factor, "+
			itoa(cfg.MinDistinct)+" by one token or a sensitive one alert",
		map[string]string{"sensitive": strconvBool(o.sensitive), "new_actions": itoa(n)})
}

func strconvBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
