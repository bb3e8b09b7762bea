package detect

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// riskState is a token's recent signals: when each detector last saw
// something (Unix seconds, 0 = never), with which weight (×255) and at
// which level.
type riskState struct {
	at  [numDetectors]uint32
	w   [numDetectors]uint8
	lvl [numDetectors]uint8
	// alertAt is when the token last had an anomaly at least as severe
	// as Risk.Severity (0 = never): a risk_score would tell nothing new
	// within Risk.Window of it.
	alertAt uint32
	// raised is the set of signals (bits by detector) of the token's last
	// risk_score still within the window: a risk_score is raised again
	// only when a signal outside it joins.
	raised uint16
	// acts counts the distinct new actions (new_action) of the token
	// within Risk.Window, the last at actsAt.
	acts   uint8
	actsAt uint32
}

var levelNames = [...]string{"", LevelToken, LevelHolder, LevelTenant}

func levelIndex(l string) uint8 {
	for i, n := range levelNames {
		if n == l {
			return uint8(i)
		}
	}
	return 0
}

// weakFactor is what a deviation from the token's own baseline only (its
// holder knows the value) weighs against a full signal.
const weakFactor = 0.5

// signal records that detector d saw something at the event, at level
// (whether or not the cooldown lets it alert): it counts towards the
// token's risk score for Risk.Window.
func (e *Engine) signal(s *tokenState, o *obs, d detectorID, level string) {
	e.signalWeighted(s, o, d, level, e.weights[d])
}

// signalWeak records a deviation from the token's own baseline that its
// holder's baseline explains: half a signal, and never an alert.
func (e *Engine) signalWeak(s *tokenState, o *obs, d detectorID) {
	e.signalWeighted(s, o, d, LevelToken, e.weights[d]*weakFactor)
}

func (e *Engine) signalWeighted(s *tokenState, o *obs, d detectorID, level string, w float64) {
	if !e.enabled[d] || w <= 0 {
		return
	}
	r := &s.core.risk
	t := max(secs32(o.t), 1)
	w8 := uint8(math.Round(w * 255))
	win := uint32(e.cfg.Risk.Window / time.Second)
	if r.at[d] != 0 && t >= r.at[d] && t-r.at[d] <= win && r.w[d] >= w8 {
		r.at[d] = t
		return
	}
	r.at[d], r.w[d], r.lvl[d] = t, w8, levelIndex(level)
	o.signaled = true
}

// score combines the token's signals within the window at t: 1 - Π(1 -
// w). It returns the score, its factors, strongest first, and their
// detectors as a set.
func (e *Engine) score(s *tokenState, t int64) (float64, []events.RiskFactor, uint16) {
	r := &s.core.risk
	now := secs32(t)
	win := uint32(e.cfg.Risk.Window / time.Second)
	rest := 1.0
	var factors []events.RiskFactor
	var set uint16
	for d := detectorID(0); d < numDetectors; d++ {
		if r.at[d] == 0 || now < r.at[d] || now-r.at[d] > win || r.w[d] == 0 {
			continue
		}
		set |= 1 << d
		w := float64(r.w[d]) / 255
		rest *= 1 - w
		factors = append(factors, events.RiskFactor{Signal: detectorNames[d], Level: levelNames[r.lvl[d]], Weight: math.Round(w*100) / 100})
	}
	sort.SliceStable(factors, func(i, j int) bool { return factors[i].Weight > factors[j].Weight })
	return math.Round((1-rest)*1000) / 1000, factors, set
}

func formatFactors(fs []events.RiskFactor) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Signal + "@" + f.Level + "=" + strconv.FormatFloat(f.Weight, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

// scoreRisk computes the token's risk after the event: it raises a
// risk_score anomaly when the event brought a signal, the score reaches
// Risk.Threshold, at least two signals make it (one signal alone has its
// own detector's anomaly), no anomaly of the token as severe as
// Risk.Severity went out within Risk.Window (the risk_score escalates weak
// signals; it does not repeat a strong one) and a signal joined those of
// the token's last risk_score (one alert per episode: the same weak
// signals recurring every hour are not news); and it puts the score and
// its explanation on every anomaly of the event.
func (e *Engine) scoreRisk(s *tokenState, o *obs) {
	if !o.signaled && len(o.out) == 0 {
		return
	}
	risk, factors, set := e.score(s, o.t)
	cfg := &e.cfg.Risk
	r := &s.core.risk
	now := max(secs32(o.t), 1)
	for i := range o.out {
		if events.SeverityRank(o.out[i].Severity) >= events.SeverityRank(cfg.Severity) {
			r.alertAt = now
		}
	}
	escalated := r.alertAt != 0 && now >= r.alertAt && now-r.alertAt <= uint32(cfg.Window/time.Second)
	r.raised &= set // signals that left the window may be news again
	if o.signaled && !escalated && risk >= cfg.Threshold && len(factors) >= 2 && set&^r.raised != 0 && cfg.Enabled && e.admit(s, o, detRiskScore) {
		r.raised = set
		e.emit(s, o, detRiskScore, "", cfg.Severity,
			"risk "+strconv.FormatFloat(risk, 'f', 2, 64)+" from "+itoa(len(factors))+" signals within "+cfg.Window.String()+": "+formatFactors(factors),
			"a risk_score anomaly is raised at "+strconv.FormatFloat(cfg.Threshold, 'f', 2, 64)+
				"; the score is 1 - Π(1 - weight) over the token's signals, a deviation only from its own baseline weighing half",
			nil)
	}
	if len(o.out) == 0 {
		return
	}
	ff := formatFactors(factors)
	for i := range o.out {
		o.out[i].Risk = risk
		o.out[i].RiskFactors = factors
		o.out[i].Evidence.Details["risk"] = strconv.FormatFloat(risk, 'f', 3, 64)
		o.out[i].Evidence.Details["risk_factors"] = ff
	}
}
