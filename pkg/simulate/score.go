package simulate

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// ScoreOptions adds measurements Score cannot make from event times alone.
type ScoreOptions struct {
	// WallLatency, when set, returns the wall-clock time from the attack's
	// first event being published to the anomaly being received, or false
	// when unknown. Score reports it for each attack's first anomaly.
	WallLatency func(an events.AnomalyDetected, a Attack) (time.Duration, bool)
	// MaxListed bounds the false alarms listed in the report (default 50;
	// all are counted).
	MaxListed int
}

// Report is how the anomalies of a run compare with the labels.
//
// An attack is detected when an anomaly names one of its tokens (for
// forged tokens, which name none: one of its sources) and its triggering
// event lies between the attack's start and its DetectBy. An anomaly is a
// true positive when it detects an attack; late when it concerns an
// attacked token or source after the attack began but outside that bound
// (neither right nor a false alarm); otherwise a false alarm, counted
// against every benign variant whose exposure covers its holder (or
// source) at its time, or against Steady when none does.
type Report struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	// Attacks, Detected and Recall over every attack.
	Attacks  int     `json:"attacks"`
	Detected int     `json:"detected"`
	Recall   float64 `json:"recall"`
	// Anomalies split into TruePositives, FalseAlarms and Late;
	// Precision is TruePositives / (TruePositives + FalseAlarms).
	Anomalies     int     `json:"anomalies"`
	TruePositives int     `json:"true_positives"`
	FalseAlarms   int     `json:"false_alarms"`
	Late          int     `json:"late"`
	Precision     float64 `json:"precision"`
	// BenignTokenDays is the number of (token, day) pairs of benign use;
	// FalseAlarmsPer1000 the false alarms per 1,000 of them.
	BenignTokenDays    int     `json:"benign_token_days"`
	FalseAlarmsPer1000 float64 `json:"false_alarms_per_1000_token_days"`
	// TimeToDetect is in event time (attack start → first anomaly's
	// triggering event); WallLatency in wall time through the pipeline.
	TimeToDetect Quantiles `json:"time_to_detect"`
	WallLatency  Quantiles `json:"wall_latency"`

	AttackVariants []AttackVariantScore `json:"attack_variants"`
	BenignVariants []BenignVariantScore `json:"benign_variants"`
	Detectors      []DetectorScore      `json:"detectors"`
	PerAttack      []AttackScore        `json:"per_attack"`
	Undetected     []Attack             `json:"undetected"`
	// FalseAlarmList lists the first ScoreOptions.MaxListed false alarms.
	FalseAlarmList []FalseAlarm `json:"false_alarm_list"`
}

// Quantiles summarise durations.
type Quantiles struct {
	N      int           `json:"n"`
	Median time.Duration `json:"median_ns"`
	P95    time.Duration `json:"p95_ns"`
	Max    time.Duration `json:"max_ns"`
}

func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration {
		return s[max(0, min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1))]
	}
	return Quantiles{N: len(s), Median: at(0.5), P95: at(0.95), Max: s[len(s)-1]}
}

// String writes the median and the maximum, "median / max".
func (q Quantiles) String() string {
	if q.N == 0 {
		return "-"
	}
	r := func(d time.Duration) time.Duration {
		switch {
		case d >= time.Minute:
			return d.Round(time.Second)
		case d >= time.Second:
			return d.Round(10 * time.Millisecond)
		}
		return d.Round(time.Microsecond)
	}
	return fmt.Sprintf("%v / %v", r(q.Median), r(q.Max))
}

// AttackVariantScore is the recall of one attack variant.
type AttackVariantScore struct {
	Variant      string    `json:"variant"`
	Attacks      int       `json:"attacks"`
	Detected     int       `json:"detected"`
	Recall       float64   `json:"recall"`
	TimeToDetect Quantiles `json:"time_to_detect"`
	// Detectors that fired on its attacks (within the bound).
	Detectors []string `json:"detectors"`
}

// BenignVariantScore is the false alarms of one benign variant.
type BenignVariantScore struct {
	Variant     string `json:"variant"`
	TokenDays   int    `json:"token_days"`
	FalseAlarms int    `json:"false_alarms"`
	// Per1000 is FalseAlarms per 1,000 TokenDays (0 without token-days).
	Per1000 float64 `json:"per_1000_token_days"`
	// Alarmed is how many distinct tokens (or sources) were alarmed on.
	Alarmed   int      `json:"alarmed"`
	Detectors []string `json:"detectors"`
}

