package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/pkg/token"
)

// Leaked-token intake.
//
//	POST /v1/leaks/github   GitHub secret scanning partner reports, signed
//	                        (ECDSA P-256 over the raw body; Options.LeakKeys)
//	POST /v1/leaks          the same body from any scanner, unsigned,
//	                        rate-limited per client address
//	cordon.cmd.report-leak  the same body over NATS (the admin role's
//	                        credential), rate-limited
//
// Each reported string that is a token this issuer signed (checksum,
// signature under one of its keys) and has not expired is public, so
// compromised: the issuer publishes a critical AnomalyDetected of detector
// events.DetectorLeakedPublic for it, whose evidence names where it was
// found, and waits for JetStream to accept it before it answers. The
// revoker's response policy acts on it (revoke by default) and alerts
// on-call. The reply labels every report true_positive or false_positive
// and names it by its SHA-256, never by the string. Anything else in a
// report (garbage, another vendor's secret, a broken checksum, a retired
// key) changes nothing.

// Leak intake defaults.
const (
	// DefaultLeakRate is the unsigned intake's sustained rate, requests
	// per second per client address (and for the NATS subject as one
	// client).
	DefaultLeakRate = 2.0
	// DefaultLeakBurst is its burst.
	DefaultLeakBurst = 20
	// leakPublishTimeout bounds waiting for JetStream to accept a batch's
	// anomalies: GitHub's sender times out after about 10 s.
	leakPublishTimeout = 8 * time.Second
	// maxLeakClients bounds the rate limiter's table of client addresses.
	maxLeakClients = 10_000
)

// ErrRateLimited is returned when the unsigned intake's rate is exceeded.
var ErrRateLimited = errors.New("too many leak reports")

// LeakResult is the reply to a leak report batch.
type LeakResult struct {
	// Feedback has one verdict per report, in order.
	Feedback []leak.Feedback `json:"feedback"`
	// Compromised counts the reports that were this issuer's live tokens.
	Compromised int `json:"compromised"`
}

// limiter is a token bucket per client.
type limiter struct {
	rate  float64
	burst float64
	mu    sync.Mutex
	b     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), b: map[string]*bucket{}}
}

// allow takes one request of client's budget.
func (l *limiter) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b[client]
	if b == nil {
		if len(l.b) >= maxLeakClients {
			// Forget the full ones: a flood of addresses cannot grow the
			// table, and forgotten clients start with a full burst again.
			for k, v := range l.b {
				if v.tokens+now.Sub(v.last).Seconds()*l.rate >= l.burst {
					delete(l.b, k)
				}
			}
			if len(l.b) >= maxLeakClients {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.b[client] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// handleLeakGitHub answers GitHub's secret scanning partner reports.
func (i *Issuer) handleLeakGitHub(w http.ResponseWriter, r *http.Request) {
	if i.opts.LeakKeys == nil {
		i.writeError(w, fmt.Errorf("%w: GitHub leak reports are not configured (start the issuer with --leak-github-keys)", ErrNotFound))
		return
	}
	body, err := readLeakBody(w, r)
	if err != nil {
		i.writeError(w, err)
		return
	}
	keyID, sig := r.Header.Get("GITHUB-PUBLIC-KEY-IDENTIFIER"), r.Header.Get("GITHUB-PUBLIC-KEY-SIGNATURE")
	if err := i.opts.LeakKeys.Verify(r.Context(), body, keyID, sig); err != nil {
		i.stats.leakRefused.Add(1)
		if errors.Is(err, leak.ErrKeyDocument) {
			i.log.Error().Err(err).Msg("leak report: GitHub's key document is unavailable")
			i.writeError(w, fmt.Errorf("%w: the signing keys could not be read", ErrNotReady))
			return
		}
		i.writeError(w, fmt.Errorf("%w: %v", ErrUnauthenticated, err))
		return
	}
	i.answerLeak(w, r.Context(), body, "github")
}

// handleLeakPlain answers unsigned reports, rate-limited per client.
func (i *Issuer) handleLeakPlain(w http.ResponseWriter, r *http.Request) {
	client := adminauth.PeerOf(r).Addr
	if !i.leakLimit.allow(clientKey(client), i.now()) {
		i.stats.leakRefused.Add(1)
		w.Header().Set("Retry-After", "1")
		i.writeError(w, ErrRateLimited)
		return
	}
	body, err := readLeakBody(w, r)
	if err != nil {
		i.writeError(w, err)
		return
	}
	i.answerLeak(w, r.Context(), body, "report")
}

func clientKey(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	if a.Is6() && !a.Is4In6() {
		// One client holds a /64.
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.Unmap().String()
}

func (i *Issuer) answerLeak(w http.ResponseWriter, ctx context.Context, body []byte, reporter string) {
	res, err := i.ReportLeaks(ctx, body, reporter)
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res.Feedback)
}

func readLeakBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, leak.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, leak.MaxBody)
		}
		return nil, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	return body, nil
}

