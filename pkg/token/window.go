package token

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a time-of-use window: weekdays and an hour range in an IANA zone.
type Window struct {
	// Days are "mon" … "sun"; empty means every day.
	Days []string `json:"days,omitempty" yaml:"days"`
	// Start and End are "HH:MM"; End is exclusive and may be "24:00".
	Start string `json:"start" yaml:"start"`
	End   string `json:"end" yaml:"end"`
	// Zone is an IANA time zone name; empty means UTC.
	Zone string `json:"zone,omitempty" yaml:"zone"`
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

type compiledWindow struct {
	days       uint8 // bit per time.Weekday
	start, end int   // minutes since midnight
	loc        *time.Location
}

// Compile checks the window; the result's Contains is fast.
func (w Window) compile() (compiledWindow, error) {
	cw := compiledWindow{}
	if len(w.Days) == 0 {
		cw.days = 0x7f
	}
	for _, d := range w.Days {
		wd, ok := dayNames[strings.ToLower(d)]
		if !ok {
			return cw, fmt.Errorf("day %q is not one of mon, tue, wed, thu, fri, sat, sun", d)
		}
		cw.days |= 1 << wd
	}
	var err error
	if cw.start, err = parseHM(w.Start); err != nil {
		return cw, fmt.Errorf("start: %w", err)
	}
	if cw.end, err = parseHM(w.End); err != nil {
		return cw, fmt.Errorf("end: %w", err)
	}
	if cw.end <= cw.start {
		return cw, fmt.Errorf("end %s is not after start %s", w.End, w.Start)
	}
	cw.loc = time.UTC
	if w.Zone != "" {
		if cw.loc, err = loadZone(w.Zone); err != nil {
			return cw, fmt.Errorf("zone %q: %w", w.Zone, err)
		}
	}
	return cw, nil
}

// Validate checks the window's days, hours and zone.
func (w Window) Validate() error {
	_, err := w.compile()
	return err
}

// Contains reports whether at falls inside the window.
func (w Window) Contains(at time.Time) (bool, error) {
	cw, err := w.compile()
	if err != nil {
		return false, err
	}
	return cw.contains(at), nil
}

// Within reports whether w is entirely inside outer: same zone, a subset of
// its days, and an hour range inside its hour range.
func (w Window) Within(outer Window) bool {
	a, err1 := w.compile()
	b, err2 := outer.compile()
	if err1 != nil || err2 != nil {
		return false
	}
	return a.loc.String() == b.loc.String() && a.days&^b.days == 0 && a.start >= b.start && a.end <= b.end
}

func (c *compiledWindow) contains(at time.Time) bool {
	t := at.In(c.loc)
	if c.days&(1<<t.Weekday()) == 0 {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	return m >= c.start && m < c.end
}

func parseHM(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return hh*60 + mm, nil
}

var errZone = errors.New("unknown time zone")

// zones caches loaded locations: time.LoadLocation reads the zone database.
var zones = newZoneCache()

func loadZone(name string) (*time.Location, error) {
	return zones.load(name)
}
