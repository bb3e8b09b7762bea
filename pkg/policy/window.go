package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

// weekOrder is the order days are written in: Monday first.
var weekOrder = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

var dayIndex = map[string]int{"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}

// ParseWindow parses the compact form of a time-of-use window:
//
//	[DAYS] HH:MM-HH:MM [ZONE]
//
// DAYS is a comma-separated list of days and day ranges ("mon-fri",
// "mon,wed,fri", "fri-mon", "daily"); omitted, the window holds every day.
// ZONE is an IANA time zone name; omitted, UTC. For example
// "mon-fri 08:00-18:00 Europe/Paris".
func ParseWindow(s string) (token.Window, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return token.Window{}, errors.New(`empty window: want "[days] HH:MM-HH:MM [zone]", such as "mon-fri 08:00-18:00 Europe/Paris"`)
	}
	var w token.Window
	i := 0
	if c := f[0][0]; c < '0' || c > '9' {
		days, err := ParseDays(f[0])
		if err != nil {
			return w, fmt.Errorf("window %q: %w", s, err)
		}
		w.Days = days
		i++
	}
	if i >= len(f) {
		return w, fmt.Errorf("window %q: missing hours HH:MM-HH:MM", s)
	}
	start, end, ok := strings.Cut(f[i], "-")
	if !ok {
		return w, fmt.Errorf("window %q: %q is not HH:MM-HH:MM", s, f[i])
	}
	w.Start, w.End = start, end
	i++
	if i < len(f) {
		w.Zone = f[i]
		if err := checkZone(w.Zone); err != nil {
			return w, fmt.Errorf("window %q: %w", s, err)
		}
		i++
	}
	if i < len(f) {
		return w, fmt.Errorf("window %q: unexpected %q after the zone", s, f[i])
	}
	if err := w.Validate(); err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	return w, nil
}

// ParseDays parses "mon-fri", "mon,wed,fri", "sat-sun,wed" or "daily" into
// canonical day names (Monday first). "daily" (or "*") returns nil: every day.
func ParseDays(s string) ([]string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "daily" || s == "*" {
		return nil, nil
	}
	var set [7]bool
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		ai, ok := dayIndex[a]
		if !ok {
			return nil, fmt.Errorf("day %q is not one of mon, tue, wed, thu, fri, sat, sun", a)
		}
		if !isRange {
			set[ai] = true
			continue
		}
		bi, ok := dayIndex[b]
		if !ok {
			return nil, fmt.Errorf("day %q is not one of mon, tue, wed, thu, fri, sat, sun", b)
		}
		for j := ai; ; j = (j + 1) % 7 { // ranges may wrap: fri-mon
			set[j] = true
			if j == bi {
				break
			}
		}
	}
	var out []string
	for i, on := range set {
		if on {
			out = append(out, weekOrder[i])
		}
	}
	return out, nil
}

// canonicalDays lowercases, de-duplicates and orders day names Monday
// first; unknown names are dropped (callers validate first).
func canonicalDays(days []string) []string {
	var set [7]bool
	for _, d := range days {
		if i, ok := dayIndex[strings.ToLower(d)]; ok {
			set[i] = true
		}
	}
	var out []string
	for i, on := range set {
		if on {
			out = append(out, weekOrder[i])
		}
	}
	return out
}

// FormatDays writes days compactly, Monday first: "mon-fri", "mon,wed",
// "mon-sun" for every day.
func FormatDays(days []string) string {
	var set [7]bool
	if len(days) == 0 {
		set = [7]bool{true, true, true, true, true, true, true}
	}
	for _, d := range days {
		if i, ok := dayIndex[strings.ToLower(d)]; ok {
			set[i] = true
		}
	}
	var parts []string
	for i := 0; i < 7; {
		if !set[i] {
			i++
			continue
		}
		j := i
		for j+1 < 7 && set[j+1] {
			j++
		}
		if j == i {
			parts = append(parts, weekOrder[i])
		} else {
			parts = append(parts, weekOrder[i]+"-"+weekOrder[j])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// FormatWindow writes a window in the compact form ParseWindow reads.
func FormatWindow(w token.Window) string {
	zone := w.Zone
	if zone == "" {
		zone = "UTC"
	}
	return FormatDays(w.Days) + " " + w.Start + "-" + w.End + " " + zone
}

// minTTL is the shortest lifetime a token may have (expiry is in seconds).
const minTTL = time.Second

// maxDays bounds the days of a duration so that it cannot overflow.
const maxDays = 36500

// ParseDuration parses a Go duration ("90m", "24h") or one with a leading
// number of days ("7d", "1d12h"). Negative durations are rejected.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a duration such as 90m, 24h or 7d", s)
	if s == "" {
		return 0, bad
	}
	var total time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > maxDays || strings.HasPrefix(s, "+") {
			return 0, bad
		}
		total = time.Duration(n) * 24 * time.Hour
		rest = s[i+1:]
		if rest == "" {
			return total, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 || strings.HasPrefix(rest, "+") || strings.HasPrefix(rest, "-") {
		return 0, bad
	}
	if total+d < total { // overflow
		return 0, bad
	}
	return total + d, nil
}

// FormatDuration writes d briefly: whole days from three days up as "7d",
// otherwise Go's form without trailing zero units ("48h", "1h30m", "90s").
func FormatDuration(d time.Duration) string {
	if d >= 72*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
