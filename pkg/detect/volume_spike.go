package detect

import (
	"math"
	"strconv"
	"time"
)

// volumeState is a token's per-minute request counter and its baseline: the
// busiest minute seen, decaying with HalfLife, and an EWMA of requests per
// minute (half-life one hour) for the evidence.
type volumeState struct {
	since   int64 // event time of the first use seen, Unix seconds
	minute  int64 // current minute, Unix seconds / 60
	count   uint32
	flagged uint8 // the current minute is a spike: it never teaches
	// pending is the count of the minute before the current one, which
	// teaches the peak only if the current minute is not a spike: the
	// first, partial minute of a burst must not become its baseline.
	pending    uint32
	hasPending uint8
	peak       float64
	mean       float64
}

// meanAlpha gives the per-minute EWMA a half-life of 60 minutes.
var meanAlpha = 1 - math.Exp2(-1.0/60)

func (v *volumeState) teach(count uint32) { v.peak = max(v.peak, float64(count)) }

// roll closes the current minute and moves to minute m (> current).
func (v *volumeState) roll(m int64, halfLifeMin float64) {
	if v.hasPending == 1 && v.flagged == 0 {
		v.teach(v.pending)
	}
	v.hasPending = 0
	if v.flagged == 0 {
		if m == v.minute+1 {
			v.pending, v.hasPending = v.count, 1
		} else {
			v.teach(v.count) // the minute after it was quiet
		}
	}
	v.mean += meanAlpha * (float64(v.count) - v.mean)
	gap := float64(m - v.minute)
	v.peak *= math.Exp2(-gap / halfLifeMin)
	if gap > 1 {
		v.mean *= math.Exp2(-(gap - 1) / 60) // (1-meanAlpha)^(gap-1)
	}
	v.minute, v.count, v.flagged = m, 0, 0
}

// checkVolumeSpike counts the event in its minute and flags the minute
// when it reaches MinCount requests and more than Factor times the token's
// decaying peak, once the token has MinHistory of traffic.
func (e *Engine) checkVolumeSpike(s *tokenState, o *obs) {
	cfg := &e.cfg.VolumeSpike
	v := &s.core.vol
	m := o.t / 60
	if o.t%60 < 0 {
		m--
	}
	if v.since == 0 {
		v.since, v.minute = o.t, m
	}
	if m > v.minute {
		v.roll(m, float64(cfg.HalfLife/time.Minute))
	}
	if v.count < ^uint32(0) {
		v.count++
	}
	if !cfg.Enabled || o.t-v.since < int64(cfg.MinHistory/time.Second) || int(v.count) < cfg.MinCount {
		return
	}
	limit := cfg.Factor * v.peak
	if float64(v.count) <= limit {
		return
	}
	v.flagged = 1
	if !e.admit(s, o, detVolumeSpike) {
		return
	}
	sev := cfg.Severity
	if float64(v.count) > 4*limit {
		sev = escalate(sev)
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }
	e.emit(s, o, detVolumeSpike, sev,
		itoa(int(v.count))+" requests in the minute from "+fmtTime(v.minute*60),
		"busiest minute so far "+f(v.peak)+" requests (decaying, half-life "+cfg.HalfLife.String()+"), mean "+
			f(v.mean)+"/min, spike above "+f(cfg.Factor)+"× the peak and at least "+itoa(cfg.MinCount)+
			", over "+fmtDur(o.t-v.since)+" of history",
		map[string]string{"count": itoa(int(v.count)), "peak": f(v.peak), "mean": f(v.mean)})
}
