package auditor_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// These tests run issue 9's scenarios through the real pipeline: events
// published on JetStream (TOKENS, USAGE), the auditor's detection loop
// with the default thresholds, anomalies read back from the ANOMALIES
// stream. Usage looks like the real enforcer's: the route pattern plus the
// resource, the normalised client.

// monday is the first day of the histories, 00:00 UTC.
var monday = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// detPipeline is a running auditor with detection and what it published.
type detPipeline struct {
	t         *testing.T
	env       *natstest.Env
	a         *auditor.Auditor
	mu        sync.Mutex
	published []events.AnomalyDetected
	usageSeq  uint64
	ledgerSeq uint64
}

func startDetection(t *testing.T, db string) *detPipeline {
	t.Helper()
	p := &detPipeline{t: t, env: natstest.Run(t)}
	d, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p.a, _, _ = run(t, auditor.Options{JS: p.env.JS, Store: openStore(t, db), Detector: d, Log: zerolog.Nop(), BatchWait: 20 * time.Millisecond,
		OnAnomaly: func(e events.Envelope) {
			p.mu.Lock()
			p.published = append(p.published, *e.Data.(*events.AnomalyDetected))
			p.mu.Unlock()
		}})
	return p
}

// send publishes events in order and waits until the detectors observed
// them: ledger events first, so that a token's issuance is known before
// its use (the auditor reads the two streams side by side).
func (p *detPipeline) send(envs ...events.Envelope) {
	p.t.Helper()
	ctx := context.Background()
	for _, e := range envs {
		data, err := events.Encode(e)
		if err != nil {
			p.t.Fatal(err)
		}
		ack, err := p.env.JS.Publish(ctx, events.Subject(e), data)
		if err != nil {
			p.t.Fatal(err)
		}
		if _, ok := e.Data.(*events.UsageDecided); ok {
			p.usageSeq = ack.Sequence
		} else {
			p.ledgerSeq = ack.Sequence
		}
		if _, ok := e.Data.(*events.UsageDecided); !ok {
			p.settle()
		}
	}
	p.settle()
}

// settle waits until the detectors handled everything sent.
func (p *detPipeline) settle() {
	p.t.Helper()
	natstest.WaitFor(p.t, 60*time.Second, func() error {
		st := p.a.Stats()
		if st.SeenUsageSeq < p.usageSeq || st.SeenLedgerSeq < p.ledgerSeq {
			return fmt.Errorf("detectors at usage %d/%d, ledger %d/%d", st.SeenUsageSeq, p.usageSeq, st.SeenLedgerSeq, p.ledgerSeq)
		}
		return nil
	})
}

// mark is how many anomalies were published so far.
func (p *detPipeline) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.published)
}

// since returns the anomalies published after mark m.
func (p *detPipeline) since(m int) []events.AnomalyDetected {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.published[m:])
}

// onStream waits until the ANOMALIES stream holds every anomaly raised by
// the usage event eventID that want names, and returns them.
func (p *detPipeline) onStream(eventID string, want ...string) []events.AnomalyDetected {
	p.t.Helper()
	var got []events.AnomalyDetected
	natstest.WaitFor(p.t, 30*time.Second, func() error {
		got = got[:0]
		s, err := p.env.JS.Stream(context.Background(), events.StreamAnomalies)
		if err != nil {
			return err
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			if err != nil {
				continue
			}
			_, a, err := events.DecodeAs[*events.AnomalyDetected](m.Data)
			if err != nil || a.EventID != eventID {
				continue
			}
			got = append(got, *a)
			have[a.Detector] = true
		}
		for _, d := range want {
			if !have[d] {
				return fmt.Errorf("ANOMALIES has %v for event %s, want %v", detectorNames(got), eventID, want)
			}
		}
		return nil
	})
	return got
}

func detectorNames(as []events.AnomalyDetected) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Detector)
	}
	slices.Sort(out)
	return out
}

