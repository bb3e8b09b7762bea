package detect_test

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// holderNets is the history of a holder whose tokens live a day each (none
// learns a baseline of its own: 36 uses a day, learning wants 50), used
// every 15 minutes in office hours on the weekdays of days 0 to 8 — 252
// uses over eight days, so the holder (and the tenant) is learnt — each
// use from ips(i), i counting the uses.
func holderNets(ips func(i int) string) []events.Envelope {
	var out []events.Envelope
	i := 0
	for d := 0; d < 9; d++ {
		if wd := at(d, 12, 0).Weekday(); wd == time.Saturday || wd == time.Sunday {
			continue
		}
		for m := 9 * 60; m < 18*60; m += 15 {
			out = append(out, use(at(d, m/60, m%60), ips(i), token(dayToken(d))))
			i++
		}
	}
	return out
}

// twoNets alternates between two /24s of the holder; the last use is from
// 10.1.3.0/24.
func twoNets(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("10.1.2.%d", 10+i%3)
	}
	return fmt.Sprintf("10.1.3.%d", 10+i%3)
}

// manyNets cycles through 20 /24s of the holder, 10.1.0.0/24 to
// 10.1.19.0/24: 252 uses, the last from 10.1.11.0/24.
func manyNets(i int) string { return fmt.Sprintf("10.1.%d.10", i%20) }

// knownOf returns the known networks and their level of every anomaly, and
// the detectors that raised them.
func knownOf(as []events.AnomalyDetected) (nets, levels map[string]string, has map[string]bool) {
	nets, levels, has = map[string]string{}, map[string]string{}, map[string]bool{}
	for _, a := range as {
		nets[a.Detector] = a.Evidence.Details[detect.DetailKnownNetworks]
		levels[a.Detector] = a.Evidence.Details[detect.DetailKnownNetworksLevel]
		_, has[a.Detector] = a.Evidence.Details[detect.DetailKnownNetworks]
	}
	return nets, levels, has
}

// TestKnownNetworksEvidence: every token anomaly carries the known networks
// of the baseline that judges the token (its holder's once learnt, else
// its own once learnt), for a responder that quarantines the token to
// them; a new network is not among them; with no learnt baseline, and for
// a source, the key is absent.
func TestKnownNetworksEvidence(t *testing.T) {
	unlearntHolder := detect.DefaultConfig()
	unlearntHolder.HolderLearning.MinEvents = 1_000_000
	manyWant := func() string {
		// The 16 most recently used of the 20: the last use is number
		// 251, from 10.1.11.0/24, then 10, 9, … back to 16.
		var want []string
		for k := 0; k < detect.MaxKnownNetworks; k++ {
			want = append(want, fmt.Sprintf("10.1.%d.0/24", (251-k)%20))
		}
		return strings.Join(want, ",")
	}()
	tests := []struct {
		name     string
		cfg      detect.Config
		history  []events.Envelope
		event    events.Envelope
		detector string // must be raised by the event
		nets     string // "" when the key must be absent
		level    string
	}{
		{name: "holder's two networks, token used from a third", history: holderNets(twoNets),
			event:    use(at(9, 11, 0), newNet, token(freshTok)),
			detector: detect.NewNetwork, nets: "10.1.3.0/24,10.1.2.0/24", level: detect.LevelHolder},
		// A /24 of the holder's address space used once after it was
		// learnt, the latest use of all: seen, not known.
		{name: "a network seen once is not known", history: append(holderNets(twoNets), use(at(9, 10, 0), "10.1.9.20", token(dayToken(8)))),
			event:    use(at(9, 11, 0), newNet, token(freshTok)),
			detector: detect.NewNetwork, nets: "10.1.3.0/24,10.1.2.0/24", level: detect.LevelHolder},
		// The token's history ends at the same second as the holder's
		// (day 8, 17:45), from the other network: a tie, in address order.
		{name: "holder's networks for a learnt token of it", history: append(holderNets(twoNets), history()...),
			event:    use(at(9, 11, 0), newNet),
			detector: detect.NewNetwork, nets: "10.1.2.0/24,10.1.3.0/24", level: detect.LevelHolder},
		{name: "token's own networks when its holder is not learnt", cfg: unlearntHolder, history: history(),
			event:    use(at(9, 11, 0), newNet),
			detector: detect.NewNetwork, nets: "10.1.2.0/24", level: detect.LevelToken},
		// A new holder's token, used a few times (the networks of its
		// learning are its baseline-to-be, not a learnt one): the tenant's
		// spaces judge it, and it has no known networks to keep.
		{name: "no learnt baseline: a new holder's token", history: append(holderNets(twoNets),
			use(at(9, 10, 0), "10.9.0.5", token(freshTok), holderOf("brand-new")),
			use(at(9, 10, 30), "10.9.0.6", token(freshTok), holderOf("brand-new"))),
			event:    use(at(9, 11, 0), newNet, token(freshTok), holderOf("brand-new")),
			detector: detect.NewNetwork},
		{name: "IPv6 and IPv4-mapped", history: holderNets(func(i int) string {
			if i%2 == 0 {
				return fmt.Sprintf("2001:db8:1:2::%x", 10+i%3)
			}
			return fmt.Sprintf("::ffff:10.1.3.%d", 10+i%3)
		}),
			event:    use(at(9, 11, 0), "2001:db8:ff00:5::1", token(freshTok)),
			detector: detect.NewNetwork, nets: "10.1.3.0/24,2001:db8:1:2::/64", level: detect.LevelHolder},
		{name: "at most 16, most recently used first", history: holderNets(manyNets),
			event:    use(at(9, 11, 0), newNet, token(freshTok)),
			detector: detect.NewNetwork, nets: manyWant, level: detect.LevelHolder},
		{name: "a source anomaly has none", history: holderNets(twoNets),
			event: use(at(9, 3, 0), "203.0.113.67", token(""), deny("bad_signature"), func(u *events.UsageDecided) {
				u.Tenant, u.Holder, u.Count = "", "", 5000
			}),
			detector: detect.ForgingBurst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.IPv4Prefix == 0 {
				cfg = detect.DefaultConfig()
			}
			e, err := detect.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, env := range tt.history {
				e.Observe(env)
			}
			got := e.Observe(tt.event)
			nets, levels, has := knownOf(got)
			if _, ok := nets[tt.detector]; !ok {
				t.Fatalf("raised %v, want %s among them", detectorsOf(got), tt.detector)
			}
			// Every anomaly of the event carries the same baseline.
			for d := range nets {
				if tt.nets == "" {
					if has[d] || levels[d] != "" {
						t.Errorf("%s: known networks %q (level %q), want none", d, nets[d], levels[d])
					}
					continue
				}
				if nets[d] != tt.nets || levels[d] != tt.level {
					t.Errorf("%s: known networks %q (level %q), want %q (level %q)", d, nets[d], levels[d], tt.nets, tt.level)
				}
			}
			// The networks are prefixes a quarantine accepts, and the
			// event's own network is not among them.
			if tt.nets != "" {
				src := got[0].Evidence.Details["network"]
				for _, n := range strings.Split(nets[tt.detector], ",") {
					if n == src {
						t.Errorf("the new network %s is listed as known", src)
					}
				}
				r := events.TokenRestricted{TokenID: freshTok, Tenant: tenant, Holder: holder, Step: events.StepNarrow, Actor: "test", Reason: "test",
					Until: at(9, 12, 0), Expiry: at(10, 0, 0), Networks: strings.Split(nets[tt.detector], ",")}
				if err := r.Validate(); err != nil {
					t.Errorf("a quarantine to the known networks is invalid: %v", err)
				}
			}
		})
	}
}

