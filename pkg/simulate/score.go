package simulate

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// ScoreOptions adds measurements Score cannot make from event times alone.
type ScoreOptions struct {
	// WallLatency, when set, returns the wall-clock latency of an anomaly
	// (in the auditor: publish of the triggering usage event → anomaly
	// published), or false when unknown. Score reports it for each
	// attack's first matching anomaly.
	WallLatency func(events.AnomalyDetected) (time.Duration, bool)
}

// Result is how anomalies compare with the labelled attacks.
type Result struct {
	// Attacks and Detected count the attacks and those with at least one
	// matching anomaly; Recall is Detected/Attacks (1 with no attacks).
	Attacks, Detected int
	Recall            float64
	// Anomalies splits into TruePositives (matching an attack) and
	// FalsePositives; Precision is TruePositives/Anomalies (1 with none).
	Anomalies, TruePositives, FalsePositives int
	Precision                                float64
	// Detectors scores each detector (all of detect.Detectors, plus any
	// other name seen), in that order.
	Detectors []DetectorScore
	// PerAttack scores each attack, in label order.
	PerAttack []AttackScore
	// Undetected lists the attacks no anomaly matched.
	Undetected []Attack
	// FalseAlarms are the false-positive anomalies, in input order.
	FalseAlarms []events.AnomalyDetected
}

// DetectorScore is one detector's precision and recall.
type DetectorScore struct {
	Detector                                 string
	Anomalies, TruePositives, FalsePositives int
	// Precision is TruePositives/Anomalies (1 with no anomalies).
	Precision float64
	// Expected counts the attacks that list the detector; Caught those of
	// them it matched; Recall is Caught/Expected (1 with none expected).
	Expected, Caught int
	Recall           float64
}

// AttackScore is how and how fast one attack was detected.
type AttackScore struct {
	ID, Kind, TokenID string
	Expected          []string
	// Detectors fired on the attack (sorted); Missed are the expected
	// detectors that did not.
	Detectors, Missed []string
	Detected          bool
	// First is the event time of the earliest matching anomaly's
	// triggering event; Delay is First minus the attack's start.
	First time.Time
	Delay time.Duration
	// WallLatency of that first anomaly, when ScoreOptions.WallLatency
	// knows it (HasWallLatency).
	WallLatency    time.Duration
	HasWallLatency bool
}

// Score matches anomalies with attacks: an anomaly is a true positive when
// it concerns an attacked token and its triggering event is one of the
// attack's events or lies within the attack's interval; otherwise it is a
// false positive. An attack is detected when at least one anomaly matches.
func Score(attacks []Attack, anomalies []events.AnomalyDetected) Result {
	return ScoreWith(attacks, anomalies, ScoreOptions{})
}