// DetectorScore is what one detector did.
type DetectorScore struct {
	Detector      string `json:"detector"`
	Anomalies     int    `json:"anomalies"`
	TruePositives int    `json:"true_positives"`
	FalseAlarms   int    `json:"false_alarms"`
	Late          int    `json:"late"`
	// Attacks is how many attacks it detected.
	Attacks int `json:"attacks"`
}

// AttackScore is how and how fast one attack was detected.
type AttackScore struct {
	ID        string   `json:"id"`
	Variant   string   `json:"variant"`
	TokenIDs  []string `json:"token_ids,omitempty"`
	Sources   []string `json:"sources"`
	Detected  bool     `json:"detected"`
	Detectors []string `json:"detectors"`
	// First is the event time of the earliest detecting anomaly's
	// triggering event; Delay is First minus the attack's start.
	First          time.Time     `json:"first,omitzero"`
	Delay          time.Duration `json:"delay_ns"`
	WallLatency    time.Duration `json:"wall_latency_ns,omitempty"`
	HasWallLatency bool          `json:"has_wall_latency"`
}

// FalseAlarm is a false alarm and the benign variants it counts against.
type FalseAlarm struct {
	events.AnomalyDetected
	Variants []string `json:"variants"`
}

// Score matches anomalies against attacks alone (no benign variants: every
// false alarm is Steady's).
func Score(attacks []Attack, anomalies []events.AnomalyDetected) Report {
	return ScoreLabels(Labels{Attacks: attacks}, anomalies, ScoreOptions{})
}

