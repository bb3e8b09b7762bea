package detect

import (
	"strconv"
	"strings"
	"time"
)

// maxProbeDistinct is how many distinct denials a probing window holds.
const maxProbeDistinct = 16

// probeState is a token's scope-probing window and enumeration tracker.
type probeState struct {
	// enum follows up to enumTrackers candidate runs of sequential ids.
	enum [enumTrackers]enumRun
	// seen holds hashes of distinct (method, route shape, scope) denials
	// with a probing reason, and at when each was last denied (Unix
	// seconds, 0 = empty): the window slides over them.
	seen [maxProbeDistinct]uint32
	at   [maxProbeDistinct]uint32
	// slow and slowAt are the same for distinct denied actions (method,
	// route shape, scope; resources aside) over Horizon; slowAlarm is the
	// count of the last slow alert (0: none in the horizon), so the next
	// one waits for twice as many.
	slow      [maxProbeDistinct]uint32
	slowAt    [maxProbeDistinct]uint32
	slowAlarm uint8
}

// distinctIn records hash h at now in the sliding set (keys, at) and
// counts the distinct values since since. isNew says h was not in the set
// since then; first is the oldest time counted.
func distinctIn(keys, at *[maxProbeDistinct]uint32, h, now, since uint32) (n int, isNew bool, first uint32) {
	slot, oldest := -1, 0
	for i := range keys {
		if at[i] != 0 && keys[i] == h {
			slot = i
			break
		}
		if at[i] < at[oldest] {
			oldest = i
		}
	}
	isNew = true
	if slot >= 0 {
		isNew = at[slot] < since
	} else {
		slot = oldest
		keys[slot], at[slot] = h, 0
	}
	if now > at[slot] {
		at[slot] = now
	}
	first = now
	for i := range at {
		if at[i] != 0 && at[i] >= since {
			n++
			first = min(first, at[i])
		}
	}
	return n, isNew, first
}

// enumTrackers is how many candidate enumeration runs a token follows at
// once, so that a workload's own requests interleaved with an enumeration
// neither extend nor break it.
const enumTrackers = 4

// enumRun is one candidate run: a route shape, the last id requested, how
// many sequential steps in a row and since when, and whether it began
// once a baseline (the token's or its holder's) was learnt — a run that
// began while learning is the workload's own behaviour.
type enumRun struct {
	key    uint32
	run    uint16
	last   uint64
	start  int64
	learnt uint8
}

const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

func fnvString(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= fnvPrime32
	}
	return h
}

func fnvByte(h uint32, b byte) uint32 { return (h ^ uint32(b)) * fnvPrime32 }

// idSegment drops the query and finds the last all-digit path segment,
// [start, end), or -1, -1: "/v1/users/1001/history" has id 1001, and
// "/v1/users" none. The route's shape is its method and route with that
// segment replaced by '#'.
func idSegment(route string) (r string, start, end int) {
	if q := strings.IndexByte(route, '?'); q >= 0 {
		route = route[:q]
	}
	segEnd := len(route)
	for i := len(route) - 1; i >= -1; i-- {
		if i >= 0 && route[i] != '/' {
			continue
		}
		seg := route[i+1 : segEnd]
		if n := len(seg); n > 0 && n <= 18 && allDigits(seg) {
			return route, i + 1, segEnd
		}
		segEnd = i
	}
	return route, -1, -1
}

func shapeOf(method, route string, start, end int) uint32 {
	h := fnvByte(fnvString(fnvOffset32, method), ' ')
	if start < 0 {
		return fnvString(h, route)
	}
	h = fnvString(h, route[:start])
	h = fnvByte(h, '#')
	return fnvString(h, route[end:])
}

