package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// AlertName is the alertname label of Cordon's alerts.
const AlertName = "CordonTokenAnomaly"

// WebhookConfig configures an Alertmanager-compatible webhook sink.
type WebhookConfig struct {
	// URL receives the POST (a credential: never logged).
	URL string
	// Receiver is the receiver name in the payload (default "cordon").
	Receiver string
	// ExternalURL is a link back to Cordon, if any.
	ExternalURL string
	// Client is the HTTP client (default: 15s timeout).
	Client *http.Client
}

// Webhook posts alerts in the JSON format Alertmanager sends to webhook
// receivers (payload version "4"), one alert per token group.
type Webhook struct {
	c WebhookConfig
}

// NewWebhook returns an Alertmanager-format webhook sink.
func NewWebhook(c WebhookConfig) (*Webhook, error) {
	if err := checkURL("alertmanager webhook", c.URL); err != nil {
		return nil, err
	}
	if c.Receiver == "" {
		c.Receiver = "cordon"
	}
	return &Webhook{c: c}, nil
}

// Name implements Sink.
func (*Webhook) Name() string { return "alertmanager" }

// String never shows the URL.
func (*Webhook) String() string { return "alertmanager webhook" }

// WebhookMessage is the body Alertmanager posts to a webhook receiver.
type WebhookMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     string            `json:"startsAt"`
	EndsAt       string            `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// WebhookPayload renders a in Alertmanager's webhook format.
func WebhookPayload(a *Alert, receiver, externalURL string) WebhookMessage {
	labels := map[string]string{
		"alertname": AlertName,
		"tenant":    a.Tenant,
		"holder":    a.Holder,
		"token_id":  a.TokenID,
		"severity":  a.Severity,
		"outcome":   string(a.Outcome),
	}
	if a.BreakGlass {
		labels["break_glass"] = "true"
	}
	latest := a.Latest()
	ann := map[string]string{
		"summary":     a.Summary(),
		"description": a.Description(),
		"seen":        a.Seen(),
		"baseline":    a.Baseline(),
		"action":      a.Did(),
		"detectors":   strings.Join(a.Detectors(), ","),
		"anomalies":   strconv.Itoa(a.Count),
	}
	if latest.AnomalyID != "" {
		ann["anomaly_id"] = latest.AnomalyID
	}
	if a.Rule != "" {
		ann["rule"] = a.Rule
	}
	if a.Resolution != "" {
		ann["resolution"] = a.Resolution
	}
	return WebhookMessage{
		Version:           "4",
		GroupKey:          fmt.Sprintf("{}:{token_id=%q}", a.TokenID),
		Status:            string(a.Status),
		Receiver:          receiver,
		GroupLabels:       map[string]string{"token_id": a.TokenID},
		CommonLabels:      labels,
		CommonAnnotations: ann,
		ExternalURL:       externalURL,
		Alerts: []WebhookAlert{{
			Status:       string(a.Status),
			Labels:       labels,
			Annotations:  ann,
			StartsAt:     rfc3339(a.StartsAt),
			EndsAt:       rfc3339(a.EndsAt),
			GeneratorURL: externalURL,
			Fingerprint:  a.Fingerprint(),
		}},
	}
}

// Send implements Sink.
func (w *Webhook) Send(ctx context.Context, a *Alert) (bool, error) {
	body, err := json.Marshal(WebhookPayload(a, w.c.Receiver, w.c.ExternalURL))
	if err != nil {
		return false, fmt.Errorf("encode alertmanager payload: %w", err)
	}
	return post(ctx, w.c.Client, w.c.URL, body)
}
