package detect

import (
	"math"
	"strconv"
	"time"
)

// sweepTrackers is how many routes a token's sweep windows follow at once.
const sweepTrackers = 2

// sweepBits is the size of a sweep window's distinct-resource bitmap.
const sweepBits = 256

// maxSweepDistinct bounds resource_sweep.min_distinct: linear counting on
// sweepBits bits stays accurate (a few percent) well past it.
const maxSweepDistinct = 200

// sweepTracker is one window of one route of a token: the resources it
// touched (hashed into a bitmap, counted by linear counting), how many
// distinct ones were denied, and whether the window was flagged; and the
// resources of the window before it, when it ended less than a window
// ago, so that the count slides: a sweep across a window's end is not cut
// in two halves that each look ordinary.
type sweepTracker struct {
	key     uint32 // route shape
	start   uint32 // window start, Unix seconds (0 = free)
	denied  uint16
	flagged uint8
	// pending is the count (+1; 0 = none) of the window before, which
	// teaches the holder's breadth once this one ends without a sweep: a
	// sweep's first window must not become its baseline.
	pending uint16
	bits    [sweepBits / 64]uint64
	prev    [sweepBits / 64]uint64
}

// distinct estimates the distinct resources of the window and the one
// before it.
func (w *sweepTracker) distinct() float64 { return linearCount(&w.bits, &w.prev) }

// own estimates the distinct resources of the window alone.
func (w *sweepTracker) own() float64 { return linearCount(&w.bits, &[sweepBits / 64]uint64{}) }

// linearCount estimates the distinct values hashed into the union of two
// bitmaps.
func linearCount(a, b *[sweepBits / 64]uint64) float64 {
	zero := 0
	for i := range a {
		zero += 64 - popcount64(a[i]|b[i])
	}
	if zero == 0 {
		return sweepBits * math.Log(sweepBits)
	}
	return -sweepBits * math.Log(float64(zero)/sweepBits)
}

func popcount64(x uint64) int {
	c := 0
	for ; x != 0; x &= x - 1 {
		c++
	}
	return c
}

// close ends a window at t and keeps its resources as the previous
// window's when the next one follows it at once (next: the same route
// goes on). A window teaches the holder its breadth only once the window
// after it ended without a sweep too (or none follows), so a sweep across
// a window's end does not raise its own baseline; while a flagged window
// alone still holds a sweep's count (sweepSize), the next one continues
// that sweep.
func (w *sweepTracker) close(h *holderState, t int64, win uint32, next bool, sweepSize func(float64) bool) {
	if w.start == 0 {
		*w = sweepTracker{}
		return
	}
	keep := next && secs32(t)-w.start <= 2*win
	var pending uint16
	if w.flagged == 0 {
		if w.pending > 0 {
			h.teachBreadth(float64(w.pending-1), t)
		}
		n := w.distinct()
		if keep {
			pending = uint16(min(n, maxSweepDistinct*4)) + 1
		} else {
			h.teachBreadth(n, t)
		}
	}
	bits, cont := w.bits, w.flagged != 0 && sweepSize(w.own())
	*w = sweepTracker{}
	if keep {
		w.prev, w.pending = bits, pending
		if cont {
			// A sweep still going at the window's end goes on in the
			// next: one episode, no new alert, nothing taught.
			w.flagged = 1
		}
	}
}

// checkSweep follows, per token and route (the enforcer's pattern), the
// distinct resources (events.UsageDecided.Resource) touched within
// Window. A window with
// MinDistinct distinct denied resources is a sweep outright — a workload
// is not denied on twenty different records; with allowed ones, it must
// also exceed Factor times the holder's breadth, once the holder is
// learnt, so a holder that normally reads many records stays quiet.
func (e *Engine) checkSweep(s *tokenState, o *obs) {
	cfg := &e.cfg.ResourceSweep
	u := o.u
	res := u.Resource
	if res == "" {
		return
	}
	shape := shapeOf(u.Method, u.Route, -1, -1)
	h := o.h
	now := secs32(o.t)
	win := uint32(cfg.Window / time.Second)
	var w *sweepTracker
	for i := range s.core.sweep {
		c := &s.core.sweep[i]
		if c.start != 0 && c.key == shape {
			w = c
			break
		}
	}
	sweepSize := func(n float64) bool {
		return n >= float64(cfg.MinDistinct) && n > cfg.Factor*h.breadthNow(o.t)
	}
	if w != nil && now-w.start > win && now > w.start {
		w.close(h, o.t, win, true, sweepSize)
		w.key = shape
	}
	if w == nil {
		// Take a free window, else the oldest one.
		w = &s.core.sweep[0]
		for i := range s.core.sweep {
			c := &s.core.sweep[i]
			if c.start == 0 || c.start < w.start {
				w = c
			}
		}
		w.close(h, o.t, win, false, sweepSize)
	}
	if w.start == 0 {
		w.key, w.start = shape, max(now, 1)
	}
	b := fnv64(res) % sweepBits
	isNew := w.bits[b/64]&(1<<(b%64)) == 0
	w.bits[b/64] |= 1 << (b % 64)
	if !isNew || w.flagged != 0 {
		return
	}
	if !o.allowed && w.denied < ^uint16(0) {
		w.denied++
	}
	n := w.distinct()
	breadth := h.breadthNow(o.t)
	deniedSweep := int(w.denied) >= cfg.MinDistinct
	if !deniedSweep && !(o.holderLearned && n >= float64(cfg.MinDistinct) && n > cfg.Factor*breadth) {
		return
	}
	w.flagged = 1
	level := LevelHolder
	if !o.holderLearned {
		level = LevelToken
	}
	e.signal(s, o, detResourceSweep, level)
	if !cfg.Enabled || !e.admit(s, o, detResourceSweep) {
		return
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }
	e.emit(s, o, detResourceSweep, level, cfg.Severity,
		"~"+f(n)+" distinct resources of "+u.Method+" "+u.Route+" within "+fmtDur(int64(now-w.start))+" and the "+cfg.Window.String()+
			" before ("+itoa(int(w.denied))+" denied), latest "+res,
		"holder "+s.holder+"'s breadth: at most ~"+f(breadth)+" distinct resources of one route in a "+cfg.Window.String()+
			" window and the one before it, for one token (decaying); a sweep is "+itoa(cfg.MinDistinct)+" distinct denied resources, or as many and more than "+
			strconv.FormatFloat(cfg.Factor, 'f', -1, 64)+"× the breadth once the holder is learnt",
		map[string]string{"distinct": f(n), "denied": itoa(int(w.denied)), "breadth": f(breadth), "window_start": fmtTime(int64(w.start))})
}
