package up

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/issuer"
)

// Addresses of the drill. Every 127.x.y.z address is loopback on Linux, so
// the attacker gets an address of its own, in another /24 than the holder.
const (
	HolderAddr   = "127.0.0.1"
	AttackerAddr = "127.66.0.9"
)

// DrillReport is what the leak drill observed, with wall-clock times.
type DrillReport struct {
	LeakedToken, OtherToken, FreshToken string // token ids
	LegitAllowed, LegitDenied           int
	OtherDenied                         int // denials of the untouched token (must stay 0)
	FirstAttack                         time.Time
	FirstAnomaly                        time.Time
	AnomalyDetectors                    []string
	Revoked                             time.Time
	FirstRevokedDenial                  time.Time
	AttackerAllowed, AttackerDenied     int
	FreshAllowed                        bool
	UsageRows                           uint64 // rows of the leaked token in ClickHouse
	AnomalyRows                         uint64
	LedgerRows                          uint64
}

// DetectionToDenial is from the first out-of-context request to the first
// request denied because the token was revoked.
func (r *DrillReport) DetectionToDenial() time.Duration {
	return r.FirstRevokedDenial.Sub(r.FirstAttack)
}

// drillClient sends requests through the proxy from a chosen loopback address.
type drillClient struct {
	http  *http.Client
	base  string
	token string
}

func newDrillClient(base, localIP, token string) *drillClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}
	return &drillClient{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}, base: base, token: token}
}

type drillResult struct {
	status int
	reason string
	at     time.Time
}

