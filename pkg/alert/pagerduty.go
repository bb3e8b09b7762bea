package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// PagerDutyURL is the Events API v2 endpoint.
const PagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// PagerDutyConfig configures a PagerDuty Events API v2 sink.
type PagerDutyConfig struct {
	// RoutingKey is the integration key (a credential: never logged).
	RoutingKey string
	// URL is the events endpoint (default PagerDutyURL).
	URL string
	// ClientURL is a link back to Cordon shown in the incident, if any.
	ClientURL string
	// Client is the HTTP client (default: 15s timeout).
	Client *http.Client
}

// PagerDuty sends alerts as PagerDuty Events API v2 events: a trigger per
// update of a token's alert and a resolve when it resolves, all with the
// token's dedup_key so that they land on one PagerDuty alert.
type PagerDuty struct {
	c PagerDutyConfig
}

// NewPagerDuty returns a PagerDuty Events API v2 sink.
func NewPagerDuty(c PagerDutyConfig) (*PagerDuty, error) {
	if c.RoutingKey == "" {
		return nil, fmt.Errorf("%w: pagerduty: routing key is required", ErrBadConfig)
	}
	if c.URL == "" {
		c.URL = PagerDutyURL
	}
	if err := checkURL("pagerduty", c.URL); err != nil {
		return nil, err
	}
	return &PagerDuty{c: c}, nil
}

// Name implements Sink.
func (*PagerDuty) Name() string { return "pagerduty" }

// String never shows the routing key.
func (*PagerDuty) String() string { return "pagerduty events v2" }

// PagerDutyEvent is an Events API v2 alert event.
type PagerDutyEvent struct {
	RoutingKey  string            `json:"routing_key"`
	EventAction string            `json:"event_action"`
	DedupKey    string            `json:"dedup_key"`
	Payload     *PagerDutyPayload `json:"payload,omitempty"`
	Client      string            `json:"client,omitempty"`
	ClientURL   string            `json:"client_url,omitempty"`
}

// PagerDutyPayload is the payload of a trigger event.
type PagerDutyPayload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// PagerDutySeverity maps a Cordon severity onto PagerDuty's (critical,
// error, warning, info).
func PagerDutySeverity(s string) string {
	switch s {
	case events.SeverityCritical:
		return "critical"
	case events.SeverityHigh:
		return "error"
	case events.SeverityMedium:
		return "warning"
	}
	return "info"
}

// PagerDutyDedupKey is the dedup_key of a token's alert.
func PagerDutyDedupKey(a *Alert) string { return a.GroupKey() }

// PagerDutyEventFor renders a as an Events API v2 event for routingKey.
func PagerDutyEventFor(a *Alert, routingKey, clientURL string) PagerDutyEvent {
	ev := PagerDutyEvent{RoutingKey: routingKey, DedupKey: PagerDutyDedupKey(a), Client: "Cordon", ClientURL: clientURL}
	if a.Status == StatusResolved {
		ev.EventAction = "resolve"
		return ev
	}
	ev.EventAction = "trigger"
	latest := a.Latest()
	at := latest.At
	if at.IsZero() {
		at = a.UpdatedAt
	}
	ev.Payload = &PagerDutyPayload{
		Summary:   clip(a.Summary(), 1024),
		Source:    "cordon/" + a.Tenant + "/" + a.Holder,
		Severity:  PagerDutySeverity(a.Severity),
		Timestamp: at.UTC().Format(time.RFC3339Nano),
		Component: a.Holder,
		Group:     a.Tenant,
		Class:     latest.Detector,
		CustomDetails: map[string]any{
			"token_id":    a.TokenID,
			"tenant":      a.Tenant,
			"holder":      a.Holder,
			"seen":        a.Seen(),
			"baseline":    a.Baseline(),
			"cordon_did":  a.Did(),
			"outcome":     string(a.Outcome),
			"rule":        a.Rule,
			"anomaly_id":  latest.AnomalyID,
			"anomalies":   strconv.Itoa(a.Count),
			"break_glass": a.BreakGlass,
			"source_ip":   latest.SourceIP,
		},
	}
	return ev
}

// Send implements Sink.
func (p *PagerDuty) Send(ctx context.Context, a *Alert) (bool, error) {
	body, err := json.Marshal(PagerDutyEventFor(a, p.c.RoutingKey, p.c.ClientURL))
	if err != nil {
		return false, fmt.Errorf("encode pagerduty event: %w", err)
	}
	return post(ctx, p.c.Client, p.c.URL, body)
}