// ScoreLabels scores anomalies against a dataset's labels.
func ScoreLabels(l Labels, anomalies []events.AnomalyDetected, o ScoreOptions) Report {
	if o.MaxListed <= 0 {
		o.MaxListed = 50
	}
	attacks := l.Attacks
	byToken := map[string][]int{}
	bySource := map[string][]int{}
	byEvent := map[string]int{}
	for i, a := range attacks {
		for _, t := range a.TokenIDs {
			byToken[t] = append(byToken[t], i)
		}
		if len(a.TokenIDs) == 0 {
			for _, s := range a.Sources {
				bySource[s] = append(bySource[s], i)
			}
		}
		for _, id := range a.EventIDs {
			byEvent[id] = i
		}
	}
	exByHolder := map[[2]string][]int{}
	exBySource := map[string][]int{}
	for i, e := range l.Exposures {
		exByHolder[[2]string{e.Tenant, e.Holder}] = append(exByHolder[[2]string{e.Tenant, e.Holder}], i)
		for _, s := range e.Sources {
			exBySource[s] = append(exBySource[s], i)
		}
	}

	r := Report{Scenario: l.Scenario.Name, Seed: l.Scenario.Seed, Attacks: len(attacks), Anomalies: len(anomalies)}
	per := make([]AttackScore, len(attacks))
	fired := make([]map[string]bool, len(attacks))
	for i, a := range attacks {
		per[i] = AttackScore{ID: a.ID, Variant: a.Variant, TokenIDs: a.TokenIDs, Sources: a.Sources}
		fired[i] = map[string]bool{}
	}
	dets := map[string]*DetectorScore{}
	det := func(name string) *DetectorScore {
		if dets[name] == nil {
			dets[name] = &DetectorScore{Detector: name}
		}
		return dets[name]
	}
	type benign struct {
		fa        int
		alarmed   map[string]bool
		detectors map[string]bool
	}
	bv := map[string]*benign{}
	bvOf := func(v string) *benign {
		if bv[v] == nil {
			bv[v] = &benign{alarmed: map[string]bool{}, detectors: map[string]bool{}}
		}
		return bv[v]
	}
	within := func(i int, t time.Time) bool {
		return !t.Before(attacks[i].Start) && !t.After(attacks[i].DetectBy)
	}
	started := func(is []int, t time.Time) bool {
		return slices.ContainsFunc(is, func(i int) bool { return !t.Before(attacks[i].Start) })
	}

	for _, an := range anomalies {
		d := det(an.Detector)
		d.Anomalies++
		match := -1
		if i, ok := byEvent[an.EventID]; ok && within(i, an.EventTime) {
			match = i
		}
		for _, i := range byToken[an.TokenID] {
			if match < 0 && within(i, an.EventTime) {
				match = i
			}
		}
		for _, i := range bySource[an.SourceIP] {
			if match < 0 && within(i, an.EventTime) {
				match = i
			}
		}
		switch {
		case match >= 0:
			d.TruePositives++
			r.TruePositives++
			fired[match][an.Detector] = true
			p := &per[match]
			if !p.Detected || an.EventTime.Before(p.First) {
				p.Detected, p.First = true, an.EventTime
				p.Delay = an.EventTime.Sub(attacks[match].Start)
				p.WallLatency, p.HasWallLatency = 0, false
				if o.WallLatency != nil {
					p.WallLatency, p.HasWallLatency = o.WallLatency(an, attacks[match])
				}
			}
		case started(byToken[an.TokenID], an.EventTime) || started(bySource[an.SourceIP], an.EventTime):
			d.Late++
			r.Late++
		default:
			d.FalseAlarms++
			r.FalseAlarms++
			var vs []string
			for _, i := range exByHolder[[2]string{an.Tenant, an.Holder}] {
				if e := l.Exposures[i]; !an.EventTime.Before(e.From) && !an.EventTime.After(e.To) && !slices.Contains(vs, e.Variant) {
					vs = append(vs, e.Variant)
				}
			}
			for _, i := range exBySource[an.SourceIP] {
				if e := l.Exposures[i]; !an.EventTime.Before(e.From) && !an.EventTime.After(e.To) && !slices.Contains(vs, e.Variant) {
					vs = append(vs, e.Variant)
				}
			}
			if len(vs) == 0 {
				vs = []string{Steady}
			}
			who := an.TokenID
			if who == "" || who == "-" {
				who = "source " + an.SourceIP
			}
			for _, v := range vs {
				b := bvOf(v)
				b.fa++
				b.alarmed[who] = true
				b.detectors[an.Detector] = true
			}
			if len(r.FalseAlarmList) < o.MaxListed {
				r.FalseAlarmList = append(r.FalseAlarmList, FalseAlarm{AnomalyDetected: an, Variants: vs})
			}
		}
	}

	// Per attack and per attack variant.
	variants := slices.Clone(l.AttackVariants)
	var delays, walls []time.Duration
	byVariant := map[string][]int{}
	for i, a := range attacks {
		p := &per[i]
		for name := range fired[i] {
			p.Detectors = append(p.Detectors, name)
			det(name).Attacks++
		}
		slices.Sort(p.Detectors)
		if !slices.Contains(variants, a.Variant) {
			variants = append(variants, a.Variant)
		}
		byVariant[a.Variant] = append(byVariant[a.Variant], i)
		if p.Detected {
			r.Detected++
			delays = append(delays, p.Delay)
			if p.HasWallLatency {
				walls = append(walls, p.WallLatency)
			}
		} else {
			r.Undetected = append(r.Undetected, a)
		}
	}
	for _, v := range variants {
		s := AttackVariantScore{Variant: v, Detectors: []string{}}
		var ds []time.Duration
		for _, i := range byVariant[v] {
			s.Attacks++
			if per[i].Detected {
				s.Detected++
				ds = append(ds, per[i].Delay)
			}
			for _, name := range per[i].Detectors {
				if !slices.Contains(s.Detectors, name) {
					s.Detectors = append(s.Detectors, name)
				}
			}
		}
		slices.Sort(s.Detectors)
		s.Recall = ratio(s.Detected, s.Attacks)
		s.TimeToDetect = quantiles(ds)
		r.AttackVariants = append(r.AttackVariants, s)
	}

	// Per benign variant.
	bvs := slices.Clone(l.BenignVariants)
	if !slices.Contains(bvs, Steady) {
		bvs = append([]string{Steady}, bvs...)
	}
	for v := range bv {
		if !slices.Contains(bvs, v) {
			bvs = append(bvs, v)
		}
	}
	for _, v := range bvs {
		b := bvOf(v)
		s := BenignVariantScore{Variant: v, TokenDays: l.TokenDays[v], FalseAlarms: b.fa, Alarmed: len(b.alarmed), Detectors: []string{}}
		for name := range b.detectors {
			s.Detectors = append(s.Detectors, name)
		}
		slices.Sort(s.Detectors)
		if s.TokenDays > 0 {
			s.Per1000 = float64(s.FalseAlarms) * 1000 / float64(s.TokenDays)
		}
		r.BenignVariants = append(r.BenignVariants, s)
	}
	r.BenignTokenDays = l.BenignTokenDays
	if r.BenignTokenDays > 0 {
		r.FalseAlarmsPer1000 = float64(r.FalseAlarms) * 1000 / float64(r.BenignTokenDays)
	}

	names := make([]string, 0, len(dets))
	for name := range dets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		r.Detectors = append(r.Detectors, *dets[name])
	}
	r.PerAttack = per
	r.Recall = ratio(r.Detected, r.Attacks)
	r.Precision = ratio(r.TruePositives, r.TruePositives+r.FalseAlarms)
	r.TimeToDetect = quantiles(delays)
	r.WallLatency = quantiles(walls)
	return r
}

