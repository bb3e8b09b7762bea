package detect_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

const (
	tok    = "019cabd9-0000-7000-8000-00000000000a"
	tenant = "acme"
	holder = "billing-worker"
)

var (
	paris, _ = time.LoadLocation("Europe/Paris")
	// day0 is Monday 2 March 2026, midnight in Paris.
	day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, paris)
)

// at is hh:mm on the n-th day after day0, Paris time.
func at(day, hh, mm int) time.Time {
	return time.Date(2026, 3, 2+day, hh, mm, 0, 0, paris)
}

func envelope(when time.Time, p events.Payload) events.Envelope {
	return events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: p.EventType(), Time: when.UTC(), Source: "test", Version: events.SchemaVersion, Data: p}
}

type usageOpt func(*events.UsageDecided)

func deny(reason string) usageOpt {
	return func(u *events.UsageDecided) { u.Decision, u.Reason = events.DecisionDeny, reason }
}

func route(method, r, scope string) usageOpt {
	return func(u *events.UsageDecided) { u.Method, u.Route, u.Scope = method, r, scope }
}

func token(id string) usageOpt { return func(u *events.UsageDecided) { u.TokenID = id } }

func use(when time.Time, ip string, opts ...usageOpt) events.Envelope {
	u := &events.UsageDecided{
		TokenID: tok, Tenant: tenant, Holder: holder, KeyID: "k1", Enforcer: "enf-orders", Service: "orders-api",
		SourceIP: ip, Method: "GET", Route: "/v1/orders/" + fmt.Sprint(1+rand.IntN(900_000)), Scope: "orders:read",
		Decision: events.DecisionAllow, Reason: "ok", LatencyNS: 40_000,
	}
	for _, o := range opts {
		o(u)
	}
	return envelope(when, u)
}

func issued(id, rotatedFrom string, when time.Time, exp time.Time) events.Envelope {
	return envelope(when, &events.TokenIssued{
		TokenID: id, Tenant: tenant, Holder: holder, KeyID: "k1", Actor: "test", RotatedFrom: rotatedFrom,
		Claims: events.TokenClaims{
			Scopes: []string{"orders:read"}, Audience: []string{"orders-api"}, NotBefore: when, Expiry: exp,
			Windows: []events.Window{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "08:00", End: "19:00", Zone: "Europe/Paris"}},
		},
	})
}

func revoked(id string, when time.Time) events.Envelope {
	return envelope(when, &events.TokenRevoked{TokenID: id, Tenant: tenant, Holder: holder, Kind: events.RevokeToken, Actor: "test", Reason: "rotated", Expiry: when.Add(24 * time.Hour)})
}

// officeHours is the baseline of an office workload: weekdays 09:00–18:00
// Paris, a request every 15 minutes from three addresses of 10.1.2.0/24,
// for the weekdays among days [from, to).
func officeHours(from, to int) []events.Envelope {
	var out []events.Envelope
	for d := from; d < to; d++ {
		if wd := at(d, 12, 0).Weekday(); wd == time.Saturday || wd == time.Sunday {
			continue
		}
		for m := 9 * 60; m < 18*60; m += 15 {
			out = append(out, use(at(d, m/60, m%60), fmt.Sprintf("10.1.2.%d", 10+m%3)))
		}
	}
	return out
}

// history is a token issued on day 0 (expiring on day 30) and used in
// office hours until day 9, a Wednesday: about 250 uses, baseline learnt.
func history() []events.Envelope {
	return append([]events.Envelope{issued(tok, "", at(0, 7, 0), at(30, 0, 0))}, officeHours(0, 9)...)
}

func run(t *testing.T, cfg detect.Config, stream []events.Envelope) []events.AnomalyDetected {
	t.Helper()
	e, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.AnomalyDetected
	for _, env := range stream {
		out = append(out, e.Observe(env)...)
	}
	return out
}

func detectorsOf(as []events.AnomalyDetected) []string {
	var out []string
	for _, a := range as {
		if !slices.Contains(out, a.Detector) {
			out = append(out, a.Detector)
		}
	}
	slices.Sort(out)
	return out
}

