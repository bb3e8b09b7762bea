package detect_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// These tests hold the detectors to what issue 9's evaluation asks of
// them, one behaviour at a time: slow attacks add up, weak signals are
// factors, an episode alerts once and benign evidence settles it.

// learnt returns an engine that has seen fleetHistory: the holder, its
// tenant and the tenant's other holder are learnt by day 9.
func learnt(t *testing.T) *detect.Engine {
	t.Helper()
	e, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range fleetHistory() {
		if as := e.Observe(env); len(as) > 0 {
			t.Fatalf("history raised %v", detectorsOf(as))
		}
	}
	return e
}

func observe(e *detect.Engine, envs ...events.Envelope) []events.AnomalyDetected {
	var out []events.AnomalyDetected
	for _, env := range envs {
		out = append(out, e.Observe(env)...)
	}
	return out
}

// probes are denied requests of a token that holds orders:read for
// actions it does not hold: other scopes of its service, other services.
var probes = []usageOpt{
	pattern("DELETE", "/v1/orders/{id}", "orders:delete", "17"),
	func(u *events.UsageDecided) {
		u.Service, u.Method, u.Route, u.Scope, u.Resource = "users-api", "GET", "/v1/users/{id}", "users:read", "9"
	},
	pattern("GET", "/v1/orders/export", "orders:export", ""),
	func(u *events.UsageDecided) {
		u.Service, u.Method, u.Route, u.Scope, u.Resource = "payments-api", "POST", "/v1/payments", "payments:write", ""
	},
	pattern("PUT", "/v1/orders/{id}", "orders:write", "18"),
	pattern("GET", "/v1/admin/settings", "admin:read", ""),
	pattern("POST", "/v1/orders/{id}/refund", "orders:refund", "19"),
}

func probeReason(i int) string {
	if i == 1 || i == 3 {
		return events.ReasonWrongAudience
	}
	return events.ReasonScopeMissing
}

// TestSlowProbing: distinct denied actions add up over the horizon, one
// every 160 s or one an hour, from the holder's own address and client;
// a misconfigured call repeated all day does not; a holder whose tokens
// are usually denied on several actions is judged against that.
func TestSlowProbing(t *testing.T) {
	for _, every := range []time.Duration{160 * time.Second, time.Hour} {
		t.Run("every "+every.String(), func(t *testing.T) {
			e := learnt(t)
			observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
			var got []events.AnomalyDetected
			var fifth string
			for i := 0; i < 6; i++ {
				env := use(at(9, 9, 0).Add(time.Duration(i)*every), holderNet, token(freshTok), client(ourClient), probes[i], deny(probeReason(i)))
				if i == 4 {
					fifth = env.ID.String()
				}
				got = append(got, observe(e, env)...)
			}
			if len(got) != 1 || got[0].Detector != detect.ScopeProbing || got[0].EventID != fifth ||
				got[0].Evidence.Details["pattern"] != "slow_distinct_denials" || got[0].Severity != events.SeverityHigh {
				for _, a := range got {
					t.Logf("%s: %s | %s %v", a.Detector, a.Evidence.Seen, a.Evidence.Baseline, a.Evidence.Details)
				}
				t.Fatalf("got %v, want one slow scope_probing on the fifth distinct denial", detectorsOf(got))
			}
		})
	}
	t.Run("one misconfigured call all day", func(t *testing.T) {
		e := learnt(t)
		observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
		for i := 0; i < 30; i++ {
			if as := observe(e, use(at(9, 9, 0).Add(time.Duration(i)*17*time.Minute), holderNet, token(freshTok), client(ourClient),
				pattern("DELETE", "/v1/orders/{id}", "orders:delete", fmt.Sprint(100+i)), deny(events.ReasonScopeMissing))); len(as) > 0 {
				t.Fatalf("denial %d raised %v", i, detectorsOf(as))
			}
		}
	})
	t.Run("against the holder's usual", func(t *testing.T) {
		// From its first day, each day's token of a client that checks
		// its capabilities is denied on the same six actions.
		e, _ := detect.New(detect.DefaultConfig())
		for _, env := range fleetHistory() {
			e.Observe(env)
			if u, ok := env.Data.(*events.UsageDecided); ok && u.Holder == holder && env.Time.Equal(at(int(env.Time.Sub(day0.UTC())/(24*time.Hour)), 12, 0).UTC()) {
				d := int(env.Time.Sub(day0.UTC()) / (24 * time.Hour))
				for i := 0; i < 6; i++ {
					e.Observe(use(at(d, 12, 1+i), holderNet, token(u.TokenID), client(ourClient), probes[i], deny(probeReason(i))))
				}
			}
		}
		observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
		var got []events.AnomalyDetected
		for i := 0; i < 6; i++ {
			got = append(got, observe(e, use(at(9, 9+i, 0), holderNet, token(freshTok), client(ourClient), probes[i], deny(probeReason(i))))...)
		}
		if len(got) != 0 {
			t.Fatalf("the holder's usual six denials raised %v", detectorsOf(got))
		}
		got = observe(e, use(at(9, 16, 0), holderNet, token(freshTok), client(ourClient), probes[6], deny(events.ReasonScopeMissing)))
		if !slices.Equal(detectorsOf(got), []string{detect.ScopeProbing}) {
			t.Fatalf("a seventh distinct denial raised %v, want scope_probing", detectorsOf(got))
		}
	})
}