func ledgerEnv(t *testing.T, at time.Time, p events.Payload) events.Envelope {
	t.Helper()
	e, err := events.New("issuer", at, p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// issue is a token of holder issued at at for a day, requested from ip
// with client.
func issue(t *testing.T, id, holder string, at time.Time, ip, client string) events.Envelope {
	return ledgerEnv(t, at, &events.TokenIssued{TokenID: id, Tenant: "acme", Holder: holder, KeyID: "k1", Actor: "issuer",
		Claims:    events.TokenClaims{Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: at, Expiry: at.Add(24 * time.Hour)},
		Requested: &events.IssuanceContext{SourceIP: ip, Client: client}})
}

type req struct {
	tok, holder, ip, client string
	method, route, resource string
	scope, decision, reason string
}

func (r req) at(t *testing.T, when time.Time) events.Envelope {
	t.Helper()
	u := &events.UsageDecided{TokenID: r.tok, Tenant: "acme", Holder: r.holder, KeyID: "k1", Enforcer: "edge-1", Service: "invoices",
		SourceIP: r.ip, UserAgent: r.client + " (test)", Client: r.client, Method: r.method, Route: r.route, Resource: r.resource,
		Scope: r.scope, Decision: r.decision, Reason: r.reason, LatencyNS: 30_000}
	if u.Method == "" {
		u.Method, u.Route, u.Scope = "GET", "/invoices/{id}", "invoices:read"
	}
	if u.Decision == "" {
		u.Decision, u.Reason = events.DecisionAllow, "ok"
	}
	e, err := events.New("enforcer/edge-1", when, u)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func tokID(holder string, n int) string {
	return fmt.Sprintf("019cabd9-%04x-7000-8000-%012d", len(holder), n)
}

// billingWeek is a week of a holder that gets a fresh token every day
// (none lives long enough to learn a baseline of its own): each is
// requested from 10.20.0.5 by billing-client/2 and used 40 times during
// office hours from 10.20.0.10–14, one invoice at a time.
func billingWeek(t *testing.T) []events.Envelope {
	var out []events.Envelope
	for d := 0; d < 7; d++ {
		day := monday.Add(time.Duration(d) * 24 * time.Hour)
		tok := tokID("billing-api", d)
		out = append(out, issue(t, tok, "billing-api", day.Add(8*time.Hour), "10.20.0.5", "billing-client/2"))
		for i := 0; i < 40; i++ {
			r := req{tok: tok, holder: "billing-api", ip: fmt.Sprintf("10.20.0.%d", 10+i%5), client: "billing-client/2",
				resource: strconv.Itoa(1 + (d*40+i)%300)}
			out = append(out, r.at(t, day.Add(9*time.Hour+time.Duration(i)*12*time.Minute)))
		}
	}
	return out
}

// TestStolenTokenOfLearntHolder: the holder's tokens never live long
// enough to learn alone, but the holder has a week of history. One of its
// tokens, stolen, is used from a new network with a new client: flagged
// on that first request, with the level broken, the issuance context and
// a risk score combining the signals.
func TestStolenTokenOfLearntHolder(t *testing.T) {
	p := startDetection(t, "holder_stolen")
	p.send(billingWeek(t)...)
	if n := p.mark(); n != 0 {
		t.Fatalf("a week of normal use raised %v", detectorNames(p.since(0)))
	}
	stolen := req{tok: tokID("billing-api", 6), holder: "billing-api", ip: "198.51.100.23", client: "curl/8", resource: "17"}
	first := stolen.at(t, monday.Add(6*24*time.Hour+15*time.Hour))
	p.send(first)
	got := p.onStream(first.ID.String(), detect.NewNetwork, detect.NewClient, detect.IssuanceMismatch)
	for _, a := range got {
		if a.TokenID != stolen.tok || a.Risk < 0.8 || len(a.RiskFactors) < 3 {
			t.Errorf("%s: token %s risk %v factors %v", a.Detector, a.TokenID, a.Risk, a.RiskFactors)
		}
		if a.Detector == detect.NewNetwork && (a.Evidence.Details["level"] != detect.LevelTenant || a.Evidence.Details["network"] != "198.51.100.0/24") {
			t.Errorf("new_network evidence %v", a.Evidence.Details)
		}
		if a.Detector == detect.IssuanceMismatch && (a.Severity != events.SeverityHigh || a.Evidence.Details["requested_network"] != "10.20.0.0/24") {
			t.Errorf("issuance_mismatch %s %v", a.Severity, a.Evidence.Details)
		}
	}
}

// TestFreshTokenJudgedFromFirstUse: a token issued five minutes ago to a
// holder with a week of history is judged from its first request: used
// out of its context (another network and client than it was requested
// from and than the holder uses) it is flagged; a sibling issued at the
// same time, and a rotated successor, used from the holder's networks
// with its client raise nothing.
func TestFreshTokenJudgedFromFirstUse(t *testing.T) {
	p := startDetection(t, "holder_fresh")
	p.send(billingWeek(t)...)
	now := monday.Add(7*24*time.Hour + 10*time.Hour)
	outTok, inTok, rotTok := tokID("billing-api", 100), tokID("billing-api", 101), tokID("billing-api", 102)
	rotated := issue(t, rotTok, "billing-api", now.Add(-5*time.Minute), "10.20.0.5", "billing-client/2")
	rotated.Data.(*events.TokenIssued).RotatedFrom = tokID("billing-api", 6)
	p.send(
		issue(t, outTok, "billing-api", now.Add(-5*time.Minute), "10.20.0.5", "billing-client/2"),
		issue(t, inTok, "billing-api", now.Add(-5*time.Minute), "10.20.0.5", "billing-client/2"),
		ledgerEnv(t, now.Add(-5*time.Minute), &events.TokenRotated{TokenID: tokID("billing-api", 6), SuccessorID: rotTok, Tenant: "acme",
			Holder: "billing-api", GraceUntil: now.Add(time.Hour), Actor: "issuer"}),
		rotated,
	)
	m := p.mark()
	benign := []events.Envelope{
		req{tok: inTok, holder: "billing-api", ip: "10.20.0.12", client: "billing-client/2", resource: "44"}.at(t, now),
		req{tok: rotTok, holder: "billing-api", ip: "10.20.0.13", client: "billing-client/2", resource: "45"}.at(t, now.Add(time.Second)),
		// A client upgrade of the same family is the same client.
		req{tok: inTok, holder: "billing-api", ip: "10.20.0.11", client: "billing-client/3", resource: "46"}.at(t, now.Add(2*time.Second)),
	}
	p.send(benign...)
	if got := p.since(m); len(got) != 0 {
		t.Fatalf("in-context first uses raised %v", detectorNames(got))
	}
	out := req{tok: outTok, holder: "billing-api", ip: "203.0.113.9", client: "python-requests/2", resource: "44"}.at(t, now.Add(3*time.Second))
	p.send(out)
	got := p.onStream(out.ID.String(), detect.IssuanceMismatch, detect.NewNetwork, detect.NewClient)
	for _, a := range got {
		if a.TokenID != outTok {
			t.Errorf("%s on token %s, want %s", a.Detector, a.TokenID, outTok)
		}
	}
}

// TestResourceSweepFromEnforcerRoutes: 29 requests of one route pattern on
// 29 resources within 3 seconds — all denied, or all allowed — are a
// resource sweep, as the real enforcer reports them (route
// "/invoices/{id}", resource "1".."29").
func TestResourceSweepFromEnforcerRoutes(t *testing.T) {
	for _, variant := range []string{"denied", "allowed"} {
		t.Run(variant, func(t *testing.T) {
			p := startDetection(t, "holder_sweep_"+variant)
			p.send(billingWeek(t)...)
			start := monday.Add(6*24*time.Hour + 14*time.Hour)
			var sweep []events.Envelope
			for i := 1; i <= 29; i++ {
				r := req{tok: tokID("billing-api", 6), holder: "billing-api", ip: "10.20.0.11", client: "billing-client/2", resource: strconv.Itoa(i)}
				if variant == "denied" {
					r.method, r.route, r.scope, r.decision, r.reason = "GET", "/invoices/{id}/password", "invoices:secret", events.DecisionDeny, "scope_missing"
				}
				sweep = append(sweep, r.at(t, start.Add(time.Duration(i)*100*time.Millisecond)))
			}
			m := p.mark()
			p.send(sweep...)
			var ev string
			for _, a := range p.since(m) {
				if a.Detector == detect.ResourceSweep {
					ev = a.EventID
				}
			}
			if ev == "" {
				t.Fatalf("29 distinct resources in 3s raised %v, no resource_sweep", detectorNames(p.since(m)))
			}
			got := p.onStream(ev, detect.ResourceSweep)
			if d := got[0].Evidence.Details; d["level"] != detect.LevelHolder {
				t.Errorf("resource_sweep evidence %v", d)
			}
		})
	}
}

// TestBroadHolderIsNoSweep: a holder whose tokens normally read many
// invoices in a burst (a reporting job: 60 distinct invoices in two
// minutes, four times a day) does so again with a fresh token: no sweep,
// no alert.
func TestBroadHolderIsNoSweep(t *testing.T) {
	p := startDetection(t, "holder_broad")
	var hist []events.Envelope
	burst := func(tok string, at time.Time, from int) {
		for i := 0; i < 60; i++ {
			r := req{tok: tok, holder: "reporting", ip: "10.30.0.5", client: "report-runner/1", resource: strconv.Itoa(from + i)}
			hist = append(hist, r.at(t, at.Add(time.Duration(i)*2*time.Second)))
		}
	}
	for d := 0; d < 7; d++ {
		day := monday.Add(time.Duration(d) * 24 * time.Hour)
		tok := tokID("reporting", d)
		hist = append(hist, issue(t, tok, "reporting", day.Add(7*time.Hour), "10.30.0.5", "report-runner/1"))
		for b := 0; b < 4; b++ {
			burst(tok, day.Add(time.Duration(8+2*b)*time.Hour), 1000*d+100*b)
		}
	}
	p.send(hist...)
	m := p.mark()
	if m != 0 {
		t.Fatalf("the reporting week raised %v", detectorNames(p.since(0)))
	}
	tok := tokID("reporting", 7)
	hist = hist[:0]
	hist = append(hist, issue(t, tok, "reporting", monday.Add(7*24*time.Hour+7*time.Hour), "10.30.0.5", "report-runner/1"))
	burst(tok, monday.Add(7*24*time.Hour+8*time.Hour), 90_000)
	p.send(hist...)
	if got := p.since(m); len(got) != 0 {
		t.Fatalf("the holder's usual breadth raised %v", detectorNames(got))
	}
}

// TestOlderCheckpointStartsFresh: a checkpoint whose detector state an
// older build wrote (snapshot version 1, per-token baselines only) does
// not stop the auditor: it logs "checkpoint from an older build, starting
// fresh", keeps the stream positions (no replay, no re-alerting) and
// detects from empty baselines. A corrupt one is still refused.
func TestOlderCheckpointStartsFresh(t *testing.T) {
	env := natstest.Run(t)
	write := func(t *testing.T, body []byte) string {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		hdr := append([]byte("CORDONDS1"), make([]byte, 16)...)
		binary.BigEndian.PutUint64(hdr[9:], 4242)
		binary.BigEndian.PutUint64(hdr[17:], 77)
		if err := os.WriteFile(filepath.Join(dir, "detectors.state"), append(hdr, body...), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	newDet := func() *detect.Engine {
		d, err := detect.New(detect.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Version 1: magic, version, 16 networks, 6 detectors, one zone, no token.
	v1 := append([]byte("CORDONDT"), 1, 16, 6, 1, 0, 0, 0, 0, 0, 0)
	var logs syncBuffer
	a, _, done := run(t, auditor.Options{JS: env.JS, Store: openStore(t, "older_ckpt"), Detector: newDet(), StateDir: write(t, v1), Log: zerolog.New(&logs)})
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), "checkpoint from an older build, starting fresh") {
			return fmt.Errorf("no clear log line: %s", logs.String())
		}
		if st := a.Stats(); st.SeenUsageSeq != 4242 || st.SeenLedgerSeq != 77 {
			return fmt.Errorf("stream positions not kept: %+v", st)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("an older checkpoint stopped the auditor: %v", err)
	default:
	}
	// A corrupt checkpoint of the current layout (version 3) is refused.
	a2, err := auditor.New(auditor.Options{JS: env.JS, Store: openStore(t, "older_ckpt"), Detector: newDet(), StateDir: write(t, []byte("CORDONDT\x03\x10\x0c\x20\x00garbage")), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a2.Run(ctx); !errors.Is(err, detect.ErrSnapshot) {
		t.Fatalf("a corrupt checkpoint: %v, want ErrSnapshot", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger writing from goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
