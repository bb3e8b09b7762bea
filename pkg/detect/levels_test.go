package detect_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// Usage options for the enforcer's context.
func client(c string) usageOpt   { return func(u *events.UsageDecided) { u.Client = c } }
func resource(r string) usageOpt { return func(u *events.UsageDecided) { u.Resource = r } }
func holderOf(h string) usageOpt { return func(u *events.UsageDecided) { u.Holder = h } }

// pattern is a request as the real enforcer reports it: the route pattern
// and the resource.
func pattern(method, r, scope, res string) usageOpt {
	return func(u *events.UsageDecided) { u.Method, u.Route, u.Scope, u.Resource = method, r, scope, res }
}

func dayToken(d int) string { return fmt.Sprintf("019cabd9-0000-7000-8000-0000000003%02d", d) }

const (
	freshTok  = "019cabd9-0000-7000-8000-000000000999"
	holderNet = "10.1.2.11"
	otherNet  = "10.7.7.7" // the reporting holder's network, same tenant
	newNet    = "203.0.113.9"
	ourClient = "orders-client/4"
)

// issuedFrom is a day-long token of holder issued at when, requested from
// ip with client (no context when ip is empty).
func issuedFrom(id, h string, when time.Time, ip, cl string) events.Envelope {
	p := &events.TokenIssued{TokenID: id, Tenant: tenant, Holder: h, KeyID: "k1", Actor: "test",
		Claims: events.TokenClaims{Scopes: []string{"orders:read"}, Audience: []string{"orders-api"}, NotBefore: when, Expiry: when.Add(24 * time.Hour),
			Windows: []events.Window{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "08:00", End: "19:00", Zone: "Europe/Paris"}}}}
	if ip != "" {
		p.Requested = &events.IssuanceContext{SourceIP: ip, Client: cl}
	}
	return envelope(when, p)
}

// fleetHistory is a holder whose tokens live a day each (none learns a
// baseline of its own: 36 uses a day, learning wants 50 over 48h), used in
// office hours from 10.1.2.0/24 by orders-client/4, one order at a time,
// and reading one secret a day; for the weekdays of days 0 to 8. Another
// holder of the tenant uses 10.7.7.0/24.
func fleetHistory() []events.Envelope {
	var out []events.Envelope
	for d := 0; d < 9; d++ {
		if wd := at(d, 12, 0).Weekday(); wd == time.Saturday || wd == time.Sunday {
			continue
		}
		tk := dayToken(d)
		out = append(out, issuedFrom(tk, holder, at(d, 7, 0), "10.1.2.5", ourClient))
		for m := 9 * 60; m < 18*60; m += 15 {
			out = append(out, use(at(d, m/60, m%60), fmt.Sprintf("10.1.2.%d", 10+m%3), token(tk), client(ourClient),
				pattern("GET", "/v1/orders/{id}", "orders:read", fmt.Sprint(1+rand.IntN(900_000)))))
		}
		out = append(out, use(at(d, 12, 7), "10.1.2.10", token(tk), client(ourClient), pattern("GET", "/v1/secrets/{name}", "secrets:read", "db")))
		out = append(out, use(at(d, 12, 0), otherNet, token(fmt.Sprintf("019cabd9-0000-7000-8000-0000000004%02d", d)), holderOf("reporting"),
			client("report-runner/1"), pattern("GET", "/v1/orders", "orders:list", "")))
	}
	return out
}

func levelsOf(as []events.AnomalyDetected) map[string]string {
	m := map[string]string{}
	for _, a := range as {
		m[a.Detector] = a.Evidence.Details["level"]
	}
	return m
}