// ScoreWith is Score with extra measurements.
func ScoreWith(attacks []Attack, anomalies []events.AnomalyDetected, opt ScoreOptions) Result {
	byToken := map[string][]int{}
	byEvent := map[string]int{}
	for i, a := range attacks {
		byToken[a.TokenID] = append(byToken[a.TokenID], i)
		for _, id := range a.EventIDs {
			byEvent[id] = i
		}
	}
	r := Result{Attacks: len(attacks), Anomalies: len(anomalies)}
	per := make([]AttackScore, len(attacks))
	fired := make([]map[string]bool, len(attacks))
	for i, a := range attacks {
		per[i] = AttackScore{ID: a.ID, Kind: a.Kind, TokenID: a.TokenID, Expected: a.ExpectedDetectors}
		fired[i] = map[string]bool{}
	}
	dets := map[string]*DetectorScore{}
	order := detect.Detectors()
	det := func(name string) *DetectorScore {
		d, ok := dets[name]
		if !ok {
			d = &DetectorScore{Detector: name}
			dets[name] = d
			if !slices.Contains(order, name) {
				order = append(order, name)
			}
		}
		return d
	}
	for _, name := range order {
		det(name)
	}

	for _, an := range anomalies {
		d := det(an.Detector)
		d.Anomalies++
		match := -1
		if i, ok := byEvent[an.EventID]; ok && attacks[i].TokenID == an.TokenID {
			match = i
		} else {
			for _, i := range byToken[an.TokenID] {
				if !an.EventTime.Before(attacks[i].Start) && !an.EventTime.After(attacks[i].End) {
					match = i
					break
				}
			}
		}
		if match < 0 {
			d.FalsePositives++
			r.FalsePositives++
			r.FalseAlarms = append(r.FalseAlarms, an)
			continue
		}
		d.TruePositives++
		r.TruePositives++
		fired[match][an.Detector] = true
		p := &per[match]
		if !p.Detected || an.EventTime.Before(p.First) {
			p.Detected, p.First = true, an.EventTime
			p.Delay = an.EventTime.Sub(attacks[match].Start)
			p.WallLatency, p.HasWallLatency = 0, false
			if opt.WallLatency != nil {
				p.WallLatency, p.HasWallLatency = opt.WallLatency(an)
			}
		}
	}

	for i, a := range attacks {
		p := &per[i]
		for name := range fired[i] {
			p.Detectors = append(p.Detectors, name)
		}
		slices.Sort(p.Detectors)
		for _, name := range a.ExpectedDetectors {
			d := det(name)
			d.Expected++
			if fired[i][name] {
				d.Caught++
			} else {
				p.Missed = append(p.Missed, name)
			}
		}
		if p.Detected {
			r.Detected++
		} else {
			r.Undetected = append(r.Undetected, a)
		}
	}
	r.PerAttack = per
	r.Precision = ratio(r.TruePositives, r.Anomalies)
	r.Recall = ratio(r.Detected, r.Attacks)
	for _, name := range order {
		d := dets[name]
		d.Precision = ratio(d.TruePositives, d.Anomalies)
		d.Recall = ratio(d.Caught, d.Expected)
		r.Detectors = append(r.Detectors, *d)
	}
	return r
}

func ratio(n, d int) float64 {
	if d == 0 {
		return 1
	}
	return float64(n) / float64(d)
}

// Print writes the result as readable tables: per detector, per attack,
// then the undetected attacks and the false alarms.
func (r Result) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	f := func(n, d int, v float64) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", v)
	}
	fmt.Fprintln(tw, "detector\tanomalies\tTP\tFP\tprecision\texpected\tcaught\trecall\t")
	for _, d := range r.Detectors {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t\n", d.Detector, d.Anomalies, d.TruePositives, d.FalsePositives,
			f(d.TruePositives, d.Anomalies, d.Precision), d.Expected, d.Caught, f(d.Caught, d.Expected, d.Recall))
	}
	fmt.Fprintf(tw, "overall\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t\n", r.Anomalies, r.TruePositives, r.FalsePositives,
		f(r.TruePositives, r.Anomalies, r.Precision), r.Attacks, r.Detected, f(r.Detected, r.Attacks, r.Recall))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print score: %w", err)
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "attack\tkind\ttoken\tdetected by\tmissed\tdelay\twall latency")
	for _, p := range r.PerAttack {
		by, delay, wall := "-", "-", "-"
		if p.Detected {
			by = strings.Join(p.Detectors, ",")
			delay = p.Delay.String()
		}
		if p.HasWallLatency {
			wall = p.WallLatency.String()
		}
		missed := "-"
		if len(p.Missed) > 0 {
			missed = strings.Join(p.Missed, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Kind, shortID(p.TokenID), by, missed, delay, wall)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print score: %w", err)
	}

	fmt.Fprintln(w)
	if len(r.Undetected) == 0 {
		fmt.Fprintln(w, "undetected attacks: none")
	} else {
		fmt.Fprintln(w, "undetected attacks:")
		for _, a := range r.Undetected {
			fmt.Fprintf(w, "  %s %s token %s: %s\n", a.ID, a.Kind, a.TokenID, a.Description)
		}
	}
	if len(r.FalseAlarms) == 0 {
		fmt.Fprintln(w, "false alarms: none")
	} else {
		fmt.Fprintln(w, "false alarms:")
		for _, a := range r.FalseAlarms {
			fmt.Fprintf(w, "  %s %s token %s %s/%s at %s: %s (baseline: %s)\n", a.Detector, a.Severity, a.TokenID,
				a.Tenant, a.Holder, a.EventTime.Format(time.RFC3339), a.Evidence.Seen, a.Evidence.Baseline)
		}
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:8] + "…" + id[len(id)-4:]
	}
	return id
}
