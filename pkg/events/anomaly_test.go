package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestAnomalySubjectAndRisk: a token anomaly names a token, a source
// anomaly names none ("-") and carries its source; the risk score and its
// factors stay in range.
func TestAnomalySubjectAndRisk(t *testing.T) {
	base := func() *events.AnomalyDetected {
		return &events.AnomalyDetected{AnomalyID: "a1", Detector: "new_network", Severity: events.SeverityHigh, TokenID: "t1", Tenant: "acme",
			EventID: "e1", EventTime: time.Now(), SourceIP: "203.0.113.9", Evidence: events.Evidence{Seen: "x"}}
	}
	tests := []struct {
		name string
		mod  func(*events.AnomalyDetected)
		ok   bool
	}{
		{"token", func(*events.AnomalyDetected) {}, true},
		{"explicit token subject", func(a *events.AnomalyDetected) { a.Subject = events.AnomalyToken }, true},
		{"source", func(a *events.AnomalyDetected) { a.Subject, a.TokenID = events.AnomalySource, events.SourceTokenID }, true},
		{"source naming a token", func(a *events.AnomalyDetected) { a.Subject = events.AnomalySource }, false},
		{"source without address", func(a *events.AnomalyDetected) {
			a.Subject, a.TokenID, a.SourceIP = events.AnomalySource, events.SourceTokenID, ""
		}, false},
		{"token anomaly naming no token", func(a *events.AnomalyDetected) { a.TokenID = events.SourceTokenID }, false},
		{"unknown subject", func(a *events.AnomalyDetected) { a.Subject = "key" }, false},
		{"risk with factors", func(a *events.AnomalyDetected) {
			a.Risk, a.RiskFactors = 0.8, []events.RiskFactor{{Signal: "new_network", Level: "holder", Weight: 0.5}}
		}, true},
		{"risk above 1", func(a *events.AnomalyDetected) { a.Risk = 1.2 }, false},
		{"risk negative", func(a *events.AnomalyDetected) { a.Risk = -0.1 }, false},
		{"factor weight above 1", func(a *events.AnomalyDetected) { a.RiskFactors = []events.RiskFactor{{Signal: "x", Weight: 2}} }, false},
		{"factor without signal", func(a *events.AnomalyDetected) { a.RiskFactors = []events.RiskFactor{{Weight: 0.2}} }, false},
		{"too many factors", func(a *events.AnomalyDetected) {
			a.RiskFactors = make([]events.RiskFactor, events.MaxRiskFactors+1)
			for i := range a.RiskFactors {
				a.RiskFactors[i] = events.RiskFactor{Signal: "x", Weight: 0.1}
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := base()
			tt.mod(a)
			err := a.Validate()
			if tt.ok && err != nil {
				t.Fatal(err)
			}
			if !tt.ok && !errors.Is(err, events.ErrInvalidField) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}