func TestHolderLevelDetectors(t *testing.T) {
	fresh := func(ip, cl string) events.Envelope { return issuedFrom(freshTok, holder, at(9, 10, 55), ip, cl) }
	req := func(when time.Time, ip string, opts ...usageOpt) events.Envelope {
		return use(when, ip, append([]usageOpt{token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "77")}, opts...)...)
	}
	tests := []struct {
		name   string
		tail   []events.Envelope
		want   []string
		levels map[string]string
		check  func(t *testing.T, got []events.AnomalyDetected)
	}{
		{name: "fresh token in context", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), holderNet)}},
		{name: "fresh token, client upgrade", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), holderNet, client("orders-client/5"))}},
		{name: "fresh token, new network", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), newNet)},
			want: []string{detect.NewNetwork}, levels: map[string]string{detect.NewNetwork: detect.LevelTenant}},
		// The network of another holder of the tenant that is itself
		// still learning (seven uses in nine days): not yet one of the
		// tenant's address spaces, so foreign.
		{name: "fresh token, network of a learning holder of the tenant", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), otherNet)},
			want: []string{detect.NewNetwork}, levels: map[string]string{detect.NewNetwork: detect.LevelTenant}},
		// A new /24 inside the holder's address space (a new subnet, a
		// move): a risk factor, no alert on its own.
		{name: "fresh token, new subnet of the holder's space", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), "10.1.9.20")}},
		{name: "fresh token, new client", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), holderNet, client("curl/8"))},
			want: []string{detect.NewClient}, levels: map[string]string{detect.NewClient: detect.LevelTenant}},
		{name: "stolen: new network and client, unlike the issuance", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), newNet, client("curl/8"))},
			want: []string{detect.IssuanceMismatch, detect.NewClient, detect.NewNetwork},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				for _, a := range got {
					if a.Detector == detect.IssuanceMismatch && a.Severity != events.SeverityHigh {
						t.Errorf("issuance_mismatch severity %s", a.Severity)
					}
					if a.Risk < 0.9 || len(a.RiskFactors) != 3 {
						t.Errorf("%s: risk %v factors %v", a.Detector, a.Risk, a.RiskFactors)
					}
				}
			}},
		{name: "client unknown: the network alone speaks, one step lower", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), newNet, client(""))},
			want: []string{detect.IssuanceMismatch, detect.NewNetwork},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				for _, a := range got {
					if a.Detector == detect.IssuanceMismatch && a.Severity != events.SeverityMedium {
						t.Errorf("issuance_mismatch severity %s, want medium", a.Severity)
					}
				}
			}},
		{name: "requester's client from another network", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), newNet)},
			want: []string{detect.NewNetwork}},
		// A holder deployed a minute ago: its token, used from outside
		// every space of the tenant with another client than requested,
		// is judged by the issuance context and the tenant's spaces.
		{name: "issuance mismatch needs no learning", tail: []events.Envelope{
			issuedFrom(freshTok, "brand-new", at(9, 10, 55), "10.9.0.5", "x-client/1"),
			req(at(9, 11, 0), newNet, holderOf("brand-new"), client("curl/8"))},
			want: []string{detect.IssuanceMismatch, detect.NewNetwork}, levels: map[string]string{detect.IssuanceMismatch: detect.LevelToken}},
		// Its first token used by the workload from its own subnet with
		// its own client, requested by CI elsewhere: nothing tells it
		// from a theft yet, but nothing says theft either.
		{name: "first token of a new holder, requested by CI", tail: []events.Envelope{
			issuedFrom(freshTok, "brand-new", at(9, 10, 55), "10.1.254.21", "cordon-cli/1"),
			req(at(9, 11, 0), "10.1.40.12", holderOf("brand-new"), client("x-client/1"))}},
		{name: "new allowed action", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), holderNet, pattern("POST", "/v1/orders", "orders:write", ""))}},
		{name: "three new actions by one token", tail: []events.Envelope{fresh("10.1.2.5", ourClient),
			req(at(9, 11, 0), holderNet, pattern("POST", "/v1/orders", "orders:write", "")),
			req(at(9, 11, 5), holderNet, pattern("GET", "/v1/orders", "orders:list", "")),
			req(at(9, 11, 9), holderNet, pattern("GET", "/v1/orders/{id}/items", "orders:read", "3"))},
			want: []string{detect.NewAction},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				if len(got) != 1 || got[0].Severity != events.SeverityLow || got[0].Evidence.Details["new_actions"] != "3" {
					t.Errorf("got %+v, want one low new_action on the third", got)
				}
			}},
		{name: "new sensitive action", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 11, 0), holderNet, pattern("DELETE", "/v1/orders/{id}", "orders:delete", "5"))},
			want: []string{detect.NewAction},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				if got[0].Severity != events.SeverityMedium || got[0].Evidence.Details["sensitive"] != "true" {
					t.Errorf("severity %s details %v, want medium, sensitive", got[0].Severity, got[0].Evidence.Details)
				}
			}},
		{name: "new action denied is not an action", tail: []events.Envelope{fresh("10.1.2.5", ourClient),
			req(at(9, 11, 0), holderNet, pattern("DELETE", "/v1/orders/{id}", "orders:delete", "5"), deny(events.ReasonScopeMissing))}},
		{name: "odd hour for a fresh token", tail: []events.Envelope{fresh("10.1.2.5", ourClient), req(at(9, 3, 0), holderNet)},
			want: []string{detect.OddHours}, levels: map[string]string{detect.OddHours: detect.LevelHolder}},
		{name: "weak signals together", tail: []events.Envelope{fresh("", ""), req(at(9, 3, 0), newNet, client("curl/8"))},
			want: []string{detect.NewClient, detect.NewNetwork, detect.OddHours, detect.RiskScore},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				for _, a := range got {
					if a.Detector == detect.RiskScore && (a.Severity != events.SeverityHigh || a.Risk < 0.8 || len(a.RiskFactors) != 3 ||
						!strings.Contains(a.Evidence.Details["risk_factors"], "new_network@tenant")) {
						t.Errorf("risk_score %+v", a)
					}
				}
			}},
		{name: "volume from the first minute", tail: func() []events.Envelope {
			out := []events.Envelope{fresh("10.1.2.5", ourClient)}
			for i := 0; i < 40; i++ {
				out = append(out, req(at(9, 11, 0).Add(time.Duration(i)*time.Second), holderNet))
			}
			return out
		}(), want: []string{detect.VolumeSpike}, levels: map[string]string{detect.VolumeSpike: detect.LevelHolder}},
		{name: "burst of secret reads", tail: func() []events.Envelope {
			out := []events.Envelope{fresh("10.1.2.5", ourClient)}
			for i := 0; i < 12; i++ {
				out = append(out, req(at(9, 11, 0).Add(time.Duration(i)*time.Second), holderNet, pattern("GET", "/v1/secrets/{name}", "secrets:read", fmt.Sprint("s", i))))
			}
			return out
		}(), want: []string{detect.VolumeSpike},
			check: func(t *testing.T, got []events.AnomalyDetected) {
				if got[0].Evidence.Details["sensitive"] != "true" {
					t.Errorf("details %v", got[0].Evidence.Details)
				}
			}},
	}
	hist := fleetHistory()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := detect.New(detect.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			for _, env := range hist {
				if as := e.Observe(env); len(as) > 0 {
					t.Fatalf("history raised %v", detectorsOf(as))
				}
			}
			var got []events.AnomalyDetected
			for _, env := range tt.tail {
				got = append(got, e.Observe(env)...)
			}
			for _, a := range got {
				t.Logf("%s %s [%s] risk %.2f: %s | %s", a.Detector, a.Severity, a.Evidence.Details["level"], a.Risk, a.Evidence.Seen, a.Evidence.Baseline)
				if err := (&a).Validate(); err != nil {
					t.Errorf("%s: invalid anomaly: %v", a.Detector, err)
				}
			}
			if d := detectorsOf(got); !slices.Equal(d, tt.want) {
				t.Fatalf("detectors %v, want %v", d, tt.want)
			}
			lv := levelsOf(got)
			for d, l := range tt.levels {
				if lv[d] != l {
					t.Errorf("%s level %q, want %q", d, lv[d], l)
				}
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

// TestRolloutJoinsBaseline: a new egress of the holder reaches every token:
// the first tokens from it alert, the RolloutTokens-th joins it to the
// baseline and nothing more alerts. One stolen token never does that.
func TestRolloutJoinsBaseline(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	for _, env := range fleetHistory() {
		e.Observe(env)
	}
	var alerted []int
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("019cabd9-0000-7000-8000-0000000005%02d", i)
		if as := e.Observe(use(at(9, 11, i), "10.50.0.9", token(id), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "1"))); len(as) > 0 {
			alerted = append(alerted, i)
		}
	}
	if !slices.Equal(alerted, []int{0, 1}) {
		t.Fatalf("tokens that alerted: %v, want the first two", alerted)
	}
	// One token used again and again from elsewhere stays unknown.
	for i := 0; i < 5; i++ {
		e.Observe(use(at(9, 12, i), "198.51.100.9", token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "1")))
	}
	if as := e.Observe(use(at(9, 14, 0), "198.51.100.9", token(dayToken(100)), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "1"))); !slices.Equal(detectorsOf(as), []string{detect.NewNetwork}) {
		t.Fatalf("a network one token used is in the baseline: %v", detectorsOf(as))
	}
}