// folded is a denial naming no token as the enforcer folds them: n
// decisions from ip in one event.
func folded(when time.Time, ip, reason string, n int64) events.Envelope {
	return use(when, ip, token(""), deny(reason), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", n })
}

// TestTokenGuessing: a scanner sending random strings a few times a
// minute from a network no workload uses is a (slow) burst; a broken
// replica of a workload retrying a truncated token as often, from the
// workload's network, is not; the fast burst holds everywhere.
func TestTokenGuessing(t *testing.T) {
	paced := func(ip string) []events.Envelope {
		var out []events.Envelope
		for i := 0; i < 150; i++ { // 300 decisions over 25 minutes
			out = append(out, folded(at(9, 11, 0).Add(time.Duration(i)*10*time.Second), ip, events.ReasonMalformed, 2))
		}
		return out
	}
	t.Run("scanner", func(t *testing.T) {
		got := observe(learnt(t), paced("198.51.100.77")...)
		if len(got) != 1 || got[0].Detector != detect.ForgingBurst || got[0].Evidence.Details["pattern"] != "slow" ||
			got[0].SourceIP != "198.51.100.77" || !got[0].IsSource() {
			t.Fatalf("got %+v, want one slow forging_burst about the source", got)
		}
		if n := got[0].Evidence.Details["count"]; n != "100" {
			t.Errorf("count %s, want the 100th decision to raise it", n)
		}
	})
	t.Run("broken replica of a workload", func(t *testing.T) {
		if got := observe(learnt(t), paced("10.1.2.11")...); len(got) != 0 {
			t.Fatalf("a workload retrying a truncated token raised %v", detectorsOf(got))
		}
	})
	t.Run("fast burst from a workload network", func(t *testing.T) {
		got := observe(learnt(t), folded(at(9, 11, 0), "10.1.2.11", events.ReasonBadSignature, 60), folded(at(9, 11, 0).Add(30*time.Second), "10.1.2.11", events.ReasonBadSignature, 60))
		if len(got) != 1 || got[0].Evidence.Details["pattern"] != "burst" {
			t.Fatalf("got %v, want one forging_burst", detectorsOf(got))
		}
	})
}

// TestNetworkMove: a learnt holder moves to a new /24 of its address
// space: a day of use from there with its client and actions raises
// nothing, however often the cooldown ends; a token re-issued from there
// settles it — the network joins the baseline, no longer a risk factor.
func TestNetworkMove(t *testing.T) {
	e := learnt(t)
	const moved = "10.1.50.14"
	// Day 9: the holder's next tokens are used from the new network (one
	// token a day, requested by CI from the old one).
	observe(e, issuedFrom(dayToken(9), holder, at(9, 7, 0), "10.1.2.5", ourClient))
	for m := 9 * 60; m < 18*60; m += 15 {
		if as := observe(e, use(at(9, m/60, m%60), moved, token(dayToken(9)), client(ourClient),
			pattern("GET", "/v1/orders/{id}", "orders:read", fmt.Sprint(m)))); len(as) > 0 {
			t.Fatalf("the moved holder raised %v at %02d:%02d", detectorsOf(as), m/60, m%60)
		}
	}
	factorsAtOddHour := func(tk string, when time.Time) []string {
		t.Helper()
		as := observe(e, use(when, moved, token(tk), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "5")))
		if !slices.Equal(detectorsOf(as), []string{detect.OddHours}) {
			t.Fatalf("an odd hour raised %v, want odd_hours", detectorsOf(as))
		}
		var fs []string
		for _, f := range as[0].RiskFactors {
			fs = append(fs, f.Signal)
		}
		return fs
	}
	// Not settled yet: the new network still weighs in the risk.
	if fs := factorsAtOddHour(dayToken(9), at(9, 22, 30)); !slices.Contains(fs, detect.NewNetwork) {
		t.Fatalf("risk factors %v lack new_network before the move settled", fs)
	}
	// A token requested from the new network settles the move.
	observe(e, issuedFrom(dayToken(10), holder, at(10, 7, 0), "10.1.50.5", ourClient))
	if fs := factorsAtOddHour(dayToken(10), at(10, 23, 30)); slices.Contains(fs, detect.NewNetwork) {
		t.Fatalf("risk factors %v still hold new_network after a token was requested from it", fs)
	}
}

