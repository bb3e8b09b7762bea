package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// SlackConfig configures a Slack incoming-webhook sink.
type SlackConfig struct {
	// URL is the incoming webhook URL (a credential: never logged).
	URL string
	// Client is the HTTP client (default: 15s timeout).
	Client *http.Client
}

// Slack posts alerts to a Slack incoming webhook as a message with a text
// fallback and Block Kit blocks.
type Slack struct {
	c SlackConfig
}

// NewSlack returns a Slack incoming-webhook sink.
func NewSlack(c SlackConfig) (*Slack, error) {
	if err := checkURL("slack webhook", c.URL); err != nil {
		return nil, err
	}
	return &Slack{c: c}, nil
}

// Name implements Sink.
func (*Slack) Name() string { return "slack" }

// String never shows the URL.
func (*Slack) String() string { return "slack webhook" }

// SlackMessage is the body posted to an incoming webhook.
type SlackMessage struct {
	// Text is the notification fallback.
	Text   string       `json:"text"`
	Blocks []SlackBlock `json:"blocks"`
}

// SlackBlock is a Block Kit layout block (header, section, context).
type SlackBlock struct {
	Type     string      `json:"type"`
	Text     *SlackText  `json:"text,omitempty"`
	Fields   []SlackText `json:"fields,omitempty"`
	Elements []SlackText `json:"elements,omitempty"`
}

// SlackText is a Block Kit text object (plain_text or mrkdwn).
type SlackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// slackEscape escapes the three characters Slack's mrkdwn reserves; what
// detectors saw may come from an attacker.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func mrkdwn(s string) SlackText { return SlackText{Type: "mrkdwn", Text: clip(s, 3000)} }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 1
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// SlackPayload renders a as an incoming-webhook message.
func SlackPayload(a *Alert) SlackMessage {
	icon := map[Status]string{StatusFiring: ":rotating_light:", StatusResolved: ":white_check_mark:"}[a.Status]
	head := "Token anomaly"
	if a.BreakGlass {
		head = "BREAK-GLASS token anomaly"
	}
	if a.Status == StatusResolved {
		head = "Resolved: " + strings.ToLower(head[:1]) + head[1:]
	}
	did := map[Outcome]string{
		OutcomeRevoked: "revoked", OutcomeDryRun: "would revoke (dry run)", OutcomeAlertOnly: "alert only",
		OutcomeBreakGlass: "paged (break-glass)", OutcomeAlreadyRevoked: "already revoked",
		OutcomeQuarantined: "quarantined", OutcomeSteppedUp: "stepped up",
	}[a.Outcome]
	e := slackEscape.Replace
	ctx := fmt.Sprintf("anomaly %s · %d in group", e(a.Latest().AnomalyID), a.Count)
	if a.Rule != "" {
		ctx += " · rule " + e(a.Rule)
	}
	if a.Source != "" {
		ctx += " · " + e(a.Source)
	}
	return SlackMessage{
		Text: icon + " " + e(a.Summary()),
		Blocks: []SlackBlock{
			{Type: "header", Text: &SlackText{Type: "plain_text", Text: clip(head+": "+strings.Join(a.Detectors(), " + "), 150)}},
			{Type: "section", Fields: []SlackText{
				mrkdwn("*Token*\n`" + e(a.TokenID) + "`"),
				mrkdwn("*Tenant / holder*\n" + e(a.Tenant+"/"+a.Holder)),
				mrkdwn("*Severity*\n" + e(a.Severity)),
				mrkdwn("*Cordon did*\n" + did),
			}},
			{Type: "section", Text: ptr(mrkdwn("*Seen*\n" + e(a.Seen())))},
			{Type: "section", Text: ptr(mrkdwn("*Baseline*\n" + e(a.Baseline())))},
			{Type: "section", Text: ptr(mrkdwn("*What Cordon did*\n" + e(a.Did())))},
			{Type: "context", Elements: []SlackText{mrkdwn(ctx)}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// Send implements Sink.
func (s *Slack) Send(ctx context.Context, a *Alert) (bool, error) {
	body, err := json.Marshal(SlackPayload(a))
	if err != nil {
		return false, fmt.Errorf("encode slack payload: %w", err)
	}
	return post(ctx, s.c.Client, s.c.URL, body)
}