// TestTokenRefinesHolder: a long-lived learnt token of a learnt holder,
// used from a network its holder knows but it never used, raises no
// anomaly (the holder explains it) but counts half a signal in its risk.
func TestTokenRefinesHolder(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	for _, env := range concat(fleetHistory(), history()) {
		e.Observe(env)
	}
	// tok is learnt from 10.1.2.0/24; the holder also knows 10.1.3.0/24.
	for i := 0; i < 3; i++ {
		e.Observe(use(at(9, 9, i), "10.1.3.4", token(dayToken(50+i)), client(ourClient)))
	}
	as := e.Observe(use(at(9, 10, 1), "10.1.3.4"))
	if len(as) != 0 {
		t.Fatalf("a holder network raised %v", detectorsOf(as))
	}
	// Late in the evening from that network: the odd hour alerts, and the
	// token-level network deviation weighs half in its risk.
	as = e.Observe(use(at(9, 21, 30), "10.1.3.4"))
	if !slices.Equal(detectorsOf(as), []string{detect.OddHours}) {
		t.Fatalf("got %v, want odd_hours", detectorsOf(as))
	}
	var weak bool
	for _, f := range as[0].RiskFactors {
		weak = weak || f.Signal == detect.NewNetwork && f.Level == detect.LevelToken && f.Weight == 0.25
	}
	if !weak {
		t.Fatalf("risk factors %v lack the token-level network signal", as[0].RiskFactors)
	}
}