// leakHandler answers cordon.cmd.report-leak: the reply is a LeakResult
// or a CmdReply error.
func (i *Issuer) leakHandler(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var reply any
	if !i.leakLimit.allow("nats", i.now()) {
		reply = CmdReply{OK: false, Outcome: OutcomeRejected, Error: ErrRateLimited.Error(), Code: "rate_limited"}
	} else {
		ctx, cancel := context.WithTimeout(i.bg, cmdTimeout)
		res, err := i.ReportLeaks(ctx, m.Data, "nats")
		cancel()
		if err != nil {
			_, code := Classify(err)
			reply = CmdReply{OK: false, Outcome: OutcomeRejected, Error: err.Error(), Code: code}
		} else {
			reply = res
		}
	}
	b, err := json.Marshal(reply)
	if err != nil {
		return
	}
	if err := m.Respond(b); err != nil {
		i.log.Warn().Err(err).Msg("send leak report reply")
	}
}

// ReportLeaks acts on a batch of leak reports (leak.ParseReports' format)
// from reporter: every live token of this issuer among them gets a
// critical leaked_public anomaly, accepted by JetStream before it returns.
// A batch JetStream did not accept fails as a whole (the sender retries;
// the anomalies' ids make the retry idempotent).
func (i *Issuer) ReportLeaks(ctx context.Context, body []byte, reporter string) (LeakResult, error) {
	reports, err := leak.ParseReports(body)
	if err != nil {
		i.stats.leakRefused.Add(1)
		return LeakResult{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	now := i.now()
	res := LeakResult{Feedback: make([]leak.Feedback, len(reports))}
	var futures []jetstream.PubAckFuture
	seen := map[string]bool{}
	for n, rep := range reports {
		sum := sha256.Sum256([]byte(rep.Token))
		res.Feedback[n] = leak.Feedback{TokenHash: hex.EncodeToString(sum[:]), TokenType: rep.Type, Label: leak.FalsePositive}
		if !token.CheckChecksum(rep.Token) {
			continue
		}
		tok, err := i.keys.ring.Verify(rep.Token)
		if err != nil || !now.Before(tok.ExpiryTime()) {
			continue
		}
		res.Feedback[n].Label = leak.TruePositive
		res.Compromised++
		key := tok.ID + "\x00" + rep.URL
		if seen[key] {
			continue
		}
		seen[key] = true
		env, err := leakAnomaly(tok, rep, reporter, now, i.opts.Source)
		if err != nil {
			return LeakResult{}, fmt.Errorf("leak report: %w", err)
		}
		data, err := events.Encode(env)
		if err != nil {
			return LeakResult{}, fmt.Errorf("leak report: %w", err)
		}
		f, err := i.js.PublishAsync(events.Subject(env), data, jetstream.WithMsgID(env.MsgID()))
		if err != nil {
			return LeakResult{}, fmt.Errorf("%w: publish the leak report: %v", ErrNotReady, err)
		}
		futures = append(futures, f)
	}
	wctx, cancel := context.WithTimeout(ctx, leakPublishTimeout)
	defer cancel()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return LeakResult{}, fmt.Errorf("%w: JetStream refused a leak report: %v", ErrNotReady, err)
		case <-wctx.Done():
			return LeakResult{}, fmt.Errorf("%w: JetStream did not accept the leak reports in time", ErrNotReady)
		}
	}
	i.stats.leakReports.Add(uint64(len(reports)))
	i.stats.leakCompromised.Add(uint64(res.Compromised))
	if res.Compromised > 0 {
		i.log.Warn().Str("reporter", reporter).Int("reports", len(reports)).Int("compromised", res.Compromised).Msg("leaked tokens reported")
	}
	return res, nil
}

// leakAnomaly is the critical anomaly of one report. Its id is derived from
// the token and where it was found, so a report sent again is the same
// anomaly (JetStream drops it within the stream's duplicate window; the
// revoker finds the token already revoked after it).
func leakAnomaly(tok *token.Token, rep leak.Report, reporter string, now time.Time, source string) (events.Envelope, error) {
	// The time bits are the token's issue time, so the id is the same
	// whenever the report is sent again.
	id := events.DerivedID(time.Unix(tok.IssuedAt, 0), events.DetectorLeakedPublic+"\x00"+tok.ID+"\x00"+rep.URL)
	where := rep.URL
	if where == "" {
		where = "an unnamed place"
	}
	an := &events.AnomalyDetected{
		AnomalyID: id.String(), Detector: events.DetectorLeakedPublic, Severity: events.SeverityCritical,
		TokenID: tok.ID, Tenant: tok.Tenant, Holder: tok.Holder, EventID: id.String(), EventTime: now.UTC(),
		Subject: events.AnomalyToken, Risk: 1,
		Evidence: events.Evidence{
			Seen:     "the token was found in public by " + reporter + " at " + where,
			Baseline: "a token is never public: whoever found it can use it",
			Details: map[string]string{events.LeakDetailURL: rep.URL, events.LeakDetailSource: rep.Source,
				events.LeakDetailType: rep.Type, events.LeakDetailReporter: reporter},
		},
	}
	if source == "" {
		source = "issuer"
	}
	env := events.Envelope{ID: id, Type: events.TypeAnomalyDetected, Time: now.UTC(), Source: source, Version: events.SchemaVersion, Data: an}
	return env, env.Validate()
}