func concat(parts ...[]events.Envelope) []events.Envelope {
	var out []events.Envelope
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestDetectors(t *testing.T) {
	tests := []struct {
		name string
		// tail follows history(): day 9 is Wednesday 11 March.
		tail     func() []events.Envelope
		want     []string
		severity map[string]string
		// after: only tail[after:] may trigger (earlier events are normal).
		after int
	}{
		{
			name: "normal days stay quiet",
			tail: func() []events.Envelope { return officeHours(9, 14) },
		},
		{
			name: "a new address in a known network is not a new network",
			tail: func() []events.Envelope { return []events.Envelope{use(at(9, 11, 0), "10.1.2.250")} },
		},
		{
			name: "an occasional scope_missing is not probing",
			tail: func() []events.Envelope {
				return []events.Envelope{
					use(at(9, 11, 0), "10.1.2.10", deny(events.ReasonScopeMissing), route("DELETE", "/v1/orders/5", "orders:admin")),
					use(at(9, 11, 4), "10.1.2.10", deny(events.ReasonScopeMissing), route("DELETE", "/v1/orders/9", "orders:admin")),
				}
			},
		},
		{
			name: "stragglers right after a rotation are tolerated",
			tail: func() []events.Envelope {
				return []events.Envelope{
					revoked(tok, at(9, 10, 0)),
					use(at(9, 10, 2), "10.1.2.10", deny(events.ReasonRevoked)),
					use(at(9, 10, 3), "10.1.2.11", deny(events.ReasonRevoked)),
					use(at(9, 10, 9), "10.1.2.11", deny(events.ReasonRevoked)),
				}
			},
		},
		{
			name:     "new network",
			tail:     func() []events.Envelope { return []events.Envelope{use(at(9, 11, 0), "203.0.113.9")} },
			want:     []string{detect.NewNetwork},
			severity: map[string]string{detect.NewNetwork: events.SeverityMedium},
		},
		{
			name: "new network denied by the enforcer is more severe",
			tail: func() []events.Envelope {
				return []events.Envelope{use(at(9, 11, 0), "2001:db8::9", deny("network_not_allowed"))}
			},
			want:     []string{detect.NewNetwork},
			severity: map[string]string{detect.NewNetwork: events.SeverityHigh},
		},
		{
			name:     "odd hour at night",
			tail:     func() []events.Envelope { return []events.Envelope{use(at(9, 3, 10), "10.1.2.10")} },
			want:     []string{detect.OddHours},
			severity: map[string]string{detect.OddHours: events.SeverityLow},
		},
		{
			name: "odd day: a weekday token on a saturday",
			tail: func() []events.Envelope {
				return append(officeHours(9, 12), use(at(12, 11, 0), "10.1.2.10"))
			},
			want: []string{detect.OddHours},
		},
		{
			name: "distinct denied scopes",
			tail: func() []events.Envelope {
				var out []events.Envelope
				for i, r := range []string{"/v1/orders/export", "/v1/admin/orders", "/v1/users", "/v1/payments", "/v1/refunds", "/v1/keys"} {
					out = append(out, use(at(9, 11, 0).Add(time.Duration(i)*40*time.Second), "10.1.2.10",
						deny(events.ReasonScopeMissing), route("GET", r, "x:"+fmt.Sprint(i))))
				}
				return out
			},
			want:     []string{detect.ScopeProbing},
			severity: map[string]string{detect.ScopeProbing: events.SeverityHigh},
		},
		{
			name: "enumeration of sequential ids interleaved with normal traffic",
			tail: func() []events.Envelope {
				var out []events.Envelope
				for i := 0; i < 10; i++ {
					when := at(9, 11, 0).Add(time.Duration(i) * 20 * time.Second)
					out = append(out, use(when, "10.1.2.10", route("GET", fmt.Sprintf("/v1/orders/%d", 5000+i), "orders:read")))
					out = append(out, use(when.Add(5*time.Second), "10.1.2.11"))
				}
				return out
			},
			want: []string{detect.ScopeProbing},
		},
		{
			name: "use hours after revocation",
			tail: func() []events.Envelope {
				return []events.Envelope{revoked(tok, at(9, 10, 0)), use(at(9, 12, 0), "10.1.2.10", deny(events.ReasonRevoked))}
			},
			want:     []string{detect.UseAfterRevoke},
			severity: map[string]string{detect.UseAfterRevoke: events.SeverityHigh},
		},
		{
			name: "allowed after revocation is critical",
			tail: func() []events.Envelope {
				return []events.Envelope{revoked(tok, at(9, 10, 0)), use(at(9, 10, 5), "10.1.2.10")}
			},
			want:     []string{detect.UseAfterRevoke},
			severity: map[string]string{detect.UseAfterRevoke: events.SeverityCritical},
		},
		{
			name: "use after revocation from elsewhere, within the grace",
			tail: func() []events.Envelope {
				return []events.Envelope{revoked(tok, at(9, 10, 0)), use(at(9, 10, 2), "203.0.113.9", deny(events.ReasonRevoked))}
			},
			want: []string{detect.NewNetwork, detect.UseAfterRevoke},
		},
		{
			name: "use after expiry from the claims alone",
			tail: func() []events.Envelope {
				return []events.Envelope{
					issued("019cabd9-0000-7000-8000-0000000000e1", tok, at(9, 8, 0), at(9, 10, 0)),
					use(at(9, 9, 0), "10.1.2.10", token("019cabd9-0000-7000-8000-0000000000e1")),
					use(at(9, 13, 0), "10.1.2.10", token("019cabd9-0000-7000-8000-0000000000e1"), deny(events.ReasonExpired)),
				}
			},
			want: []string{detect.UseAfterRevoke},
		},
		{
			name: "revoked per the enforcer although the ledger said nothing",
			tail: func() []events.Envelope {
				return []events.Envelope{
					use(at(9, 11, 0), "10.1.2.10", deny(events.ReasonRevoked)),
					use(at(9, 11, 5), "10.1.2.10", deny(events.ReasonRevoked)),
					use(at(9, 11, 40), "10.1.2.10", deny(events.ReasonRevoked)),
				}
			},
			want:  []string{detect.UseAfterRevoke},
			after: 2,
		},
		{
			name: "a revoked token the ledger never showed",
			tail: func() []events.Envelope {
				return []events.Envelope{use(at(9, 11, 0), "198.51.100.7", token("0190aaaa-0000-7000-8000-000000000001"), deny(events.ReasonRevoked))}
			},
			// The token is new but its holder is learnt: the network is
			// new for the holder (and the tenant), from the first request.
			want: []string{detect.NewNetwork, detect.UseAfterRevoke},
		},
		{
			name: "a revoked token the ledger never showed, from the holder's network",
			tail: func() []events.Envelope {
				return []events.Envelope{use(at(9, 11, 0), "10.1.2.77", token("0190aaaa-0000-7000-8000-000000000001"), deny(events.ReasonRevoked))}
			},
			want: []string{detect.UseAfterRevoke},
		},
		{
			name: "volume spike",
			tail: func() []events.Envelope {
				var out []events.Envelope
				for i := 0; i < 120; i++ {
					out = append(out, use(at(9, 11, 0).Add(time.Duration(i)*400*time.Millisecond), "10.1.2.10"))
				}
				return out
			},
			want: []string{detect.VolumeSpike},
			// 120 a minute is over 4× the spike limit of this quiet token.
			severity: map[string]string{detect.VolumeSpike: events.SeverityHigh},
		},
		{
			name: "several networks at once",
			tail: func() []events.Envelope {
				var out []events.Envelope
				for i, ip := range []string{"203.0.113.9", "198.51.100.20", "192.0.2.77", "10.1.2.10", "203.0.113.10"} {
					out = append(out, use(at(9, 11, i), ip))
				}
				return out
			},
			want:     []string{detect.MultiNetwork, detect.NewNetwork},
			severity: map[string]string{detect.MultiNetwork: events.SeverityHigh},
		},
		{
			name: "a rotated successor keeps the baseline",
			tail: func() []events.Envelope {
				succ := "019cabd9-0000-7000-8000-0000000000b2"
				out := []events.Envelope{issued(succ, tok, at(9, 9, 0), at(30, 0, 0))}
				out = append(out, use(at(9, 9, 30), "10.1.2.11", token(succ)), use(at(10, 3, 0), "10.1.2.11", token(succ)))
				return append(out, use(at(10, 11, 0), "203.0.113.9", token(succ)))
			},
			want: []string{detect.NewNetwork, detect.OddHours},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tail := tt.tail()
			got := run(t, detect.DefaultConfig(), concat(history(), tail))
			if d := detectorsOf(got); !slices.Equal(d, tt.want) {
				for _, a := range got {
					t.Logf("%s %s: %s | %s", a.Detector, a.Severity, a.Evidence.Seen, a.Evidence.Baseline)
				}
				t.Fatalf("detectors %v, want %v", d, tt.want)
			}
			ids := map[string]bool{}
			for _, env := range tail[tt.after:] {
				ids[env.ID.String()] = true
			}
			for _, a := range got {
				if !ids[a.EventID] {
					t.Errorf("%s fired on event %s, which is not the pattern's", a.Detector, a.EventID)
				}
				if want, ok := tt.severity[a.Detector]; ok && a.Severity != want {
					t.Errorf("%s severity %s, want %s", a.Detector, a.Severity, want)
				}
				if err := (&a).Validate(); err != nil {
					t.Errorf("%s anomaly does not validate: %v", a.Detector, err)
				}
				if a.Evidence.Baseline == "" || len(a.Evidence.Details) == 0 {
					t.Errorf("%s anomaly without baseline or details: %+v", a.Detector, a.Evidence)
				}
				if id, err := uuid.Parse(a.AnomalyID); err != nil || id.Version() != 7 {
					t.Errorf("anomaly id %q is not a UUIDv7", a.AnomalyID)
				}
			}
		})
	}
}

