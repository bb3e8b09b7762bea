package alert_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/alert"
)

// receiver is a local HTTP receiver that records bodies and fails the
// first `fail` requests with `failCode`.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	attempts int
	fail     int
	failCode int
	block    chan struct{}
}

func newReceiver(t *testing.T, fail, failCode int) *receiver {
	r := &receiver{fail: fail, failCode: failCode}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.block != nil {
			select {
			case <-r.block:
			case <-req.Context().Done():
				return
			}
		}
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.attempts++
		failing := r.attempts <= r.fail
		if !failing {
			r.bodies = append(r.bodies, b)
		}
		r.mu.Unlock()
		if req.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		if failing {
			w.WriteHeader(r.failCode)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() ([][]byte, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), r.attempts
}

func waitFor(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var at = time.Date(2026, 11, 27, 3, 4, 5, 0, time.UTC)

func notice(id, detector, severity string, outcome alert.Outcome) alert.Notice {
	return alert.Notice{
		TokenID: "01940000-0000-7000-8000-0000000000aa", Tenant: "acme", Holder: "billing-api",
		Observation: alert.Observation{AnomalyID: id, Detector: detector, Severity: severity,
			Seen: "203.0.113.9 <script>", Baseline: "10.20.0.0/16", SourceIP: "203.0.113.9", At: at},
		Severity: severity, Outcome: outcome, Rule: "high-risk", Action: "reason: new_network anomaly " + id,
	}
}

func dispatcher(t *testing.T, log io.Writer, sinks ...alert.Sink) *alert.Dispatcher {
	d := alert.NewDispatcher(alert.Options{
		Sinks: sinks, Log: zerolog.New(log), Source: "revoker/test",
		Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 4,
	})
	t.Cleanup(d.Close)
	return d
}

// TestFormats delivers a firing alert, an update and a resolve to each
// kind of receiver, which fails the first two attempts: the retries get
// through, in order, in the receiver's format.
func TestFormats(t *testing.T) {
	cases := []struct {
		name  string
		sink  func(url string) (alert.Sink, error)
		check func(t *testing.T, bodies [][]byte)
	}{
		{"alertmanager", func(u string) (alert.Sink, error) {
			return alert.NewWebhook(alert.WebhookConfig{URL: u, ExternalURL: "http://cordon.example"})
		}, checkAlertmanager},
		{"slack", func(u string) (alert.Sink, error) {
			return alert.NewSlack(alert.SlackConfig{URL: u + "/services/T0/B0/secret"})
		}, checkSlack},
		{"pagerduty", func(u string) (alert.Sink, error) {
			return alert.NewPagerDuty(alert.PagerDutyConfig{URL: u + "/v2/enqueue", RoutingKey: "R0UTINGKEY0123456789abcdef012345"})
		}, checkPagerDuty},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rcv := newReceiver(t, 2, http.StatusServiceUnavailable)
			s, err := c.sink(rcv.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			d := dispatcher(t, &logs, s)
			d.Notify(notice("an-1", "new_network", "high", alert.OutcomeAlertOnly))
			// Wait for the first delivery (after two failures) before the
			// update, so the receiver sees both states.
			waitFor(t, 5*time.Second, func() error {
				if b, _ := rcv.got(); len(b) < 1 {
					return fmt.Errorf("no delivery yet")
				}
				return nil
			})
			d.Notify(notice("an-2", "odd_hours", "critical", alert.OutcomeRevoked))
			if !d.Resolve("01940000-0000-7000-8000-0000000000aa", "token revoked by revoker") {
				t.Fatal("no open alert to resolve")
			}
			if d.Resolve("01940000-0000-7000-8000-0000000000aa", "again") {
				t.Fatal("resolved twice")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			bodies, attempts := rcv.got()
			if len(bodies) != 3 || attempts != 5 {
				t.Fatalf("got %d bodies in %d attempts, want 3 in 5 (2 failures retried)", len(bodies), attempts)
			}
			c.check(t, bodies)
			st := d.Stats().Sinks[s.Name()]
			if st.Sent != 3 || st.Retries != 2 || st.Failed != 0 {
				t.Fatalf("stats %+v", st)
			}
			if strings.Contains(logs.String(), "secret") || strings.Contains(logs.String(), "R0UTINGKEY") ||
				strings.Contains(logs.String(), rcv.srv.URL) {
				t.Fatalf("credentials in logs:\n%s", logs.String())
			}
			if !strings.Contains(logs.String(), "retrying") {
				t.Fatalf("retries not logged:\n%s", logs.String())
			}
		})
	}
}

func checkAlertmanager(t *testing.T, bodies [][]byte) {
	var msgs []alert.WebhookMessage
	for _, b := range bodies {
		var m alert.WebhookMessage
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		msgs = append(msgs, m)
	}
	first, update, resolved := msgs[0], msgs[1], msgs[2]
	if first.Version != "4" || first.Status != "firing" || first.Receiver != "cordon" || first.ExternalURL != "http://cordon.example" ||
		first.GroupKey != `{}:{token_id="01940000-0000-7000-8000-0000000000aa"}` || len(first.Alerts) != 1 {
		t.Fatalf("first: %+v", first)
	}
	a := first.Alerts[0]
	if a.Labels["alertname"] != alert.AlertName || a.Labels["severity"] != "high" || a.Labels["outcome"] != "alert_only" ||
		a.EndsAt != "0001-01-01T00:00:00Z" || a.StartsAt == a.EndsAt || len(a.Fingerprint) != 16 {
		t.Fatalf("first alert: %+v", a)
	}
	if !strings.Contains(a.Annotations["seen"], "203.0.113.9") || !strings.Contains(a.Annotations["baseline"], "10.20.0.0/16") ||
		!strings.Contains(a.Annotations["action"], "Alert only") {
		t.Fatalf("annotations lack what was seen / baseline / action: %+v", a.Annotations)
	}
	u := update.Alerts[0]
	if u.Labels["severity"] != "critical" || u.Labels["outcome"] != "revoked" || u.Annotations["anomalies"] != "2" ||
		!strings.Contains(u.Annotations["seen"], "odd_hours") || u.Fingerprint != a.Fingerprint {
		t.Fatalf("update: %+v", u)
	}
	r := resolved.Alerts[0]
	if resolved.Status != "resolved" || r.Status != "resolved" || r.EndsAt == "0001-01-01T00:00:00Z" ||
		r.Fingerprint != a.Fingerprint || !strings.Contains(r.Annotations["resolution"], "revoked") {
		t.Fatalf("resolved: %+v", resolved)
	}
}

func checkSlack(t *testing.T, bodies [][]byte) {
	var msgs []alert.SlackMessage
	for _, b := range bodies {
		var m alert.SlackMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Text == "" || len(m.Blocks) == 0 {
			t.Fatalf("slack message without text or blocks: %s", b)
		}
		msgs = append(msgs, m)
	}
	all := string(bodies[0])
	if !strings.Contains(all, "203.0.113.9 \\u0026lt;script\\u0026gt;") {
		t.Fatalf("mrkdwn not escaped: %s", all)
	}
	if !strings.Contains(all, "*Baseline*") || !strings.Contains(all, "10.20.0.0/16") || !strings.Contains(all, "alert only") {
		t.Fatalf("first message lacks baseline or outcome: %s", all)
	}
	if msgs[0].Blocks[0].Type != "header" || msgs[0].Blocks[0].Text.Type != "plain_text" {
		t.Fatalf("first block: %+v", msgs[0].Blocks[0])
	}
	if !strings.Contains(string(bodies[1]), "revoked") || !strings.HasPrefix(msgs[2].Blocks[0].Text.Text, "Resolved") {
		t.Fatalf("update/resolve: %s\n%s", bodies[1], bodies[2])
	}
}

func checkPagerDuty(t *testing.T, bodies [][]byte) {
	var evs []alert.PagerDutyEvent
	for _, b := range bodies {
		var e alert.PagerDutyEvent
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		evs = append(evs, e)
	}
	first, update, resolve := evs[0], evs[1], evs[2]
	if first.EventAction != "trigger" || first.RoutingKey != "R0UTINGKEY0123456789abcdef012345" || first.Payload == nil ||
		first.Payload.Severity != "error" || first.Payload.Source != "cordon/acme/billing-api" || first.Payload.Class != "new_network" ||
		first.Payload.Group != "acme" || first.Payload.Component != "billing-api" || first.Payload.Timestamp != "2026-11-27T03:04:05Z" {
		t.Fatalf("trigger: %+v %+v", first, first.Payload)
	}
	if first.Payload.CustomDetails["baseline"] == "" || first.Payload.CustomDetails["cordon_did"] == "" {
		t.Fatalf("custom details: %+v", first.Payload.CustomDetails)
	}
	if update.EventAction != "trigger" || update.Payload.Severity != "critical" || update.DedupKey != first.DedupKey {
		t.Fatalf("update: %+v", update)
	}
	if resolve.EventAction != "resolve" || resolve.DedupKey != first.DedupKey || resolve.Payload != nil {
		t.Fatalf("resolve: %+v", resolve)
	}
}

func TestPermanentFailureNotRetried(t *testing.T) {
	rcv := newReceiver(t, 100, http.StatusBadRequest)
	s, _ := alert.NewWebhook(alert.WebhookConfig{URL: rcv.srv.URL})
	d := dispatcher(t, io.Discard, s)
	d.Notify(notice("a", "new_network", "high", alert.OutcomeAlertOnly))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, attempts := rcv.got(); attempts != 1 {
		t.Fatalf("a 400 was retried: %d attempts", attempts)
	}
	if st := d.Stats().Sinks["alertmanager"]; st.Failed != 1 || st.Retries != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBoundedAttempts(t *testing.T) {
	rcv := newReceiver(t, 100, http.StatusBadGateway)
	s, _ := alert.NewSlack(alert.SlackConfig{URL: rcv.srv.URL})
	d := dispatcher(t, io.Discard, s)
	d.Notify(notice("a", "new_network", "high", alert.OutcomeAlertOnly))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, attempts := rcv.got(); attempts != 4 {
		t.Fatalf("%d attempts, want MaxAttempts=4", attempts)
	}
}

// TestNeverBlocks: a receiver that hangs does not slow Notify down, the
// per-sink queue is bounded, and an unsent update of a token's alert is
// replaced rather than queued again.
func TestNeverBlocks(t *testing.T) {
	rcv := newReceiver(t, 0, 0)
	rcv.block = make(chan struct{})
	s, _ := alert.NewWebhook(alert.WebhookConfig{URL: rcv.srv.URL})
	d := alert.NewDispatcher(alert.Options{Sinks: []alert.Sink{s}, QueueSize: 8, SendTimeout: 10 * time.Second})
	start := time.Now()
	for i := range 100 {
		n := notice(fmt.Sprint("a", i), "new_network", "high", alert.OutcomeAlertOnly)
		n.TokenID = fmt.Sprint("tok-", i%20)
		d.Notify(n)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Notify blocked for %v", el)
	}
	st := d.Stats()
	if st.Open != 20 {
		t.Fatalf("%d open alerts, want 20 (one per token)", st.Open)
	}
	// 20 groups: one in flight, 8 queued, the other 11 dropped; the 80
	// updates of queued groups were merged in place.
	if ss := st.Sinks["alertmanager"]; ss.Queued > 8 || ss.Dropped == 0 {
		t.Fatalf("queue not bounded: %+v", ss)
	}
	close(rcv.block)
	d.Close()
}

func TestAutoResolve(t *testing.T) {
	rcv := newReceiver(t, 0, 0)
	s, _ := alert.NewPagerDuty(alert.PagerDutyConfig{URL: rcv.srv.URL, RoutingKey: "k"})
	d := alert.NewDispatcher(alert.Options{Sinks: []alert.Sink{s}, SweepEvery: 10 * time.Millisecond})
	t.Cleanup(d.Close)
	n := notice("a", "use_after_revoke", "high", alert.OutcomeAlreadyRevoked)
	n.ResolveAt, n.ResolveReason = time.Now().Add(50*time.Millisecond), "token already dead; quiet for 50ms"
	d.Notify(n)
	waitFor(t, 5*time.Second, func() error {
		b, _ := rcv.got()
		if len(b) < 2 {
			return fmt.Errorf("%d deliveries", len(b))
		}
		if !strings.Contains(string(b[1]), `"resolve"`) {
			return fmt.Errorf("second delivery is not a resolve: %s", b[1])
		}
		return nil
	})
	if _, open := d.Open(n.TokenID); open {
		t.Fatal("still open")
	}
}

func TestDuplicateAnomalyIgnored(t *testing.T) {
	d := alert.NewDispatcher(alert.Options{})
	t.Cleanup(d.Close)
	d.Notify(notice("a", "new_network", "high", alert.OutcomeAlertOnly))
	d.Notify(notice("a", "new_network", "high", alert.OutcomeAlertOnly))
	d.Notify(notice("b", "odd_hours", "low", alert.OutcomeAlertOnly))
	a, ok := d.Open("01940000-0000-7000-8000-0000000000aa")
	if !ok || a.Count != 2 || a.Severity != "high" || len(a.Observations) != 2 {
		t.Fatalf("got %+v", a)
	}
	if !strings.Contains(a.Description(), "Seen:") || !strings.Contains(a.Description(), "Baseline:") {
		t.Fatal(a.Description())
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := alert.NewSlack(alert.SlackConfig{URL: "hooks.slack.com/services/secret"}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("got %v", err)
	}
	if _, err := alert.NewPagerDuty(alert.PagerDutyConfig{}); err == nil {
		t.Fatal("no routing key accepted")
	}
}

func TestResolveOpenedBefore(t *testing.T) {
	clock := at
	d := alert.NewDispatcher(alert.Options{Now: func() time.Time { return clock }})
	t.Cleanup(d.Close)
	n := notice("a", "use_after_revoke", "high", alert.OutcomeAlreadyRevoked)
	d.Notify(n)
	if d.ResolveOpenedBefore(n.TokenID, "revoked", at.Add(-time.Second)) {
		t.Fatal("a revocation resolved an alert opened after it")
	}
	if !d.ResolveOpenedBefore(n.TokenID, "revoked", at) {
		t.Fatal("a revocation did not resolve an alert opened before it")
	}
}