// TestKnownNetworksDeterministic: replaying the same input gives the same
// anomalies with the same details, whether uninterrupted or restored from
// a snapshot halfway.
func TestKnownNetworksDeterministic(t *testing.T) {
	stream := append(holderNets(manyNets), history()...)
	stream = append(stream,
		use(at(9, 11, 0), newNet, token(freshTok)),
		use(at(9, 11, 1), "198.51.100.7"),
		use(at(9, 23, 30), "10.1.2.10"),
		use(at(9, 23, 31), "2001:db8:ff00:5::1", token(dayToken(8))),
	)
	replay := func(cut int) []events.AnomalyDetected {
		e, err := detect.New(detect.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		out := observeAll(t, e, stream[:cut])
		if cut < len(stream) {
			var buf bytes.Buffer
			if err := e.Snapshot(&buf); err != nil {
				t.Fatal(err)
			}
			if e, err = detect.New(detect.DefaultConfig()); err != nil {
				t.Fatal(err)
			}
			if err := e.Restore(&buf); err != nil {
				t.Fatal(err)
			}
		}
		return append(out, observeAll(t, e, stream[cut:])...)
	}
	want := replay(len(stream))
	carrying := 0
	for _, a := range want {
		if a.Evidence.Details[detect.DetailKnownNetworks] != "" {
			carrying++
		}
	}
	if carrying < 2 {
		t.Fatalf("%d of %d anomalies carry known networks: the test would prove nothing", carrying, len(want))
	}
	for _, cut := range []int{len(stream), len(stream) / 2} {
		got := replay(cut)
		if len(got) != len(want) {
			t.Fatalf("cut at %d: %d anomalies, want %d", cut, len(got), len(want))
		}
		for i := range got {
			if got[i].AnomalyID != want[i].AnomalyID || !reflect.DeepEqual(got[i].Evidence.Details, want[i].Evidence.Details) {
				t.Errorf("cut at %d: anomaly %d\n got %s %v\nwant %s %v", cut, i, got[i].AnomalyID, got[i].Evidence.Details,
					want[i].AnomalyID, want[i].Evidence.Details)
			}
		}
	}
}