// TestForgingBurst: token-less decisions of one source network, folded
// with counts, make a burst at MinCount within the window; other sources
// and other reasons do not add up; the cooldown holds per source.
func TestForgingBurst(t *testing.T) {
	cfg := detect.DefaultConfig()
	folded := func(when time.Time, ip, reason string, n int64) events.Envelope {
		return use(when, ip, token(""), deny(reason), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", n })
	}
	tests := []struct {
		name   string
		stream []events.Envelope
		want   int
	}{
		{"below", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "bad_signature", 99)}, 0},
		{"at min_count", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "bad_signature", 60), folded(at(9, 3, 0).Add(30*time.Second), "203.0.113.2", "unknown_key", 40)}, 1},
		{"two sources", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "malformed", 60), folded(at(9, 3, 0), "198.51.100.1", "malformed", 60)}, 0},
		// A source no workload uses: the slow window counts too.
		{"outside the window", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "malformed", 60), folded(at(9, 3, 2), "203.0.113.1", "malformed", 60)}, 1},
		{"outside the slow window", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "malformed", 60), folded(at(9, 4, 1), "203.0.113.1", "malformed", 60)}, 0},
		// A workload's own network (a broken replica retrying): the fast
		// window only.
		{"workload network, outside the window", concat(officeHours(0, 1), []events.Envelope{folded(at(1, 3, 0), "10.1.2.10", "malformed", 60),
			folded(at(1, 3, 2), "10.1.2.10", "malformed", 60)}), 0},
		{"workload network, within the window", concat(officeHours(0, 1), []events.Envelope{folded(at(1, 3, 0), "10.1.2.10", "malformed", 60),
			folded(at(1, 3, 0).Add(50*time.Second), "10.1.2.10", "malformed", 60)}), 1},
		{"not a forging reason", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "missing", 1000)}, 0},
		{"cooldown per source", []events.Envelope{folded(at(9, 3, 0), "203.0.113.1", "throttled", 500), folded(at(9, 3, 5), "203.0.113.1", "throttled", 500),
			folded(at(9, 3, 5), "198.51.100.1", "throttled", 500)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, cfg, tt.stream)
			if len(got) != tt.want {
				t.Fatalf("%d anomalies %v, want %d", len(got), detectorsOf(got), tt.want)
			}
			for _, a := range got {
				if !a.IsSource() || a.TokenID != events.SourceTokenID || a.Detector != detect.ForgingBurst {
					t.Fatalf("anomaly %+v", a)
				}
				if err := (&a).Validate(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestHolderSnapshotRoundTrip: holder, tenant and source state survive a
// snapshot: a restored engine judges a fresh token of the holder like the
// original, and the source's cooldown holds.
func TestHolderSnapshotRoundTrip(t *testing.T) {
	orig, _ := detect.New(detect.DefaultConfig())
	for _, env := range fleetHistory() {
		orig.Observe(env)
	}
	orig.Observe(use(at(9, 3, 0), "203.0.113.1", token(""), deny("bad_signature"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", 500 }))
	var buf bytes.Buffer
	if err := orig.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	snap := buf.Bytes()
	restored, _ := detect.New(detect.DefaultConfig())
	if err := restored.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	so, sr := orig.Stats(), restored.Stats()
	if so.Tokens != sr.Tokens || so.Holders != sr.Holders || so.Tenants != sr.Tenants || so.Sources != sr.Sources || sr.Holders != 2 {
		t.Fatalf("restored %+v from %+v", sr, so)
	}
	tail := []events.Envelope{
		issuedFrom(freshTok, holder, at(9, 10, 55), "10.1.2.5", ourClient),
		use(at(9, 11, 0), newNet, token(freshTok), client("curl/8")),
		use(at(9, 3, 10), "203.0.113.1", token(""), deny("bad_signature"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", 500 }),
	}
	for _, env := range tail {
		a, b := orig.Observe(env), restored.Observe(env)
		if !slices.Equal(detectorsOf(a), detectorsOf(b)) || len(a) != len(b) {
			t.Fatalf("original raised %v, restored %v", detectorsOf(a), detectorsOf(b))
		}
		for i := range a {
			if a[i].Evidence.Seen != b[i].Evidence.Seen || a[i].Evidence.Baseline != b[i].Evidence.Baseline || a[i].Risk != b[i].Risk {
				t.Fatalf("evidence differs:\n%+v\n%+v", a[i].Evidence, b[i].Evidence)
			}
		}
	}
	// A version 1 snapshot (an older build) is refused as such.
	old := append([]byte("CORDONDT"), 1, 16, 6, 1, 0, 0, 0, 0, 0, 0)
	err := restored.Restore(bytes.NewReader(old))
	if !errors.Is(err, detect.ErrSnapshotVersion) || !strings.Contains(err.Error(), "older build") {
		t.Fatalf("version 1: %v", err)
	}
	if restored.Stats().Holders != 2 {
		t.Fatal("a refused snapshot changed the state")
	}
}

// TestStateBounded: a million tokens of a hundred thousand holders and as
// many source networks pass through an engine bounded far below: every
// table stays within its bound and counts what it forgot.
func TestStateBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a million events")
	}
	cfg := detect.DefaultConfig()
	cfg.MaxTokens, cfg.MaxHolders, cfg.MaxTenants, cfg.MaxSources = 20_000, 2_000, 50, 1_000
	e, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const tokens, holders = 1_000_000, 100_000
	base := at(0, 9, 0).UTC()
	u := &events.UsageDecided{Enforcer: "enf-1", Service: "orders-api", Method: "GET", Route: "/v1/orders/{id}", Scope: "orders:read",
		Decision: events.DecisionAllow, Reason: "ok", Client: "orders-client/4"}
	env := events.Envelope{Type: events.TypeUsageDecided, Source: "test", Version: events.SchemaVersion, Data: u}
	for i := 0; i < tokens; i++ {
		u.TokenID = fmt.Sprintf("019cabd9-0000-7000-8000-%012d", i)
		u.Tenant, u.Holder = fmt.Sprintf("t%d", i%200), fmt.Sprintf("h%d", i%holders)
		u.SourceIP = fmt.Sprintf("10.%d.%d.5", i>>16&0xff, i>>8&0xff)
		u.Resource = fmt.Sprint(i % 977)
		env.Time = base.Add(time.Duration(i) * time.Millisecond)
		e.ObserveUsage(env, u)
		if i%10 == 0 {
			f := *u
			f.TokenID, f.Tenant, f.Holder, f.Decision, f.Reason, f.Count = "", "", "", events.DecisionDeny, "malformed", 3
			f.SourceIP = fmt.Sprintf("172.%d.%d.1", i>>16&0xff, i>>8&0xff)
			e.ObserveUsage(env, &f)
		}
	}
	st := e.Stats()
	t.Logf("%+v", st)
	checks := []struct {
		name       string
		n, max     int
		evicted    uint64
		population uint64
	}{
		{"tokens", st.Tokens, st.MaxTokens, st.Evictions, tokens},
		{"holders", st.Holders, st.MaxHolders, st.HolderEvictions, 0},
		{"tenants", st.Tenants, st.MaxTenants, st.TenantEvictions, 0},
		{"sources", st.Sources, st.MaxSources, st.SourceEvictions, 0},
	}
	for _, c := range checks {
		if c.n != c.max || c.evicted == 0 {
			t.Errorf("%s: %d held of bound %d, %d evicted", c.name, c.n, c.max, c.evicted)
		}
		if c.population > 0 && c.evicted != c.population-uint64(c.max) {
			t.Errorf("%s: %d evicted, want %d", c.name, c.evicted, c.population-uint64(c.max))
		}
	}
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if max := int64(st.Tokens)*1500 + int64(st.Holders)*2500 + int64(st.Tenants)*1200 + int64(st.Sources)*64 + 1<<20; int64(buf.Len()) > max {
		t.Errorf("snapshot of %d bytes, bound %d", buf.Len(), max)
	}
}

// TestOversizedNamesIgnored: a usage or ledger event with a token id,
// tenant or holder far longer than any Cordon name is ignored, so it can
// neither grow the state nor make a snapshot unreadable at restart.
func TestOversizedNamesIgnored(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	long := strings.Repeat("h", 10_000)
	e.Observe(use(at(0, 10, 0), "10.1.2.3", holderOf(long)))
	e.Observe(use(at(0, 10, 0), "10.1.2.3", token(long)))
	e.Observe(issuedFrom(freshTok, long, at(0, 9, 0), "", ""))
	e.Observe(use(at(0, 10, 1), "10.1.2.3"))
	st := e.Stats()
	if st.Tokens != 1 || st.Holders != 1 || st.Ignored != 3 {
		t.Fatalf("stats %+v, want the three oversized events ignored", st)
	}
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if err := e.Restore(&buf); err != nil {
		t.Fatalf("snapshot unreadable: %v", err)
	}
}