func ratio(n, d int) float64 {
	if d == 0 {
		return 1
	}
	return float64(n) / float64(d)
}

// Gate returns what fails the quality bar, one line each: an attack
// variant whose recall is below minRecall, a benign variant with more than
// maxFalseAlarms false alarms per 1,000 benign token-days (one with no
// token-days fails if it has any false alarm at all).
func (r Report) Gate(minRecall, maxFalseAlarms float64) []string {
	var out []string
	for _, v := range r.AttackVariants {
		if v.Attacks > 0 && v.Recall < minRecall {
			out = append(out, fmt.Sprintf("attack %s: recall %.2f (%d of %d detected), want at least %.2f", v.Variant, v.Recall, v.Detected, v.Attacks, minRecall))
		}
	}
	for _, v := range r.BenignVariants {
		switch {
		case v.TokenDays == 0 && v.FalseAlarms > 0:
			out = append(out, fmt.Sprintf("benign %s: %d false alarms with no benign token-days", v.Variant, v.FalseAlarms))
		case v.TokenDays > 0 && v.Per1000 > maxFalseAlarms:
			out = append(out, fmt.Sprintf("benign %s: %.1f false alarms per 1,000 token-days (%d over %d), want at most %g",
				v.Variant, v.Per1000, v.FalseAlarms, v.TokenDays, maxFalseAlarms))
		}
	}
	return out
}

// Print writes the report as tables: recall per attack variant, false
// alarms per benign variant, the detectors, the undetected attacks and the
// false alarms.
func (r Report) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "attack variant\tattacks\tdetected\trecall\ttime to detect (median / max)\tdetectors")
	for _, v := range r.AttackVariants {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%s\t%s\n", v.Variant, v.Attacks, v.Detected, v.Recall, v.TimeToDetect, listOrDash(v.Detectors))
	}
	fmt.Fprintf(tw, "all attacks\t%d\t%d\t%.3f\t%s\t\n", r.Attacks, r.Detected, r.Recall, r.TimeToDetect)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benign variant\ttoken-days\tfalse alarms\tper 1,000 token-days\talarmed\tdetectors")
	for _, v := range r.BenignVariants {
		per := "-"
		if v.TokenDays > 0 {
			per = fmt.Sprintf("%.1f", v.Per1000)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\n", v.Variant, v.TokenDays, v.FalseAlarms, per, v.Alarmed, listOrDash(v.Detectors))
	}
	fmt.Fprintf(tw, "all benign use\t%d\t%d\t%.1f\t\t\n", r.BenignTokenDays, r.FalseAlarms, r.FalseAlarmsPer1000)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	fmt.Fprintf(w, "\nanomalies: %d — %d detecting an attack, %d false alarms, %d late (on an attacked token after the bound); precision %.3f\n",
		r.Anomalies, r.TruePositives, r.FalseAlarms, r.Late, r.Precision)
	if len(r.Detectors) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "detector\tanomalies\tdetecting\tfalse alarms\tlate\tattacks detected\t")
		for _, d := range r.Detectors {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", d.Detector, d.Anomalies, d.TruePositives, d.FalseAlarms, d.Late, d.Attacks)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("print report: %w", err)
		}
	}
	fmt.Fprintln(w)
	if len(r.Undetected) == 0 {
		fmt.Fprintln(w, "undetected attacks: none")
	} else {
		fmt.Fprintf(w, "undetected attacks (%d):\n", len(r.Undetected))
		for _, a := range r.Undetected {
			fmt.Fprintf(w, "  %s %s\n", a.ID, a.Description)
		}
	}
	if len(r.FalseAlarmList) == 0 {
		fmt.Fprintln(w, "false alarms: none")
	} else {
		fmt.Fprintf(w, "false alarms (%d, first %d):\n", r.FalseAlarms, len(r.FalseAlarmList))
		for _, a := range r.FalseAlarmList {
			fmt.Fprintf(w, "  [%s] %s %s %s/%s token %s at %s: %s (baseline: %s)\n", strings.Join(a.Variants, ","), a.Detector, a.Severity,
				a.Tenant, a.Holder, shortID(a.TokenID), a.EventTime.Format(time.RFC3339), a.Evidence.Seen, a.Evidence.Baseline)
		}
	}
	return nil
}

func listOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:8] + "…" + id[len(id)-4:]
	}
	if id == "" {
		return "-"
	}
	return id
}
