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
	// sMinute and sCount count the current minute's requests to sensitive
	// scopes; sFlagged: that minute is a spike.
	sMinute  int64
	sCount   uint32
	sFlagged uint8
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
// when it reaches MinCount requests and more than Factor times the
// baseline: the token's own decaying peak once it has MinHistory of
// traffic, else its holder's (the busiest minute of any of its tokens), so
// a fresh token of a known workload is judged from its first minute.
// Requests to sensitive scopes are counted apart and judged against the
// holder's busiest sensitive minute (SensitiveMinCount).
func (e *Engine) checkVolumeSpike(s *tokenState, o *obs) {
	cfg := &e.cfg.VolumeSpike
	v := &s.core.vol
	hv := &o.h.vol
	m := o.t / 60
	if o.t%60 < 0 {
		m--
	}
	halfLifeMin := float64(cfg.HalfLife / time.Minute)
	if v.since == 0 {
		v.since, v.minute = o.t, m
	}
	if hv.since == 0 {
		hv.since, hv.minute = o.t, m
	}
	hv.decayTo(m, halfLifeMin)
	if m > v.minute {
		if v.flagged == 0 {
			hv.peak = max(hv.peak, float64(v.count))
		}
		v.roll(m, halfLifeMin)
	}
	if v.count < ^uint32(0) {
		v.count++
	}
	if o.sensitive {
		if m > v.sMinute {
			if v.sFlagged == 0 {
				hv.sPeak = max(hv.sPeak, float64(v.sCount))
			}
			v.sMinute, v.sCount, v.sFlagged = m, 0, 0
		}
		if v.sCount < ^uint32(0) {
			v.sCount++
		}
	}
	minHist := int64(cfg.MinHistory / time.Second)
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }
	if o.sensitive && v.sFlagged == 0 && o.t-hv.since >= minHist && int(v.sCount) >= cfg.SensitiveMinCount &&
		float64(v.sCount) > cfg.Factor*hv.sPeak {
		v.sFlagged = 1
		e.signal(s, o, detVolumeSpike, LevelHolder)
		if cfg.Enabled && e.admit(s, o, detVolumeSpike) {
			e.emit(s, o, detVolumeSpike, LevelHolder, escalate(cfg.Severity),
				itoa(int(v.sCount))+" requests to sensitive scopes (latest "+o.u.Scope+") in the minute from "+fmtTime(v.sMinute*60),
				"holder "+s.holder+"'s busiest minute of sensitive requests for one token "+f(hv.sPeak)+" (decaying, half-life "+
					cfg.HalfLife.String()+"); spike above "+f(cfg.Factor)+"× that and at least "+itoa(cfg.SensitiveMinCount),
				map[string]string{"count": itoa(int(v.sCount)), "peak": f(hv.sPeak), "sensitive": "true"})
		}
		return
	}
	if int(v.count) < cfg.MinCount || v.flagged != 0 {
		return
	}
	peak, level, hist := v.peak, LevelToken, o.t-v.since
	if hist < minHist {
		peak, level, hist = hv.peak, LevelHolder, o.t-hv.since
		if hist < minHist {
			return
		}
	}
	limit := cfg.Factor * peak
	if float64(v.count) <= limit {
		return
	}
	v.flagged = 1
	e.signal(s, o, detVolumeSpike, level)
	if !cfg.Enabled || !e.admit(s, o, detVolumeSpike) {
		return
	}
	sev := cfg.Severity
	if float64(v.count) > 4*limit {
		sev = escalate(sev)
	}
	whose := "the token's busiest minute so far "
	if level == LevelHolder {
		whose = "holder " + s.holder + "'s busiest minute of one token "
	}
	e.emit(s, o, detVolumeSpike, level, sev,
		itoa(int(v.count))+" requests in the minute from "+fmtTime(v.minute*60),
		whose+f(peak)+" requests (decaying, half-life "+cfg.HalfLife.String()+"), token mean "+
			f(v.mean)+"/min, spike above "+f(cfg.Factor)+"× the peak and at least "+itoa(cfg.MinCount)+
			", over "+fmtDur(hist)+" of history",
		map[string]string{"count": itoa(int(v.count)), "peak": f(peak), "mean": f(v.mean)})
}