func idOf(route string, start, end int) (id uint64) {
	for i := start; i >= 0 && i < end; i++ {
		id = id*10 + uint64(route[i]-'0')
	}
	return id
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkScopeProbing flags a token that collects MinDistinct distinct denials
// (method, route shape, scope, resource) with one of the probing reasons
// within a sliding Window, or that walks a route's ids sequentially (the
// route's last numeric segment, or the numeric resource the enforcer
// reports), EnumRun steps within Window, allowed or not, once its holder
// (or itself) is learnt and beyond Factor times the holder's breadth
// (resource_sweep). Up to enumTrackers runs are followed at once, so the
// workload's own requests in between do not hide a run.
func (e *Engine) checkScopeProbing(s *tokenState, o *obs) {
	cfg := &e.cfg.ScopeProbing
	if !cfg.Enabled {
		return
	}
	p := &s.core.probe
	u := o.u
	win := int64(cfg.Window / time.Second)
	probe := !o.allowed && hasString(cfg.Reasons, u.Reason)
	route, start, end := idSegment(u.Route)
	hasID := start >= 0
	shape, id := shapeOf(u.Method, route, start, end), idOf(route, start, end)
	if !hasID {
		// The real enforcer reports the route pattern and the resource
		// apart: "GET /invoices/{id}" and "42".
		if rid, ok := resourceID(u.Resource); ok {
			hasID, id = true, rid
		}
	}
	if !probe && (cfg.EnumRun == 0 || !hasID) {
		return
	}

	if probe {
		// Distinct (method, route, scope, resource): one action denied on
		// many resources is probing too.
		h := fnvString(fnvByte(fnvString(fnvByte(shape, ' '), u.Scope), ' '), u.Resource)
		now, since := max(secs32(o.t), 1), secs32(o.t-win)
		n, isNew, first := distinctIn(&p.seen, &p.at, h, now, since)
		// Alert when a new distinct denial makes the count.
		if isNew && n >= cfg.MinDistinct {
			e.signal(s, o, detScopeProbing, "")
		}
		if isNew && n >= cfg.MinDistinct && e.admit(s, o, detScopeProbing) {
			e.emit(s, o, detScopeProbing, "", cfg.Severity,
				itoa(n)+" distinct "+u.Reason+" denials within "+fmtDur(int64(now-first))+", latest "+u.Method+" "+u.Route,
				"probing means "+itoa(cfg.MinDistinct)+" distinct denials (method, route, scope, resource) with reasons "+
					strings.Join(cfg.Reasons, ", ")+" within "+cfg.Window.String(),
				map[string]string{"pattern": "distinct_denials", "distinct": itoa(n), "first_denial": fmtTime(int64(first))})
		}
		if cfg.Horizon > 0 {
			e.checkSlowProbing(s, o, shape, now)
		}
	}

	if cfg.EnumRun == 0 || !hasID {
		return
	}
	var r *enumRun
	for i := range p.enum {
		c := &p.enum[i]
		if c.run == 0 || c.key != shape || o.t-c.start > win {
			continue
		}
		if id == c.last {
			return // a retry is not a step
		}
		if absDiff(id, c.last) <= uint64(cfg.EnumMaxStep) {
			r = c
			break
		}
	}
	if r == nil {
		// Start a run in place of the shortest, then oldest, candidate.
		r = &p.enum[0]
		for i := 1; i < enumTrackers; i++ {
			c := &p.enum[i]
			if c.run < r.run || c.run == r.run && c.start < r.start {
				r = c
			}
		}
		*r = enumRun{key: shape, run: 1, last: id, start: o.t}
		if o.holderLearned || o.tokLearned {
			r.learnt = 1
		}
		return
	}
	if r.run < ^uint16(0) {
		r.run++
	}
	r.last = id
	// A run is judged against a baseline: the holder's (or the token's)
	// must have been learnt when it began, and the run longer than Factor
	// times the holder's
	// breadth, so a batch job that walks its records in order does not
	// look like an enumeration.
	enum := int(r.run) >= cfg.EnumRun && r.learnt != 0 &&
		float64(r.run) > e.cfg.ResourceSweep.Factor*o.h.breadthNow(o.t)
	if enum {
		e.signal(s, o, detScopeProbing, "")
	}
	if enum && e.admit(s, o, detScopeProbing) {
		e.emit(s, o, detScopeProbing, "", cfg.Severity,
			itoa(int(r.run))+" sequential ids on "+u.Method+" "+u.Route+" in "+fmtDur(o.t-r.start),
			"enumeration means "+itoa(cfg.EnumRun)+" requests in a row to one route whose id moves by at most "+
				itoa(cfg.EnumMaxStep)+" within "+cfg.Window.String(),
			map[string]string{"pattern": "enumeration", "run": itoa(int(r.run)), "last_id": strconv.FormatUint(id, 10)})
	}
}

// checkSlowProbing counts the token's distinct denied actions (method,
// route shape, scope) over Horizon — one probe every few minutes or every
// hour adds up — and alerts when a new one makes MinDistinct and more
// than the holder's tokens are usually denied within Horizon (a workload
// with a misconfigured call repeats one mistake). Every count teaches the
// holder's usual while the holder learns, and counts that do not alert
// after; after an alert the next one waits for twice the count.
func (e *Engine) checkSlowProbing(s *tokenState, o *obs, shape, now uint32) {
	cfg := &e.cfg.ScopeProbing
	p := &s.core.probe
	u := o.u
	h := fnvString(fnvByte(shape, ' '), u.Scope)
	n, isNew, first := distinctIn(&p.slow, &p.slowAt, h, now, secs32(o.t-int64(cfg.Horizon/time.Second)))
	if n < cfg.MinDistinct {
		p.slowAlarm = 0
	}
	if !isNew {
		return
	}
	usual := o.h.deniedNow(o.t)
	if !o.holderLearned || p.slowAlarm == 0 && (n < cfg.MinDistinct || n <= usual) {
		// While the holder learns, what its tokens are denied is its
		// usual, alert or not; after, only counts that do not alert.
		o.h.teachDenied(n, o.t)
	}
	if n < cfg.MinDistinct || n <= usual || p.slowAlarm != 0 && n < 2*int(p.slowAlarm) {
		return
	}
	p.slowAlarm = uint8(min(n, 255))
	level := LevelToken
	if o.holderLearned {
		level = LevelHolder
	}
	e.signal(s, o, detScopeProbing, level)
	if !e.admit(s, o, detScopeProbing) {
		return
	}
	e.emit(s, o, detScopeProbing, level, cfg.Severity,
		itoa(n)+" distinct actions denied ("+strings.Join(cfg.Reasons, ", ")+") within "+fmtDur(int64(now-first))+", latest "+u.Method+" "+u.Route+
			" ("+u.Reason+")",
		"slow probing means "+itoa(cfg.MinDistinct)+" distinct denied actions (method, route, scope) within "+cfg.Horizon.String()+
			", more than holder "+s.holder+"'s tokens are usually denied within it (at most "+itoa(usual)+" in the last one to two weeks)",
		map[string]string{"pattern": "slow_distinct_denials", "distinct": itoa(n), "usual": itoa(usual), "first_denial": fmtTime(int64(first))})
}

// resourceID reads the last part of a resource ("42", "acme/42") as a
// numeric id.
func resourceID(res string) (uint64, bool) {
	if i := strings.LastIndexByte(res, '/'); i >= 0 {
		res = res[i+1:]
	}
	if n := len(res); n == 0 || n > 18 || !allDigits(res) {
		return 0, false
	}
	return idOf(res, 0, len(res)), true
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}
