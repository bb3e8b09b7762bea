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
}

// enumTrackers is how many candidate enumeration runs a token follows at
// once, so that a workload's own requests interleaved with an enumeration
// neither extend nor break it.
const enumTrackers = 4

// enumRun is one candidate run: a route shape, the last id requested, how
// many sequential steps in a row and since when.
type enumRun struct {
	key   uint32
	run   uint16
	last  uint64
	start int64
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
		now, since := secs32(o.t), secs32(o.t-win)
		slot, oldest := -1, 0
		for i := range p.seen {
			if p.at[i] != 0 && p.seen[i] == h {
				slot = i
				break
			}
			if p.at[i] < p.at[oldest] {
				oldest = i
			}
		}
		isNew := true
		if slot >= 0 {
			isNew = p.at[slot] < since
		} else {
			slot = oldest
			p.seen[slot], p.at[slot] = h, 0
		}
		if now > p.at[slot] {
			p.at[slot] = now
		}
		n, first := 0, now
		for i := range p.at {
			if p.at[i] != 0 && p.at[i] >= since {
				n++
				first = min(first, p.at[i])
			}
		}
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
		return
	}
	if r.run < ^uint16(0) {
		r.run++
	}
	r.last = id
	// A run is judged against a baseline: the holder's (or the token's)
	// must be learnt, and the run longer than Factor times the holder's
	// breadth, so a batch job that walks its records in order does not
	// look like an enumeration.
	enum := int(r.run) >= cfg.EnumRun && (o.holderLearned || o.tokLearned) &&
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
