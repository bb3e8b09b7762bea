package simulate

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a length of time written as in time.ParseDuration ("90s",
// "36h") or in days ("7d", "1d12h").
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes the duration with days when it has whole ones.
func (d Duration) String() string { return formatDuration(time.Duration(d)) }

// parseScalar implements scalarParser.
func (d *Duration) parseScalar(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// parseDuration reads "7d", "1d12h", "90m", "160s"; never negative.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("%q is not a duration (such as 160s, 10m, 36h, 7d)", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a duration (such as 160s, 10m, 36h, 7d)", s)
	}
	return days + v, nil
}

func formatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd%s", d/(24*time.Hour), d%(24*time.Hour))
	}
	return d.String()
}

// Span is a range of durations, "2m-6m", or one duration, "160s"; a value
// is drawn uniformly in [Min, Max].
type Span struct {
	Min, Max time.Duration
}

// String writes the span as it is read.
func (s Span) String() string {
	if s.Min == s.Max {
		return formatDuration(s.Min)
	}
	return formatDuration(s.Min) + "-" + formatDuration(s.Max)
}

// IsZero reports whether the span was left out.
func (s Span) IsZero() bool { return s.Min == 0 && s.Max == 0 }

func (s *Span) parseScalar(v string) error {
	lo, hi, ok := strings.Cut(v, "-")
	a, err := parseDuration(lo)
	if err != nil {
		return err
	}
	b := a
	if ok {
		if b, err = parseDuration(hi); err != nil {
			return err
		}
	}
	if b < a {
		return fmt.Errorf("%q: the end of the range is below its start", v)
	}
	*s = Span{a, b}
	return nil
}

// Count is a range of whole numbers, "300-600", or one number, "4"; a
// value is drawn uniformly in [Min, Max].
type Count struct {
	Min, Max int
}

// String writes the count as it is read.
func (c Count) String() string {
	if c.Min == c.Max {
		return strconv.Itoa(c.Min)
	}
	return fmt.Sprintf("%d-%d", c.Min, c.Max)
}

// IsZero reports whether the count was left out.
func (c Count) IsZero() bool { return c.Min == 0 && c.Max == 0 }

func (c *Count) parseScalar(v string) error {
	lo, hi, ok := strings.Cut(strings.TrimSpace(v), "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil || a < 0 {
		return fmt.Errorf("%q is not a count (such as 4 or 300-600)", v)
	}
	b := a
	if ok {
		if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < 0 {
			return fmt.Errorf("%q is not a count (such as 4 or 300-600)", v)
		}
	}
	if b < a {
		return fmt.Errorf("%q: the end of the range is below its start", v)
	}
	*c = Count{a, b}
	return nil
}

// Hours is a daily period in local time, "07:00-21:00"; End may be 24:00.
type Hours struct {
	Start, End float64 // hours of the day, fractional
}

// String writes the period as it is read.
func (h Hours) String() string { return clock(h.Start) + "-" + clock(h.End) }

// IsZero reports whether the period was left out.
func (h Hours) IsZero() bool { return h.Start == 0 && h.End == 0 }

func clock(x float64) string {
	hh := int(x)
	mm := int(math.Round((x - float64(hh)) * 60))
	return fmt.Sprintf("%02d:%02d", hh, mm)
}

func (h *Hours) parseScalar(v string) error {
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return fmt.Errorf("%q is not a period of the day (such as 07:00-21:00)", v)
	}
	s, err1 := parseClock(a)
	e, err2 := parseClock(b)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%q is not a period of the day (such as 07:00-21:00)", v)
	}
	if e <= s {
		return fmt.Errorf("%q: the period must end after it starts, on the same day", v)
	}
	*h = Hours{s, e}
	return nil
}

func parseClock(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	hh, err1 := strconv.Atoi(s[:2])
	mm, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	return float64(hh) + float64(mm)/60, nil
}
