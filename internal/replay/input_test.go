package replay_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/events"
)

// t0 is the event time the inputs of these tests start at.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// usageLine is a valid usage event at t, as one JSONL line.
func usageLine(t testing.TB, at time.Time, token string) string {
	t.Helper()
	e, err := events.New("enforcer/edge-1", at, &events.UsageDecided{TokenID: token, Tenant: "acme", Holder: "billing",
		Enforcer: "edge-1", Service: "invoices", SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
		Decision: events.DecisionAllow, Reason: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// issuedLine is a valid token.issued event at t.
func issuedLine(t testing.TB, at time.Time, token string) string {
	t.Helper()
	e, err := events.New("issuer/test", at, &events.TokenIssued{TokenID: token, Tenant: "acme", Holder: "billing", KeyID: "k1",
		Claims: events.TokenClaims{Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: at, Expiry: at.Add(24 * time.Hour)},
		Actor:  "ops"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// anomalyLine is a valid event of a type replay skips.
func anomalyLine(t testing.TB) string {
	t.Helper()
	e, _ := events.New("test", t0, &events.AnomalyDetected{AnomalyID: "a1", Detector: "x", Severity: "low", TokenID: "t",
		Tenant: "acme", EventID: "e", EventTime: t0, Evidence: events.Evidence{Seen: "s"}})
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// at returns usage lines at t0 plus each offset, in that order.
func at(t testing.TB, offsets ...time.Duration) []string {
	out := make([]string, len(offsets))
	for i, d := range offsets {
		out[i] = usageLine(t, t0.Add(d), "tok-1")
	}
	return out
}

func jsonl(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// TestCheckOrder: an input going back in event time beyond the tolerance
// is refused, naming the line and the latest line above it; within the
// tolerance, sorted in memory, or with the check off, it is accepted.
func TestCheckOrder(t *testing.T) {
	m := time.Minute
	cases := []struct {
		name      string
		in        string
		o         replay.Options
		line, top int // 0: accepted
	}{
		{name: "in order", in: jsonl(at(t, 0, m, 2*m, 2*m, 3*m)...)},
		{name: "within the default tolerance", in: jsonl(at(t, 0, m, m-3*time.Second, 2*m)...)},
		{name: "a minute back", in: jsonl(at(t, 0, m, 2*m, m, 3*m)...), line: 4, top: 3},
		{name: "back from the latest, not the previous", in: jsonl(at(t, 0, 10*m, 9*m+58*time.Second, 5*m)...), line: 4, top: 2},
		{name: "strict", in: jsonl(at(t, 0, m, m-time.Second)...), o: replay.Options{Tolerance: time.Nanosecond}, line: 3, top: 2},
		{name: "wider tolerance", in: jsonl(at(t, 0, m, 0)...), o: replay.Options{Tolerance: 2 * m}},
		{name: "check off", in: jsonl(at(t, time.Hour, 0)...), o: replay.Options{Tolerance: -1}},
		{name: "sorted in memory", in: jsonl(at(t, time.Hour, 0)...), o: replay.Options{Sort: true}},
		{name: "ledger events count", in: jsonl(usageLine(t, t0.Add(m), "tok-1"), issuedLine(t, t0, "tok-2")), line: 2, top: 1},
		{name: "bad lines do not count", in: jsonl(usageLine(t, t0, "x"), `{"time":"2020-01-01T00:00:00Z"}`, usageLine(t, t0.Add(m), "x"))},
		{name: "skipped events do not count", in: jsonl(usageLine(t, t0.Add(time.Hour), "x"), anomalyLine(t), usageLine(t, t0.Add(time.Hour), "x"))},
		{name: "before a continued replay", in: jsonl(at(t, 0, m)...), o: replay.Options{NotBefore: t0.Add(30 * time.Second)}, line: 1},
		{name: "after a continued replay", in: jsonl(at(t, m, 2*m)...), o: replay.Options{NotBefore: t0.Add(m)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := replay.Check(strings.NewReader(tc.in), tc.o)
			if tc.line == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if res.Events() == 0 || res.FirstEvent.IsZero() || res.LastEvent.Before(res.FirstEvent) {
					t.Errorf("result %+v", res)
				}
				return
			}
			var oe *replay.OrderError
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v, want an *OrderError", err)
			}
			if oe.Line != tc.line || oe.LatestLine != tc.top {
				t.Errorf("order error at line %d (latest line %d), want %d (%d): %v", oe.Line, oe.LatestLine, tc.line, tc.top, err)
			}
			want := fmt.Sprintf("line %d:", tc.line)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
			if tc.top > 0 && (!errors.Is(err, replay.ErrOutOfOrder) || !strings.Contains(err.Error(), fmt.Sprintf("line %d's", tc.top))) {
				t.Errorf("message %q does not name line %d or wrap ErrOutOfOrder", err, tc.top)
			}
		})
	}
}

// TestCheckNothingToReplay: an input that would replay nothing is an
// error saying why, never an empty success.
func TestCheckNothingToReplay(t *testing.T) {
	many := strings.Repeat("{\"bad\":1}\n", 2900)
	cases := []struct {
		name, in string
		o        replay.Options
		want     string
		bad      int
	}{
		{"empty", "", replay.Options{}, "the input is empty", 0},
		{"blank lines", "\n \n\t\n", replay.Options{}, "the input is empty", 0},
		{"every line bad", many, replay.Options{}, "none of the 2900 non-empty lines is a valid event; the first, line 1:", 2900},
		{"not JSONL", "id,type,time\n1,usage,now\n", replay.Options{}, "none of the 2 non-empty lines", 2},
		{"only other types", jsonl(anomalyLine(t), anomalyLine(t)), replay.Options{}, "2 valid events skipped", 0},
		{"only ledger, left out", jsonl(issuedLine(t, t0, "a")), replay.Options{SkipLedger: true}, "1 valid events skipped", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := replay.Check(strings.NewReader(tc.in), tc.o)
			if !errors.Is(err, replay.ErrNoEvents) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrNoEvents saying %q", err, tc.want)
			}
			if res.Bad != tc.bad || len(res.BadLines) != min(tc.bad, 10) {
				t.Errorf("bad = %d with %d kept, want %d with %d", res.Bad, len(res.BadLines), tc.bad, min(tc.bad, 10))
			}
		})
	}
}

// TestBadLinesSummary: bad lines are summarised, the first ten with their
// numbers and a count of the rest, each on one plain line even when the
// input carries control characters (a terminal escape in a log line must
// not reach the terminal).
func TestBadLinesSummary(t *testing.T) {
	var in strings.Builder
	in.WriteString(usageLine(t, t0, "a") + "\n")
	for i := 0; i < 25; i++ {
		in.WriteString("\x1b[31mred\r\n")
	}
	res, err := replay.Check(strings.NewReader(in.String()), replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := res.PrintBadLines(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.HasPrefix(s, "bad lines:         25\n  line 2: ") || !strings.Contains(s, "  line 11: ") || strings.Contains(s, "line 12:") ||
		!strings.HasSuffix(s, "  … and 15 more\n") {
		t.Errorf("summary:\n%s", s)
	}
	if strings.ContainsAny(s, "\x1b\r") {
		t.Errorf("control characters in the summary: %q", s)
	}
}

// graduatedLines are the graduated response's ledger events of token tok
// from at, one a minute, as JSONL lines: a quarantine, its release, a
// step-up and a shadow step.
func graduatedLines(t testing.TB, at time.Time, tok string) []string {
	t.Helper()
	exp := at.Add(24 * time.Hour)
	payloads := []events.Payload{
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing", Step: events.StepNarrow, Until: at.Add(time.Hour),
			Scopes: []string{"invoices:read"}, Networks: []string{"10.0.0.0/8"}, Actor: "revoker/auditor", Reason: "new_network anomaly",
			Rule: "quarantine-new-network", AnomalyID: "an-1", Risk: 0.75, Expiry: exp},
		&events.TokenReleased{TokenID: tok, Tenant: "acme", Holder: "billing", Step: events.StepNarrow, Actor: "ops", Reason: "false alarm"},
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing", Step: events.StepStepUp, Until: at.Add(2 * time.Hour),
			Actor: "ops", Reason: "device check", Expiry: exp},
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing", Step: events.StepShadow, Would: events.StepRevoke,
			Actor: "revoker/auditor", Reason: "impossible travel", Rule: "revoke-travel", Risk: 0.5, Expiry: exp},
	}
	lines := make([]string, len(payloads))
	for i, p := range payloads {
		e, err := events.New("revoker/test", at.Add(time.Duration(i)*time.Minute), p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		lines[i] = string(b)
	}
	return lines
}

// TestCheckGraduatedResponse: the graduated response's restricted and
// released events are ledger events to replay (on the TOKENS stream), not
// events of other types to skip; SkipLedger leaves them out with the rest
// of the ledger.
func TestCheckGraduatedResponse(t *testing.T) {
	lines := append([]string{issuedLine(t, t0, "tok-1"), usageLine(t, t0.Add(time.Second), "tok-1")},
		graduatedLines(t, t0.Add(time.Minute), "tok-1")...)
	lines = append(lines, anomalyLine(t))
	cases := []struct {
		name                   string
		o                      replay.Options
		usage, ledger, skipped int
	}{
		{"replayed", replay.Options{Tolerance: -1}, 1, 5, 1},
		{"ledger left out", replay.Options{Tolerance: -1, SkipLedger: true}, 1, 0, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := replay.Check(strings.NewReader(jsonl(lines...)), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Usage != tc.usage || res.Ledger != tc.ledger || res.Skipped != tc.skipped || res.Bad != 0 {
				t.Errorf("usage %d ledger %d skipped %d bad %d, want %d %d %d 0", res.Usage, res.Ledger, res.Skipped, res.Bad, tc.usage, tc.ledger, tc.skipped)
			}
		})
	}
}