// TestRolloutOfInstances: a new /24 inside the holder's space used by
// rollout_tokens instances of one token with the holder's client is a
// rollout and joins the baseline; one instance, or a foreign network
// used from several addresses, does not.
func TestRolloutOfInstances(t *testing.T) {
	oddFactors := func(e *detect.Engine, ip string) []string {
		as := observe(e, use(at(9, 23, 0), ip, token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "5")))
		var fs []string
		for _, a := range as {
			for _, f := range a.RiskFactors {
				if !slices.Contains(fs, f.Signal) {
					fs = append(fs, f.Signal)
				}
			}
		}
		return fs
	}
	for _, tt := range []struct {
		name    string
		addrs   []string
		settled bool
	}{
		{"three instances", []string{"10.1.60.10", "10.1.60.11", "10.1.60.12"}, true},
		{"one instance", []string{"10.1.60.10", "10.1.60.10", "10.1.60.10"}, false},
		{"foreign network", []string{"198.51.100.10", "198.51.100.11", "198.51.100.12"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := learnt(t)
			observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
			for i, ip := range tt.addrs {
				observe(e, use(at(9, 10, i), ip, token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", fmt.Sprint(i))))
			}
			fs := oddFactors(e, tt.addrs[0])
			if settled := !slices.Contains(fs, detect.NewNetwork); settled != tt.settled {
				t.Fatalf("factors %v at an odd hour: settled %v, want %v", fs, settled, tt.settled)
			}
		})
	}
}

// TestLeakDuringLearning: a workload deployed an hour ago (nothing learnt
// about it, its tokens requested by automation with no context) leaks
// its token; used from outside every address space of its tenant it is
// flagged on the first request, judged by the tenant. Its own first
// uses, from a new subnet of the tenant, raise nothing.
func TestLeakDuringLearning(t *testing.T) {
	e := learnt(t)
	const young, tk = "settlement-new", "019cabd9-0000-7000-8000-000000000777"
	observe(e, issuedFrom(tk, young, at(9, 10, 0), "", ""))
	for i := 0; i < 20; i++ {
		if as := observe(e, use(at(9, 10, 5).Add(time.Duration(i)*time.Minute), "10.1.70.10", holderOf(young), token(tk), client("Java/21"),
			pattern("GET", "/v1/payments/{id}", "payments:read", fmt.Sprint(i)))); len(as) > 0 {
			t.Fatalf("the young holder's own use raised %v", detectorsOf(as))
		}
	}
	got := observe(e, use(at(9, 11, 0), "136.60.124.104", holderOf(young), token(tk), client("Chrome/124"),
		pattern("GET", "/v1/payments/{id}", "payments:read", "99")))
	if !slices.Equal(detectorsOf(got), []string{detect.NewNetwork}) || got[0].Evidence.Details["judged_by"] != detect.LevelTenant ||
		got[0].Evidence.Details["address_space"] != "136.60.0.0/16" {
		t.Fatalf("got %v, want new_network judged by the tenant", got)
	}
}

// TestRiskScoreOncePerEpisode: weak signals that together reach the
// threshold raise one risk_score; the same signals recurring do not raise
// another; a signal that joins them does.
func TestRiskScoreOncePerEpisode(t *testing.T) {
	e := learnt(t)
	observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
	inSpace := "10.1.80.9" // a new subnet: a factor
	req := func(when time.Time, opts ...usageOpt) events.Envelope {
		return use(when, inSpace, append([]usageOpt{token(freshTok), client(ourClient)}, opts...)...)
	}
	// 21:00 is an odd hour; two actions the holder never did.
	got := observe(e,
		req(at(9, 21, 0), pattern("POST", "/v1/orders", "orders:write", "")),
		req(at(9, 21, 5), pattern("GET", "/v1/orders", "orders:list", "")),
	)
	risk := 0
	for _, a := range got {
		if a.Detector == detect.RiskScore {
			risk++
			if !strings.Contains(a.Evidence.Details["risk_factors"], "new_network@") || a.Risk < 0.8 {
				t.Errorf("risk_score %v %v", a.Risk, a.Evidence.Details["risk_factors"])
			}
		}
	}
	if risk != 1 {
		t.Fatalf("%d risk_score for the weak signals together, want 1 (all %v)", risk, detectorsOf(got))
	}
	// The same signals, again and again over the next hours.
	for i := 1; i < 12; i++ {
		got = observe(e, req(at(9, 21, 0).Add(time.Duration(i)*20*time.Minute), pattern("POST", "/v1/orders", "orders:write", "")))
		if slices.Contains(detectorsOf(got), detect.RiskScore) {
			t.Fatalf("risk_score raised again at step %d with nothing new", i)
		}
	}
	// A new signal joins: a third new action within the hour alerts on
	// its own (new_action), and the risk_score says the episode grew.
	got = observe(e, req(at(9, 21, 0).Add(4*time.Hour+time.Minute), pattern("GET", "/v1/orders/{id}/items", "orders:read", "3")),
		req(at(9, 21, 0).Add(4*time.Hour+2*time.Minute), pattern("PUT", "/v1/orders/{id}", "orders:write", "3")),
		req(at(9, 21, 0).Add(4*time.Hour+3*time.Minute), pattern("DELETE", "/v1/orders/{id}/items", "orders:write", "3")))
	if !slices.Contains(detectorsOf(got), detect.NewAction) {
		t.Fatalf("three new actions within the hour raised %v, want new_action", detectorsOf(got))
	}
}

// TestSweepAcrossWindowEnd: a sweep whose requests straddle the end of a
// sweep window is counted whole.
func TestSweepAcrossWindowEnd(t *testing.T) {
	e := learnt(t)
	observe(e, issuedFrom(freshTok, holder, at(9, 10, 55), "10.1.2.5", ourClient))
	read := func(when time.Time, res string) events.Envelope {
		return use(when, holderNet, token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", res))
	}
	// The window opens with the token's first read at 11:00.
	observe(e, read(at(9, 11, 0), "1"))
	var got []events.AnomalyDetected
	for i := 0; i < 24; i++ { // 11:09:00 to 11:10:55, across the window's end at 11:10
		got = append(got, observe(e, read(at(9, 11, 9).Add(time.Duration(i)*5*time.Second), fmt.Sprint(5000+i*37)))...)
	}
	if !slices.Contains(detectorsOf(got), detect.ResourceSweep) {
		t.Fatalf("24 distinct orders in two minutes across a window's end raised %v, want resource_sweep", detectorsOf(got))
	}
	// The sweep goes on for three hours at the same pace: one episode,
	// however many windows and cooldowns it spans.
	for i := 24; i < 24+12*180; i++ {
		got = append(got, observe(e, read(at(9, 11, 9).Add(time.Duration(i)*5*time.Second), fmt.Sprint(5000+i*37)))...)
	}
	n := 0
	for _, a := range got {
		if a.Detector == detect.ResourceSweep {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d resource_sweep anomalies for one three-hour sweep, want 1", n)
	}
	// It stops; the token reads one order in a while, then sweeps again
	// two hours later: a new episode.
	for i := 0; i < 6; i++ {
		observe(e, read(at(9, 15, 0).Add(time.Duration(i)*15*time.Minute), fmt.Sprint(70+i)))
	}
	got = nil
	for i := 0; i < 30; i++ {
		got = append(got, observe(e, read(at(9, 17, 0).Add(time.Duration(i)*4*time.Second), fmt.Sprint(90000+i*41)))...)
	}
	if !slices.Contains(detectorsOf(got), detect.ResourceSweep) {
		t.Fatalf("a second sweep after a pause raised %v, want resource_sweep", detectorsOf(got))
	}
}

// TestStragglerFromRecentNetwork: after a rotation, a denied retry from
// the network the token was used from lately (the workload moved) is a
// straggler; from a network it never used it is not.
func TestStragglerFromRecentNetwork(t *testing.T) {
	for _, tt := range []struct {
		ip   string
		want []string
	}{
		{"10.1.50.14", nil},
		{"198.51.100.14", []string{detect.NewNetwork, detect.UseAfterRevoke}},
	} {
		t.Run(tt.ip, func(t *testing.T) {
			e := learnt(t)
			observe(e, issuedFrom(freshTok, holder, at(9, 8, 55), "10.1.2.5", ourClient))
			for i := 0; i < 60; i++ {
				observe(e, use(at(9, 9, 0).Add(time.Duration(i)*5*time.Minute), "10.1.50.14", token(freshTok), client(ourClient),
					pattern("GET", "/v1/orders/{id}", "orders:read", fmt.Sprint(i))))
			}
			observe(e, revoked(freshTok, at(9, 14, 0)))
			got := observe(e, use(at(9, 14, 2), tt.ip, token(freshTok), client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "1"),
				deny(events.ReasonRevoked)))
			if !slices.Equal(detectorsOf(got), tt.want) {
				t.Fatalf("a denied retry from %s raised %v, want %v", tt.ip, detectorsOf(got), tt.want)
			}
		})
	}
}

// TestForeignNotHiddenByLargeTenant: a tenant whose holders use
// thousands of /24s (which fill its Bloom filter of networks) still
// knows exactly which address spaces are its own: every learnt token
// used from outside them alerts.
func TestForeignNotHiddenByLargeTenant(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	const tokens = 2400
	id := func(i int) string { return fmt.Sprintf("019cabd9-0000-7000-8000-%012d", i) }
	for d := 0; d < 4; d++ {
		for k := 0; k < 16; k++ {
			when := at(d, 9, 0).Add(time.Duration(k) * 30 * time.Minute)
			for i := 0; i < tokens; i++ {
				observe(e, use(when, fmt.Sprintf("10.%d.%d.5", i/250, i%250), token(id(i)), holderOf(fmt.Sprint("h-", i%40)), client(ourClient),
					pattern("GET", "/v1/orders/{id}", "orders:read", "1")))
			}
		}
	}
	missed := 0
	for i := 0; i < 200; i++ {
		if got := observe(e, use(at(4, 12, 0).Add(time.Duration(i)*time.Second), fmt.Sprintf("198.51.%d.77", i), token(id(i)), holderOf(fmt.Sprint("h-", i%40)),
			client(ourClient), pattern("GET", "/v1/orders/{id}", "orders:read", "1"))); !slices.Contains(detectorsOf(got), detect.NewNetwork) {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("%d of 200 tokens used from outside the tenant's spaces raised no new_network", missed)
	}
}