func TestNoAlertWhileLearning(t *testing.T) {
	stream := concat(
		[]events.Envelope{issued(tok, "", at(0, 7, 0), at(30, 0, 0))},
		officeHours(0, 1),
		[]events.Envelope{use(at(1, 3, 0), "203.0.113.9"), use(at(1, 10, 0), "198.51.100.1"), use(at(1, 10, 1), "192.0.2.1")},
	)
	if got := run(t, detect.DefaultConfig(), stream); len(got) != 0 {
		t.Fatalf("%d anomalies during the learning period, first %s: %s", len(got), got[0].Detector, got[0].Evidence.Seen)
	}
}

func TestCooldownDeduplicates(t *testing.T) {
	var replay []events.Envelope
	for i := 0; i < 500; i++ {
		replay = append(replay, use(at(9, 2, 0).Add(time.Duration(i)*300*time.Millisecond), "203.0.113.9", route("GET", "/v1/orders/42", "orders:read")))
	}
	// Another replay after the cooldown: a new odd hour alerts again; the
	// same network for the same token is the same episode and does not.
	later := use(at(9, 4, 0), "203.0.113.9")
	got := run(t, detect.DefaultConfig(), concat(history(), replay, []events.Envelope{later}))
	count := map[string]int{}
	for _, a := range got {
		count[a.Detector]++
	}
	want := map[string]int{detect.NewNetwork: 1, detect.OddHours: 2, detect.VolumeSpike: 1}
	for d, n := range want {
		if count[d] != n {
			t.Errorf("%s: %d anomalies, want %d (all: %v)", d, count[d], n, count)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d anomalies for 501 replayed requests, want 4: %v", len(got), count)
	}
	// Another foreign network for the token is news.
	got = run(t, detect.DefaultConfig(), concat(history(), replay, []events.Envelope{later, use(at(9, 4, 1), "198.51.100.9")}))
	n := 0
	for _, a := range got {
		if a.Detector == detect.NewNetwork {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d new_network anomalies for two foreign networks two hours apart, want 2", n)
	}
}

func TestDisabledDetector(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.NewNetwork.Enabled = false
	got := run(t, cfg, concat(history(), []events.Envelope{use(at(9, 11, 0), "203.0.113.9")}))
	if len(got) != 0 {
		t.Fatalf("disabled new_network still fired: %v", detectorsOf(got))
	}
}

func TestEvictionBoundsTokens(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.MaxTokens, cfg.MaxHolders = 3, 3
	e, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The first token learns a baseline (its own and its holder's), then
	// three tokens of three other holders push both out.
	for _, env := range history() {
		e.Observe(env)
	}
	for i := 0; i < 3; i++ {
		e.Observe(use(at(9, 10, i), "10.9.9.9", token(fmt.Sprintf("019cabd9-0000-7000-8000-00000000010%d", i)),
			func(u *events.UsageDecided) { u.Holder = fmt.Sprintf("other-%d", i) }))
	}
	st := e.Stats()
	if st.Tokens != 3 || st.MaxTokens != 3 || st.Evictions != 1 || st.Holders != 3 || st.MaxHolders != 3 || st.HolderEvictions != 1 {
		t.Fatalf("stats %+v, want 3/3 tokens and holders and 1 eviction of each", st)
	}
	// Forgotten: neither the token nor its holder judges the token any
	// more; only its tenant's address spaces do (the tenant was not
	// evicted).
	if got := e.Observe(use(at(9, 11, 0), "203.0.113.9")); len(got) != 1 || got[0].Evidence.Details["judged_by"] != detect.LevelTenant {
		t.Fatalf("evicted token still had its baseline: %v", got)
	}
	if st.StateBytes <= 0 || st.StateBytes > 2048 || st.MaxNetworks <= 0 || st.HolderStateBytes <= 0 || st.HolderStateBytes > 4096 {
		t.Fatalf("state bounds %d bytes per token, %d per holder, %d networks", st.StateBytes, st.HolderStateBytes, st.MaxNetworks)
	}
}

// TestEvictedTokenOfLearntHolder: forgetting a token does not forget its
// holder: the holder's baseline judges the token again from its next use.
func TestEvictedTokenOfLearntHolder(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.MaxTokens = 3
	e, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range history() {
		e.Observe(env)
	}
	for i := 0; i < 3; i++ {
		e.Observe(use(at(9, 10, i), "10.1.2.9", token(fmt.Sprintf("019cabd9-0000-7000-8000-00000000010%d", i))))
	}
	if st := e.Stats(); st.Evictions != 1 || st.Holders != 1 {
		t.Fatalf("stats %+v, want 1 eviction and 1 holder", st)
	}
	got := e.Observe(use(at(9, 11, 0), "203.0.113.9"))
	if !slices.Equal(detectorsOf(got), []string{detect.NewNetwork}) || got[0].Evidence.Details["level"] != detect.LevelTenant {
		t.Fatalf("got %v, want new_network at the tenant level", detectorsOf(got))
	}
}

func TestAnomalyIDsAreDeterministic(t *testing.T) {
	stream := concat(history(), []events.Envelope{use(at(9, 3, 0), "203.0.113.9")})
	a, b := run(t, detect.DefaultConfig(), stream), run(t, detect.DefaultConfig(), stream)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("runs gave %d and %d anomalies", len(a), len(b))
	}
	seen := map[string]bool{}
	for i := range a {
		if a[i].AnomalyID != b[i].AnomalyID {
			t.Fatalf("replay gave anomaly id %s, first run %s", b[i].AnomalyID, a[i].AnomalyID)
		}
		if seen[a[i].AnomalyID] {
			t.Fatalf("anomaly id %s used twice", a[i].AnomalyID)
		}
		seen[a[i].AnomalyID] = true
	}
}

func TestIgnoresOtherEvents(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	got := e.Observe(envelope(at(0, 1, 0), &events.PolicyChanged{Digest: "d", Path: "p", Actor: "a"}))
	got = append(got, e.Observe(use(at(0, 1, 0), "10.0.0.1", token("")))...)
	if st := e.Stats(); len(got) != 0 || st.Tokens != 0 || st.Holders != 0 || st.Ignored != 1 || st.Sourceless != 1 || st.Sources != 0 {
		t.Fatalf("unrelated events changed state: %+v", e.Stats())
	}
}

func TestConcurrentUse(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	base := history()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i, env := range base {
				if i%4 == g {
					e.Observe(env)
				}
				if i%50 == 0 {
					_ = e.Stats()
					_ = e.Snapshot(io.Discard)
				}
			}
		}(g)
	}
	wg.Wait()
	if st := e.Stats(); st.UsageEvents != uint64(len(base)-1) || st.LedgerEvents != 1 {
		t.Fatalf("stats after concurrent use: %+v", st)
	}
}
