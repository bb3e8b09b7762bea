package detect

import (
	"math"
	"strconv"
	"time"
)

// hoursPerWeek is the size of the hour-of-week profile, Monday 00h first.
const hoursPerWeek = 7 * 24

// hourProfile counts a token's allowed uses per hour of the week in its
// zone. A count about to overflow halves the whole profile (rounding up, so
// an hour ever used stays used): proportions are kept and old habits fade.
type hourProfile [hoursPerWeek]uint8

func (h *hourProfile) add(i int) {
	if h[i] == 255 {
		for j := range h {
			h[j] = uint8((uint16(h[j]) + 1) >> 1)
		}
	}
	h[i]++
}

// near sums the hour and the hours next to it.
func (h *hourProfile) near(i int) int {
	return int(h[(i+hoursPerWeek-1)%hoursPerWeek]) + int(h[i]) + int(h[(i+1)%hoursPerWeek])
}

func weekend(day int) bool { return day >= 5 }

// wilsonUpper is the upper bound of the one-sided 95% Wilson score
// interval of a proportion seen k times in n: how large the true share may
// be given what was seen. With k = 0 it is about 2.7/n, so a small profile
// cannot call anything rare.
func wilsonUpper(k, n int) float64 {
	if n == 0 {
		return 1
	}
	const z = 1.645
	nf := float64(n)
	p := float64(k) / nf
	d := 1 + z*z/nf
	c := p + z*z/(2*nf)
	m := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return (c + m) / d
}

// hourShare bounds the share of uses in i's hour of the day, and the hours
// next to it, over all days.
func (h *hourProfile) hourShare(i int) float64 {
	hour := i % 24
	num, den := 0, 0
	for d := 0; d < 7; d++ {
		num += h.near(d*24 + hour)
	}
	for _, c := range h {
		den += int(c)
	}
	return wilsonUpper(num, den)
}

// dayShare bounds the share of uses on i's kind of day (weekday or
// weekend): near 0 for a weekday-only token on a weekend.
func (h *hourProfile) dayShare(i int) float64 {
	kind := weekend(i / 24)
	same, all := 0, 0
	for j, c := range h {
		all += int(c)
		if weekend(j/24) == kind {
			same += int(c)
		}
	}
	return wilsonUpper(same, all)
}

// hourOfWeek is the index of t in the profile, in loc (Monday 00h = 0).
func hourOfWeek(t time.Time, loc *time.Location) int {
	sec := t.Unix()
	if loc != time.UTC {
		_, off := t.In(loc).Zone()
		sec += int64(off)
	}
	day := sec / 86400
	if sec%86400 < 0 {
		day--
	}
	// 1970-01-01 was a Thursday: day 0 is index 3 with Monday = 0.
	wd := (day%7 + 7 + 3) % 7
	return int(wd)*24 + int((sec-day*86400)/3600)
}

var dayNames = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

func hourName(i int) string { return dayNames[i/24] + " " + strconv.Itoa(i%24) + "h" }

// checkOddHours flags, once the holder's baseline (or the token's own) is
// learnt, a use in an hour of the week when no token of the holder was
// ever used, nor in the hours next to it, and which is odd either by the
// hour of the day (those hours hold, with 95% confidence, less than
// MinShare of all use) or, once the profile covers a week, by the day
// (this kind of day — weekday or weekend — holds, with 95% confidence,
// less than MinShare of all use). The profile is the holder's, in the zone
// of the first time-of-use window its tokens claimed. Only allowed uses
// that are not flagged teach it.
func (e *Engine) checkOddHours(s *tokenState, o *obs) {
	cfg := &e.cfg.OddHours
	h := o.h
	loc := e.zones.loc(h.zone)
	i := hourOfWeek(o.tm, loc)
	odd := false
	if (o.holderLearned || o.tokLearned) && h.hours.near(i) == 0 {
		hourShare := h.hours.hourShare(i)
		dayShare := 1.0
		if o.t-h.firstSeen >= 7*86400 {
			dayShare = h.hours.dayShare(i)
		}
		if hourShare < cfg.MinShare || dayShare < cfg.MinShare {
			odd = true
			level := LevelHolder
			if !o.holderLearned {
				level = LevelToken
			}
			e.signal(s, o, detOddHours, level)
			if cfg.Enabled && e.admit(s, o, detOddHours) {
				sev := cfg.Severity
				if !o.allowed {
					sev = escalate(sev)
				}
				kind := "weekdays"
				if weekend(i / 24) {
					kind = "weekends"
				}
				pct := func(x float64) string { return strconv.FormatFloat(x*100, 'f', 2, 64) + "%" }
				zone := e.zones.name(h.zone)
				local := o.tm.In(loc).Format("Mon 15:04 MST")
				e.emit(s, o, detOddHours, level, sev,
					"use at "+local+" ("+hourName(i)+" "+zone+")",
					"holder "+s.holder+" never used in "+hourName(i)+"±1h; "+itoa(i%24)+"h±1h holds at most "+pct(hourShare)+" of use, "+kind+
						" at most "+pct(dayShare)+" (95% bounds; odd below "+pct(cfg.MinShare)+"); profile of "+
						itoa(int(h.learnEvents))+" allowed uses of its tokens since "+fmtTime(h.firstSeen),
					map[string]string{
						"hour_of_week": itoa(i),
						"hour_share":   strconv.FormatFloat(hourShare, 'f', 4, 64),
						"day_share":    strconv.FormatFloat(dayShare, 'f', 4, 64),
					})
			}
		}
	}
	if o.allowed && !o.postEnd && !odd {
		h.hours.add(i)
	}
}