func (c *drillClient) do(ctx context.Context, method, path string) (drillResult, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return drillResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", "cordon-drill")
	resp, err := c.http.Do(req)
	if err != nil {
		return drillResult{}, err
	}
	defer resp.Body.Close()
	var body struct {
		Reason string `json:"reason"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = json.Unmarshal(b, &body)
	if resp.StatusCode == http.StatusOK {
		body.Reason = "ok"
	}
	return drillResult{status: resp.StatusCode, reason: body.Reason, at: time.Now()}, nil
}

// Drill runs the leak drill against a running system and prints its
// timeline to out: a token is issued and used normally, then replayed by
// an attacker from another address, probing scopes; the anomaly, the
// revocation and the first denied attacker request appear with their
// times. Another holder's token keeps working throughout.
func Drill(ctx context.Context, s *System, out io.Writer) (*DrillReport, error) {
	rep := &DrillReport{}
	start := time.Now()
	// The subscriptions below print from NATS's goroutines while the drill
	// prints from this one: every line goes through one lock.
	out = &syncWriter{w: out}
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(out, "\n== Cordon leak drill\n   proxy %s → demo service %s; issuer API http://%s; NATS %s\n   admin token: %s; NATS identities (one per service, no anonymous access): %s\n\n",
		s.ProxyURL, s.UpstreamURL, s.Issuer.Addr(), s.NATS.ClientURL(), s.Issuer.AdminTokenPath(), s.CredsDir)

	// Watch anomalies and revocations as they are published, with the
	// admin's identity (which may watch, not publish, the ledger).
	var mu sync.Mutex
	anomalies := map[string]bool{}
	sub1, err := s.NC.Subscribe(events.SubjectAnomalyPrefix+">", func(m *nats.Msg) {
		e, a, err := events.DecodeAs[*events.AnomalyDetected](m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if a.TokenID != rep.LeakedToken {
			return
		}
		if rep.FirstAnomaly.IsZero() {
			rep.FirstAnomaly = time.Now()
		}
		if !anomalies[a.Detector] {
			anomalies[a.Detector] = true
			rep.AnomalyDetectors = append(rep.AnomalyDetectors, a.Detector)
			say("ANOMALY   %-16s severity %-8s seen %q, baseline %q (event %s)", a.Detector, a.Severity, a.Evidence.Seen, a.Evidence.Baseline, e.ID)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub1.Unsubscribe()
	sub2, err := s.NC.Subscribe(events.SubjectTokenPrefix+"revoked.>", func(m *nats.Msg) {
		_, r, err := events.DecodeAs[*events.TokenRevoked](m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if r.TokenID != rep.LeakedToken {
			return
		}
		if rep.Revoked.IsZero() {
			rep.Revoked = time.Now()
			say("REVOKED   token %s by %s: %s", r.TokenID, r.Actor, r.Reason)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub2.Unsubscribe()

	// 1. Tokens are issued within the policy's ceilings.
	issue := func(holder string, scopes ...string) (*issuer.IssueResponse, error) {
		return s.Issuer.Issue(ctx, "drill", issuer.IssueRequest{Tenant: "acme", Holder: holder, Scopes: scopes,
			Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
	}
	leaked, err := issue("billing-api", "invoices:list", "invoices:read", "customers:read")
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	mu.Lock()
	rep.LeakedToken = leaked.ID
	mu.Unlock()
	say("ISSUED    token %s for acme/billing-api: scopes %v, networks %v, audience %v, env %s, expires %s",
		leaked.ID, leaked.Claims.Scopes, leaked.Claims.Networks, leaked.Claims.Audience, leaked.Claims.Environment, leaked.Claims.Expiry.Format(time.RFC3339))
	other, err := issue("reporting", "invoices:list", "invoices:read")
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	rep.OtherToken = other.ID
	say("ISSUED    token %s for acme/reporting: scopes %v", other.ID, other.Claims.Scopes)
	if _, err := issue("reporting", "invoices:write"); err != nil {
		say("REFUSED   a token for acme/reporting with invoices:write — %v", err)
	}

	// 2. Normal use from the holder's address, and the other holder's.
	before := s.Auditor.Stats().Usage
	holder := newDrillClient(s.ProxyURL, HolderAddr, leaked.Token)
	reporting := newDrillClient(s.ProxyURL, HolderAddr, other.Token)
	// A back office works on a handful of open invoices, in no order.
	working := []int{1042, 1007, 1093, 1042, 1015, 1061, 1007, 1078}
	for i := 1; i <= 30; i++ {
		r, err := holder.do(ctx, "GET", fmt.Sprintf("/invoices/%d", working[i%len(working)]))
		if err != nil {
			return nil, err
		}
		if r.status == http.StatusOK {
			rep.LegitAllowed++
		} else {
			rep.LegitDenied++
		}
		if r2, err := reporting.do(ctx, "GET", "/invoices"); err != nil {
			return nil, err
		} else if r2.status != http.StatusOK {
			rep.OtherDenied++
		}
	}
	say("NORMAL    acme/billing-api from %s: %d requests allowed, %d denied", HolderAddr, rep.LegitAllowed, rep.LegitDenied)
	r, err := holder.do(ctx, "DELETE", "/invoices/1001")
	if err != nil {
		return nil, err
	}
	say("DENIED    acme/billing-api DELETE /invoices/1001 → %d %s (the token never had invoices:delete)", r.status, r.reason)
	// 30 + 30 normal requests and the denied DELETE.
	if err := s.waitAudited(ctx, before+61); err != nil {
		return nil, err
	}
	say("AUDITED   the auditor has learned the token's baseline (%d usage events so far)", s.Auditor.Stats().Usage)
	mu.Lock()
	flagged, revokedEarly := rep.AnomalyDetectors, !rep.Revoked.IsZero()
	mu.Unlock()
	if len(flagged) > 0 || revokedEarly {
		return rep, fmt.Errorf("drill: the holder's normal use was flagged before any attack (anomalies %v, revoked %v): the detectors mistake normal use for an attack", flagged, revokedEarly)
	}

	// 3. The token leaks: an attacker replays it from another address and
	// probes for scopes it does not have.
	fmt.Fprintln(out)
	attacker := newDrillClient(s.ProxyURL, AttackerAddr, leaked.Token)
	probes := []struct{ method, path string }{
		{"GET", "/invoices/1"}, {"DELETE", "/invoices/1"}, {"POST", "/invoices"}, {"GET", "/admin/users"},
		{"PUT", "/invoices/2"}, {"GET", "/customers/1/payment-methods"}, {"GET", "/admin/keys"},
	}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		p := probes[i%len(probes)]
		if i >= len(probes) {
			p = probes[0]
			p.path = fmt.Sprintf("/invoices/%d", i)
		}
		r, err := attacker.do(ctx, p.method, p.path)
		if err != nil {
			return nil, err
		}
		if rep.FirstAttack.IsZero() {
			rep.FirstAttack = r.at
			if r.reason == events.ReasonRevoked {
				// Only the holder's own use came before: a detector took
				// it for an attack. The drill would prove nothing.
				mu.Lock()
				dets := slices.Clone(rep.AnomalyDetectors)
				mu.Unlock()
				return rep, fmt.Errorf("drill: the leaked token was revoked before the attacker's first request (anomalies on the holder's own use: %v)", dets)
			}
		}
		if r.status == http.StatusOK {
			rep.AttackerAllowed++
		} else {
			rep.AttackerDenied++
		}
		if i < len(probes) || r.reason == events.ReasonRevoked {
			say("ATTACKER  %s %-6s %-32s → %d %s", AttackerAddr, p.method, p.path, r.status, r.reason)
		}
		if r.reason == events.ReasonRevoked {
			rep.FirstRevokedDenial = r.at
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if rep.FirstRevokedDenial.IsZero() {
		mu.Lock()
		dets := slices.Clone(rep.AnomalyDetectors)
		mu.Unlock()
		return rep, fmt.Errorf("drill: the leaked token was not revoked within 15s (anomalies: %v)", dets)
	}
	// The other holder is untouched; the victim holder gets a fresh token.
	for i := 0; i < 5; i++ {
		if r, err := reporting.do(ctx, "GET", "/invoices"); err != nil {
			return nil, err
		} else if r.status != http.StatusOK {
			rep.OtherDenied++
		}
	}
	say("UNHARMED  acme/reporting keeps working: %d denials during the whole drill", rep.OtherDenied)
	fresh, err := issue("billing-api", "invoices:list", "invoices:read", "customers:read")
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	rep.FreshToken = fresh.ID
	if r, err := newDrillClient(s.ProxyURL, HolderAddr, fresh.Token).do(ctx, "GET", "/invoices/1001"); err != nil {
		return nil, err
	} else {
		rep.FreshAllowed = r.status == http.StatusOK
		say("REISSUED  acme/billing-api got token %s → GET /invoices/1001 %d %s", fresh.ID, r.status, r.reason)
	}

	// 4. The timeline, and the same story in ClickHouse.
	mu.Lock()
	fmt.Fprintf(out, "\n== Timeline (from the attacker's first request)\n")
	fmt.Fprintf(out, "   first out-of-context request   %s  +0 ms\n", rep.FirstAttack.Format("15:04:05.000"))
	if !rep.FirstAnomaly.IsZero() {
		fmt.Fprintf(out, "   first anomaly published        %s  +%d ms  (%s)\n", rep.FirstAnomaly.Format("15:04:05.000"), rep.FirstAnomaly.Sub(rep.FirstAttack).Milliseconds(), strings.Join(rep.AnomalyDetectors, ", "))
	}
	if !rep.Revoked.IsZero() {
		fmt.Fprintf(out, "   token revoked (ledger)         %s  +%d ms\n", rep.Revoked.Format("15:04:05.000"), rep.Revoked.Sub(rep.FirstAttack).Milliseconds())
	}
	fmt.Fprintf(out, "   first request denied: revoked  %s  +%d ms\n", rep.FirstRevokedDenial.Format("15:04:05.000"), rep.DetectionToDenial().Milliseconds())
	fmt.Fprintf(out, "   attacker: %d requests allowed before containment, %d denied\n", rep.AttackerAllowed, rep.AttackerDenied)
	mu.Unlock()

	// Every request since the normal use began has its usage event: the 61
	// of the normal use and the attacker's. (Counting from the auditor's
	// figure now would also count the attacker's events it has already
	// written, twice, and wait for events that never come.)
	if err := s.waitAudited(ctx, before+61+uint64(rep.AttackerAllowed+rep.AttackerDenied)); err != nil {
		return rep, err
	}
	q := fmt.Sprintf(`SELECT decision, reason, source_ip, count() AS requests, min(time) AS first, max(time) AS last
FROM usage_events WHERE token_id = '%s' GROUP BY decision, reason, source_ip ORDER BY first`, rep.LeakedToken)
	res, err := s.Store.Query(ctx, q)
	if err != nil {
		return rep, fmt.Errorf("query usage: %w", err)
	}
	fmt.Fprintf(out, "\n== In ClickHouse: cordon sql \"%s\"\n", strings.Join(strings.Fields(q), " "))
	if err := res.WriteTable(out); err != nil {
		return rep, err
	}
	for _, r := range res.Rows {
		if n, ok := r[3].(uint64); ok {
			rep.UsageRows += n
		}
	}
	count := func(q string) uint64 {
		res, err := s.Store.Query(ctx, q)
		if err != nil || len(res.Rows) == 0 {
			return 0
		}
		n, _ := res.Rows[0][0].(uint64)
		return n
	}
	rep.AnomalyRows = count(fmt.Sprintf("SELECT count() FROM anomalies WHERE token_id = '%s'", rep.LeakedToken))
	rep.LedgerRows = count(fmt.Sprintf("SELECT count() FROM token_ledger WHERE token_id = '%s'", rep.LeakedToken))
	fmt.Fprintf(out, "   anomalies for the token: %d rows; ledger: %d rows (issued, revoked)\n", rep.AnomalyRows, rep.LedgerRows)
	fmt.Fprintf(out, "\n   drill finished in %.1fs\n", time.Since(start).Seconds())
	return rep, nil
}

// waitAudited waits until the auditor has written at least n usage events
// and as many as the enforcer has published. n alone is not enough: the
// other holder's requests go on while the attacker's are decided, and
// their rows could make up n before the attacker's last rows are written.
func (s *System) waitAudited(ctx context.Context, n uint64) error {
	if err := s.Enforcer.Flush(ctx); err != nil {
		return fmt.Errorf("flush usage: %w", err)
	}
	n = max(n, s.Enforcer.Stats().UsagePublished)
	deadline := time.Now().Add(20 * time.Second)
	for s.Auditor.Stats().Usage < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("auditor wrote %d of %d usage events within 20s", s.Auditor.Stats().Usage, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write implements io.Writer.
func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
