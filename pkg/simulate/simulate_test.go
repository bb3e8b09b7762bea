package simulate_test

import (
	"bytes"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

var (
	defaultOnce sync.Once
	defaultDS   *simulate.Dataset
	defaultErr  error
)

// defaultDataset generates the default scenario once for all tests.
func defaultDataset(t *testing.T) *simulate.Dataset {
	t.Helper()
	defaultOnce.Do(func() { defaultDS, defaultErr = simulate.Generate(simulate.DefaultScenario()) })
	if defaultErr != nil {
		t.Fatal(defaultErr)
	}
	return defaultDS
}

// smallScenario is the default world scaled down, as other packages'
// tests size it.
func smallScenario() simulate.Scenario {
	sc := simulate.DefaultScenario()
	sc.Days, sc.Holders, sc.UsageEvents, sc.AttacksPerKind = 7, 15, 20_000, 1
	sc.AttackAfter = 4 * 24 * time.Hour
	return sc
}

// index is a dataset looked at from several sides.
type index struct {
	ds      *simulate.Dataset
	byID    map[string]events.Envelope
	issued  map[string]*events.TokenIssued
	usage   map[string][]*events.UsageDecided // by token id
	times   map[*events.UsageDecided]time.Time
	ids     map[*events.UsageDecided]string
	holders map[string]*holderSeen // by tenant/holder
	routes  map[string]string      // "METHOD pattern" → scope
}

// holderSeen is what a holder did before a time, from its benign events.
type holderSeen struct {
	first   time.Time
	addrs   map[string]time.Time // first benign use of each address
	clients map[string]time.Time
	nets    map[netip.Prefix]time.Time
	agent   string
}

func network(ip string) netip.Prefix {
	a := netip.MustParseAddr(ip)
	if a.Is4() {
		p, _ := a.Prefix(24)
		return p
	}
	p, _ := a.Prefix(64)
	return p
}

func newIndex(ds *simulate.Dataset) *index {
	x := &index{ds: ds, byID: map[string]events.Envelope{}, issued: map[string]*events.TokenIssued{}, usage: map[string][]*events.UsageDecided{},
		times: map[*events.UsageDecided]time.Time{}, ids: map[*events.UsageDecided]string{}, holders: map[string]*holderSeen{}, routes: map[string]string{}}
	attackEvent := map[string]bool{}
	for _, a := range ds.Attacks {
		for _, id := range a.EventIDs {
			attackEvent[id] = true
		}
	}
	for _, s := range ds.Scenario.Services {
		for _, r := range s.Routes {
			x.routes[r.Route] = r.Scope
		}
	}
	for _, b := range ds.Scenario.Benign {
		if b.Route != "" {
			x.routes[b.Route] = b.Scope
		}
	}
	for _, env := range ds.Events {
		id := env.ID.String()
		x.byID[id] = env
		switch p := env.Data.(type) {
		case *events.TokenIssued:
			x.issued[p.TokenID] = p
		case *events.UsageDecided:
			x.usage[p.TokenID] = append(x.usage[p.TokenID], p)
			x.times[p], x.ids[p] = env.Time, id
			if p.TokenID == "" || attackEvent[id] {
				continue
			}
			k := p.Tenant + "/" + p.Holder
			h := x.holders[k]
			if h == nil {
				h = &holderSeen{first: env.Time, addrs: map[string]time.Time{}, clients: map[string]time.Time{}, nets: map[netip.Prefix]time.Time{}, agent: p.UserAgent}
				x.holders[k] = h
			}
			if _, ok := h.addrs[p.SourceIP]; !ok {
				h.addrs[p.SourceIP] = env.Time
			}
			if _, ok := h.clients[p.Client]; !ok {
				h.clients[p.Client] = env.Time
			}
			if _, ok := h.nets[network(p.SourceIP)]; !ok {
				h.nets[network(p.SourceIP)] = env.Time
			}
		}
	}
	return x
}

// attackUsage returns the usage events of attack a, in time order.
func (x *index) attackUsage(a simulate.Attack) []*events.UsageDecided {
	var out []*events.UsageDecided
	for _, id := range a.EventIDs {
		if u, ok := x.byID[id].Data.(*events.UsageDecided); ok {
			out = append(out, u)
		}
	}
	return out
}

var paramRE = regexp.MustCompile(`\{[a-z]+(\.\.\.)?\}`)

// TestDatasetShape checks the default dataset is what the issuer and real
// enforcers publish: valid events in time order, route patterns with the
// resource apart, normalised clients, folded token-less denials, issuance
// context on token.issued, the enforcer's reasons only.
func TestDatasetShape(t *testing.T) {
	ds := defaultDataset(t)
	x := newIndex(ds)
	seen := map[uuid.UUID]bool{}
	reasons := map[string]int{}
	folded := map[[4]string]bool{}
	var prev time.Time
	var withResource, requested, selfOrCI int
	for i, env := range ds.Events {
		if err := env.Validate(); err != nil {
			t.Fatalf("event %d does not validate: %v", i, err)
		}
		if env.Time.Before(prev) {
			t.Fatalf("event %d at %s before its predecessor at %s", i, env.Time, prev)
		}
		prev = env.Time
		if seen[env.ID] {
			t.Fatalf("event id %s repeated", env.ID)
		}
		seen[env.ID] = true
		switch p := env.Data.(type) {
		case *events.TokenIssued:
			if p.RotatedFrom != "" && x.issued[p.RotatedFrom] == nil {
				t.Fatalf("token %s rotated from unknown %s", p.TokenID, p.RotatedFrom)
			}
			if p.Requested != nil {
				requested++
				if _, err := netip.ParseAddr(p.Requested.SourceIP); err != nil || p.Requested.Client == "" {
					t.Errorf("token %s requested from %+v", p.TokenID, p.Requested)
				}
			}
			if !strings.HasPrefix(p.Actor, "automation@") && p.Actor != "issuer/rotation" {
				selfOrCI++
			}
		case *events.UsageDecided:
			reasons[p.Reason]++
			scope, ok := x.routes[p.Method+" "+p.Route]
			if !ok || scope != p.Scope {
				t.Fatalf("usage %s: route %s %s (scope %s) is not a declared pattern: the enforcer reports patterns", env.ID, p.Method, p.Route, p.Scope)
			}
			if n := len(paramRE.FindAllString(p.Route, -1)); (n == 0) != (p.Resource == "") || (n > 0 && !strings.Contains(p.Route, "...") && strings.Count(p.Resource, "/") != n-1) {
				t.Fatalf("usage %s: resource %q does not fill route %s", env.ID, p.Resource, p.Route)
			}
			if p.Resource != "" {
				withResource++
				if c := simulate.Concrete(p.Route, p.Resource); strings.ContainsAny(c, "{}") {
					t.Fatalf("concrete path %q of %s %q", c, p.Route, p.Resource)
				}
			}
			if p.UserAgent == "" || p.Client == "" || len(p.Client) > events.MaxClientLen || strings.ContainsAny(p.Client, " ;()") {
				t.Fatalf("usage %s: client %q of user agent %q is not normalised", env.ID, p.Client, p.UserAgent)
			}
			if p.TokenID == "" {
				if p.Decision != events.DecisionDeny || p.Tenant != "" || p.Holder != "" {
					t.Fatalf("token-less usage %s names a token context: %+v", env.ID, p)
				}
				k := [4]string{p.Enforcer, p.SourceIP, p.Reason + "/" + p.KeyID, env.Time.Truncate(time.Second).String()}
				if folded[k] {
					t.Fatalf("token-less denials of %s (%s) not folded into one event per second: %+v", p.SourceIP, p.Reason, p)
				}
				folded[k] = true
			} else if p.Count != 0 {
				t.Fatalf("usage %s of token %s has count %d: only token-less denials are folded", env.ID, p.TokenID, p.Count)
			}
		}
	}
	for r := range reasons {
		if !slices.Contains(simulate.Reasons(), r) {
			t.Errorf("reason %q is not one the enforcer reports", r)
		}
	}
	for _, r := range []string{events.ReasonOK, events.ReasonScopeMissing, events.ReasonRevoked, events.ReasonExpired,
		events.ReasonMissing, events.ReasonMalformed, events.ReasonBadSignature, events.ReasonThrottled, events.ReasonSourceNetwork} {
		if reasons[r] == 0 {
			t.Errorf("no %s decision at all", r)
		}
	}
	if withResource < ds.UsageEvents/2 {
		t.Errorf("%d of %d usage events name a resource", withResource, ds.UsageEvents)
	}
	if requested == 0 || requested == selfOrCI+1 {
		t.Errorf("%d token.issued events record where they were requested (of %d issued by a workload or CI)", requested, selfOrCI)
	}
	if ds.Tokens <= ds.Holders*3 {
		t.Errorf("%d tokens for %d holders: rotation and re-issue are missing", ds.Tokens, ds.Holders)
	}
	t.Logf("%d events (%d usage, %d ledger, %d of attacks), %d holders, %d tokens, %d attacks, %d benign token-days %v; reasons %v",
		len(ds.Events), ds.UsageEvents, ds.LedgerEvents, ds.AttackEvents, ds.Holders, ds.Tokens, len(ds.Attacks), ds.BenignTokenDays, ds.TokenDays, reasons)
}

// TestRhythms: office workloads work in their zone's daytime on weekdays,
// and traffic has a weekly rhythm.
func TestRhythms(t *testing.T) {
	ds := defaultDataset(t)
	x := newIndex(ds)
	var weekday, weekend, officeNight, officeDay int
	for tok, us := range x.usage {
		tk := x.issued[tok]
		for _, u := range us {
			at := x.times[u]
			if wd := at.Weekday(); wd == time.Saturday || wd == time.Sunday {
				weekend++
			} else {
				weekday++
			}
			if tk == nil || len(tk.Claims.Windows) != 1 || len(tk.Claims.Windows[0].Days) != 5 || u.Decision != events.DecisionAllow {
				continue
			}
			loc, _ := time.LoadLocation(tk.Claims.Windows[0].Zone)
			switch h := at.In(loc).Hour(); {
			case h < 5:
				officeNight++
			case h >= 10 && h < 16:
				officeDay++
			}
		}
	}
	if officeDay == 0 || officeNight > 0 {
		t.Errorf("office workloads: %d allowed requests in local daytime, %d at night", officeDay, officeNight)
	}
	days := ds.Scenario.Days
	if perWeekend, perWeekday := float64(weekend)/float64(days*2/7), float64(weekday)/float64(days*5/7); perWeekend > 0.9*perWeekday {
		t.Errorf("%.0f requests a weekend day vs %.0f a weekday: no weekly rhythm", perWeekend, perWeekday)
	}
}

// TestAttackVariants checks each attack variant of the default scenario
// has the property its description promises — in the events, as a
// detector would see them.
func TestAttackVariants(t *testing.T) {
	ds := defaultDataset(t)
	x := newIndex(ds)
	byVariant := map[string][]simulate.Attack{}
	for _, a := range ds.Attacks {
		byVariant[a.Variant] = append(byVariant[a.Variant], a)
		if len(a.EventIDs) == 0 || a.End.Before(a.Start) || a.DetectBy.Before(a.Start) {
			t.Errorf("attack %s: %d events, %s–%s, detect by %s", a.ID, len(a.EventIDs), a.Start, a.End, a.DetectBy)
		}
		for _, id := range a.EventIDs {
			switch p := x.byID[id].Data.(type) {
			case *events.UsageDecided:
				if len(a.TokenIDs) > 0 && !slices.Contains(a.TokenIDs, p.TokenID) || len(a.TokenIDs) == 0 && (p.TokenID != "" || !slices.Contains(a.Sources, p.SourceIP)) {
					t.Fatalf("attack %s lists event %s of token %q from %s", a.ID, id, p.TokenID, p.SourceIP)
				}
			case *events.TokenIssued:
				if !slices.Contains(a.TokenIDs, p.TokenID) {
					t.Fatalf("attack %s lists the issuance of %s", a.ID, p.TokenID)
				}
			default:
				t.Fatalf("attack %s lists event %s of type %s", a.ID, id, x.byID[id].Type)
			}
		}
	}
	for _, spec := range ds.Scenario.Attacks {
		if n := len(byVariant[spec.Variant]); n != spec.Count {
			t.Errorf("%d attacks of variant %s, want %d", n, spec.Variant, spec.Count)
		}
	}
	sc := ds.Scenario
	learntFrom := sc.Start.Add(sc.AttackAfter)
	// before returns what the attacked holder did before the attack.
	before := func(a simulate.Attack) *holderSeen { return x.holders[a.Tenant+"/"+a.Holder] }
	newAddr := func(h *holderSeen, ip string, at time.Time) bool {
		t, ok := h.nets[network(ip)]
		return !ok || !t.Before(at)
	}
	usedClient := func(h *holderSeen, c string, at time.Time) bool {
		t, ok := h.clients[c]
		return ok && t.Before(at)
	}
	checks := map[string]func(a simulate.Attack, us []*events.UsageDecided) string{
		"leaked_replay": func(a simulate.Attack, us []*events.UsageDecided) string {
			if len(us) < 200 || !newAddr(before(a), us[0].SourceIP, a.Start) {
				return "want hundreds of requests from a network the holder never used"
			}
			return ""
		},
		"attacker_on_holder_address": func(a simulate.Attack, us []*events.UsageDecided) string {
			h := before(a)
			first, ok := h.addrs[us[0].SourceIP]
			if !ok || !first.Before(a.Start) || usedClient(h, us[0].Client, a.Start) {
				return "want an address the holder already used, with a client it never used"
			}
			return ""
		},
		"slow_probing_160s": func(a simulate.Attack, us []*events.UsageDecided) string {
			for i := 1; i < len(us); i++ {
				if gap := x.times[us[i]].Sub(x.times[us[i-1]]); gap < 150*time.Second {
					return "requests " + gap.String() + " apart, want about 160s"
				}
			}
			return ""
		},
		"slow_probing_hourly": func(a simulate.Attack, us []*events.UsageDecided) string {
			for i := 1; i < len(us); i++ {
				if gap := x.times[us[i]].Sub(x.times[us[i-1]]); gap < 50*time.Minute {
					return "requests " + gap.String() + " apart, want about an hour"
				}
			}
			return ""
		},
		"leak_during_learning": func(a simulate.Attack, us []*events.UsageDecided) string {
			h := before(a)
			if h == nil || a.Start.Sub(h.first) > 12*time.Hour || !h.first.After(sc.Start.Add(24*time.Hour)) {
				return "want a holder deployed during the scenario, attacked within hours of its first use"
			}
			return ""
		},
		"stolen_token_other_client": func(a simulate.Attack, us []*events.UsageDecided) string {
			h := before(a)
			if newAddr(h, us[0].SourceIP, a.Start) || usedClient(h, us[0].Client, a.Start) {
				return "want the holder's own network with a client it never used"
			}
			return ""
		},
		"one_request_tokens": func(a simulate.Attack, us []*events.UsageDecided) string {
			if len(a.TokenIDs) < 3 || len(us) != len(a.TokenIDs) {
				return "want several tokens, one request each"
			}
			for _, tok := range a.TokenIDs {
				iss := x.issued[tok]
				if iss == nil || iss.Requested == nil || iss.Requested.SourceIP != a.Sources[0] || len(x.usage[tok]) != 1 {
					return "want each token requested from the attacker's address and used once"
				}
			}
			for _, u := range us {
				if !strings.Contains(u.Route, "export") && !strings.Contains(u.Route, "void") && !strings.Contains(u.Route, "refund") &&
					!strings.Contains(u.Route, "admin") && !strings.Contains(u.Route, "credentials") && !strings.Contains(u.Route, "secrets") && u.Method != "DELETE" {
					return "want a sensitive action, got " + u.Method + " " + u.Route
				}
			}
			return ""
		},
		"resource_sweep_allowed": func(a simulate.Attack, us []*events.UsageDecided) string {
			res := map[string]bool{}
			for _, u := range us {
				if u.Decision != events.DecisionAllow || u.Route != us[0].Route {
					return "want one route, every request allowed"
				}
				res[u.Resource] = true
			}
			if len(res) < 40 || len(res) != len(us) {
				return "want dozens of distinct resources"
			}
			return ""
		},
		"resource_sweep_denied": func(a simulate.Attack, us []*events.UsageDecided) string {
			res := map[string]bool{}
			for _, u := range us {
				if u.Decision != events.DecisionDeny || u.Route != us[0].Route || u.Resource == "" {
					return "want one route with a resource, every request denied"
				}
				res[u.Resource] = true
			}
			if len(res) < 20 || a.End.Sub(a.Start) > 10*time.Second {
				return "want twenty or more distinct resources within seconds"
			}
			return ""
		},
		"exfiltration_first_use": func(a simulate.Attack, us []*events.UsageDecided) string {
			h := before(a)
			if len(us) != 1 || !newAddr(h, us[0].SourceIP, a.Start) || usedClient(h, us[0].Client, a.Start) {
				return "want one request from a new network with a new client"
			}
			return ""
		},
		"token_forging": func(a simulate.Attack, us []*events.UsageDecided) string {
			var n int64
			for _, u := range us {
				if u.TokenID != "" || (u.Reason != events.ReasonBadSignature && u.Reason != events.ReasonThrottled) {
					return "want token-less bad_signature (then throttled) denials"
				}
				n += u.Requests()
			}
			if n <= int64(len(us)) {
				return "want folded events with counts"
			}
			return ""
		},
		"use_after_revoke": func(a simulate.Attack, us []*events.UsageDecided) string {
			for _, u := range us {
				if u.Reason != events.ReasonRevoked && u.Reason != events.ReasonExpired {
					return "want every request denied revoked or expired, got " + u.Reason
				}
			}
			return ""
		},
		"old_token_from_backup": func(a simulate.Attack, us []*events.UsageDecided) string {
			if x.issued[a.TokenIDs[0]] != nil {
				return "want a token the ledger never showed"
			}
			return ""
		},
	}
	for variant, check := range checks {
		if len(byVariant[variant]) == 0 {
			t.Errorf("no attack of variant %s in the default scenario", variant)
		}
		for _, a := range byVariant[variant] {
			us := x.attackUsage(a)
			if len(us) == 0 {
				t.Errorf("%s %s: no usage event", variant, a.ID)
				continue
			}
			if a.Holder != "" && variant != "leak_during_learning" && a.Start.Before(learntFrom) {
				t.Errorf("%s %s starts %s, before holders are %s into their work", variant, a.ID, a.Start, sc.AttackAfter)
			}
			if msg := check(a, us); msg != "" {
				t.Errorf("%s %s (%s): %s", variant, a.ID, a.Description, msg)
			}
		}
	}
}

// TestBenignVariants checks the drift the default scenario promises is in
// the events.
func TestBenignVariants(t *testing.T) {
	ds := defaultDataset(t)
	x := newIndex(ds)
	exps := map[string][]simulate.Exposure{}
	for _, e := range ds.Exposures {
		exps[e.Variant] = append(exps[e.Variant], e)
	}
	for _, b := range ds.Scenario.Benign {
		if len(exps[b.Variant]) == 0 || ds.TokenDays[b.Variant] == 0 {
			t.Errorf("benign %s: %d exposures, %d token-days", b.Variant, len(exps[b.Variant]), ds.TokenDays[b.Variant])
		}
	}
	if ds.TokenDays[simulate.Steady] == 0 || ds.BenignTokenDays < ds.TokenDays[simulate.Steady] {
		t.Errorf("token-days %v of %d", ds.TokenDays, ds.BenignTokenDays)
	}
	// Holders that move use a network they never used, with tokens
	// requested there.
	for _, e := range exps["network_move"] {
		h := x.holders[e.Tenant+"/"+e.Holder]
		moved := false
		for n, first := range h.nets {
			if !first.Before(e.From) {
				moved = true
				_ = n
			}
		}
		if !moved {
			t.Errorf("%s: no new network after %s", e.Description, e.From)
		}
	}
	// A backfill walks many resources at many times the usual volume.
	for _, e := range exps["backfill"] {
		var during, dayBefore int
		res := map[string]bool{}
		for tok, us := range x.usage {
			if tk := x.issued[tok]; tk == nil || tk.Holder != e.Holder || tk.Tenant != e.Tenant {
				continue
			}
			for _, u := range us {
				at := x.times[u]
				switch {
				case !at.Before(e.From) && at.Before(e.From.Add(2*time.Hour)):
					during++
					res[u.Resource] = true
				case !at.Before(e.From.Add(-24*time.Hour)) && at.Before(e.From.Add(-22*time.Hour)):
					dayBefore++
				}
			}
		}
		if during < 5*max(dayBefore, 1) || len(res) < during/2 {
			t.Errorf("%s: %d requests over %d resources in its first two hours, %d the day before", e.Description, during, len(res), dayBefore)
		}
	}
	// The new route is called only after its deployment.
	var route string
	for _, b := range ds.Scenario.Benign {
		if b.Kind == simulate.DriftNewRoute {
			_, route, _ = strings.Cut(b.Route, " ")
		}
	}
	calls := 0
	for _, us := range x.usage {
		for _, u := range us {
			if u.Route == route {
				calls++
				if e := exps["new_route"]; !slices.ContainsFunc(e, func(e simulate.Exposure) bool { return e.Holder == u.Holder && !x.times[u].Before(e.From) }) {
					t.Fatalf("%s called by %s at %s, outside its deployment", route, u.Holder, x.times[u])
				}
			}
		}
	}
	if calls == 0 {
		t.Errorf("nobody calls the new route %s", route)
	}
	// Both sides of the Atlantic change their clocks.
	zones := map[string]bool{}
	for _, e := range exps["daylight_saving"] {
		zones[e.From.Format("Jan 2")] = true
	}
	if !zones["Oct 25"] || !zones["Nov 1"] {
		t.Errorf("daylight-saving changes on %v, want Oct 25 and Nov 1", zones)
	}
	// A broken client's retries are token-less malformed denials from the
	// holder's own address.
	for _, e := range exps["broken_client"] {
		n := 0
		for _, u := range x.usage[""] {
			if u.SourceIP == e.Sources[0] && u.Reason == events.ReasonMalformed {
				n++
			}
		}
		if n < 20 {
			t.Errorf("%s: %d malformed denials from %s", e.Description, n, e.Sources[0])
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := simulate.Generate(smallScenario())
	other := smallScenario()
	other.Seed = 99
	c, err := simulate.Generate(other)
	if err != nil {
		t.Fatal(err)
	}
	var ja, jb, jc, la, lb bytes.Buffer
	for _, w := range []struct {
		ds  *simulate.Dataset
		buf *bytes.Buffer
	}{{a, &ja}, {b, &jb}, {c, &jc}} {
		if err := w.ds.WriteJSONL(w.buf); err != nil {
			t.Fatal(err)
		}
	}
	a.WriteLabels(&la)
	b.WriteLabels(&lb)
	if !bytes.Equal(ja.Bytes(), jb.Bytes()) || !bytes.Equal(la.Bytes(), lb.Bytes()) {
		t.Fatal("the same scenario gave different events or labels")
	}
	if bytes.Equal(ja.Bytes(), jc.Bytes()) {
		t.Fatal("another seed gave the same events")
	}
}

// TestScaledScenario: Holders, UsageEvents and AttacksPerKind size the
// world the way other packages' tests use them.
func TestScaledScenario(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	normal := ds.UsageEvents - ds.AttackEvents
	if normal < 15_000 || normal > 27_000 {
		t.Errorf("%d normal usage events, want about 20000", normal)
	}
	if ds.Holders < 15 || ds.Holders > 30 || len(ds.Attacks) != len(ds.Scenario.Attacks) {
		t.Errorf("%d holders, %d attacks of %d variants", ds.Holders, len(ds.Attacks), len(ds.Scenario.Attacks))
	}
}

func TestJSONLAndLabelsRoundTrip(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	var events1, labels bytes.Buffer
	if err := ds.WriteJSONL(&events1); err != nil {
		t.Fatal(err)
	}
	if err := ds.WriteLabels(&labels); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(events1.Bytes(), []byte("\n")); n != len(ds.Events) {
		t.Fatalf("%d lines for %d events", n, len(ds.Events))
	}
	back, err := simulate.ReadJSONL(bytes.NewReader(events1.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var events2 bytes.Buffer
	if err := simulate.WriteJSONL(&events2, back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(events1.Bytes(), events2.Bytes()) {
		t.Fatal("events changed through JSONL")
	}
	l, err := simulate.ReadLabels(&labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Attacks) != len(ds.Attacks) || l.Scenario.Seed != ds.Scenario.Seed || !slices.Equal(l.Attacks[0].EventIDs, ds.Attacks[0].EventIDs) ||
		len(l.Exposures) != len(ds.Exposures) || l.TokenDays[simulate.Steady] != ds.TokenDays[simulate.Steady] || l.BenignTokenDays != ds.BenignTokenDays {
		t.Fatal("labels changed through JSON")
	}
	bad := strings.NewReader(strings.SplitN(events1.String(), "\n", 2)[0] + "\n{\"id\": 1}\n")
	if _, err := simulate.ReadJSONL(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v, want an error naming line 2", err)
	}
}

func TestConcrete(t *testing.T) {
	for _, c := range []struct{ pattern, resource, want string }{
		{"/v1/invoices/{id}", "42", "/v1/invoices/42"},
		{"/v1/invoices", "", "/v1/invoices"},
		{"/v1/accounts/{account}/statements/{statement}", "7/9", "/v1/accounts/7/statements/9"},
		{"/v1/media/{path...}", "assets/2024/01/obj-1.jpg", "/v1/media/assets/2024/01/obj-1.jpg"},
	} {
		if got := simulate.Concrete(c.pattern, c.resource); got != c.want {
			t.Errorf("Concrete(%q, %q) = %q, want %q", c.pattern, c.resource, got, c.want)
		}
	}
}
