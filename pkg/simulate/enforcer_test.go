package simulate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/token"
)

// TestSimulatedEnforcerSettings: the scenario models enforcers as
// pkg/enforce configures them by default, and reports the reasons it does.
func TestSimulatedEnforcerSettings(t *testing.T) {
	e := simulate.DefaultScenario().Enforcer
	if e.AggregateInterval.D() != enforce.DefaultAggregateInterval || e.ThrottleBurst != enforce.DefaultThrottleBurst ||
		e.ThrottleWindow.D() != enforce.DefaultThrottleWindow || e.ThrottleCooldown.D() != enforce.DefaultThrottleCooldown {
		t.Errorf("the default scenario's enforcer %+v differs from pkg/enforce's defaults", e)
	}
	real := map[string]bool{string(enforce.ReasonOK): true}
	for _, r := range enforce.Reasons() {
		real[string(r)] = true
	}
	for _, r := range simulate.Reasons() {
		if !real[r] {
			t.Errorf("the simulator reports %q, which pkg/enforce does not", r)
		}
	}
}

// realWorld is a JetStream with the scenario's signing key, and one real
// enforcer per service of the scenario, watching keys and denylist.
type realWorld struct {
	env     *natstest.Env
	signer  token.Signer
	byName  map[string]*enforce.Enforcer // by enforcer id
	deny    jetstream.KeyValue
	tokens  map[string]string // token id → token string
	revoked map[string]bool
}

func startRealWorld(t *testing.T, sc simulate.Scenario, routes map[string][]enforce.Route, usage bool) *realWorld {
	t.Helper()
	w := &realWorld{env: natstest.Run(t), byName: map[string]*enforce.Enforcer{}, tokens: map[string]string{}, revoked: map[string]bool{}}
	var err error
	if w.signer, err = token.GenerateSigner(time.Now()); err != nil {
		t.Fatal(err)
	}
	w.env.PublishKey(t, w.signer)
	if w.deny, err = w.env.JS.KeyValue(context.Background(), events.BucketDenylist); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for id, rs := range routes {
		svc := strings.TrimPrefix(id, "edge-") + "-api"
		e, err := enforce.New(enforce.Options{ID: id, Service: svc, Environment: sc.Enforcer.Environment, TrustAnchors: w.env.Anchors(),
			Routes:         &enforce.Routes{Service: svc, Environment: sc.Enforcer.Environment, Routes: rs},
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			DisableUsage:   !usage,
			// One message per decision, in decision order: the comparison
			// below is event by event (batches group by holder).
			UsageFormat: enforce.UsageFormatEvent})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx, w.env.JS); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		w.byName[id] = e
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		for id, e := range w.byName {
			if e.Stats().Keys == 0 {
				return fmt.Errorf("enforcer %s has no key yet", id)
			}
		}
		return nil
	})
	return w
}

// routesOf returns the routes of each enforcer of a dataset's world.
func routesOf(ds *simulate.Dataset) map[string][]enforce.Route {
	out := map[string][]enforce.Route{}
	seen := map[string]bool{}
	add := func(enforcer, route, scope string) {
		if seen[enforcer+route] {
			return
		}
		seen[enforcer+route] = true
		m, p, _ := strings.Cut(route, " ")
		out[enforcer] = append(out[enforcer], enforce.Route{Method: m, Path: p, Scope: scope})
	}
	for _, env := range ds.Events {
		if u, ok := env.Data.(*events.UsageDecided); ok {
			add(u.Enforcer, u.Method+" "+u.Route, u.Scope)
		}
	}
	return out
}

// mint makes the real token of a token.issued event: same id, same claims.
func (w *realWorld) mint(t *testing.T, p *events.TokenIssued) string {
	t.Helper()
	c := token.Claims{ID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, Scopes: p.Claims.Scopes, Audience: p.Claims.Audience,
		Environment: p.Claims.Environment, IssuedAt: p.Claims.NotBefore.Unix(), NotBefore: p.Claims.NotBefore.Unix(), Expiry: p.Claims.Expiry.Unix()}
	for _, n := range p.Claims.Networks {
		c.Networks = append(c.Networks, netip.MustParsePrefix(n))
	}
	for _, win := range p.Claims.Windows {
		c.Windows = append(c.Windows, token.Window{Days: win.Days, Start: win.Start, End: win.End, Zone: win.Zone})
	}
	s, err := w.signer.Mint(c)
	if err != nil {
		t.Fatalf("mint %s: %v", p.TokenID, err)
	}
	return s
}

// revoke puts a token on the denylist and waits until every enforcer has
// it.
func (w *realWorld) revoke(t *testing.T, p *events.TokenRevoked) {
	t.Helper()
	rec, _ := json.Marshal(events.DenyRecord{Kind: events.RevokeToken, TokenID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder,
		Reason: p.Reason, Actor: p.Actor, RevokedAt: time.Now(), Expiry: p.Expiry})
	rev, err := w.deny.Put(context.Background(), events.DenyKeyToken(p.TokenID), rec)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		for id, e := range w.byName {
			if e.DenylistRevision() < rev {
				return fmt.Errorf("enforcer %s at denylist revision %d, want %d", id, e.DenylistRevision(), rev)
			}
		}
		return nil
	})
	w.revoked[p.TokenID] = true
}

// TestDecisionsMatchRealEnforcer replays every request of a simulated
// world with a token on real enforcers (pkg/enforce Check, at the
// request's event time, with the same claims, and the denylist fed the
// ledger's revocations in order): each decision and reason the simulator
// wrote is the one the real enforcer makes.
func TestDecisionsMatchRealEnforcer(t *testing.T) {
	if testing.Short() {
		t.Skip("replays a week of requests on real enforcers")
	}
	sc := smallScenario()
	sc.Days, sc.UsageEvents = 6, 12_000
	ds, err := simulate.Generate(sc)
	if err != nil {
		t.Fatal(err)
	}
	w := startRealWorld(t, sc, routesOf(ds), false)
	compared, mismatches := map[string]int{}, 0
	for _, env := range ds.Events {
		switch p := env.Data.(type) {
		case *events.TokenIssued:
			w.tokens[p.TokenID] = w.mint(t, p)
		case *events.TokenRevoked:
			if w.tokens[p.TokenID] != "" {
				w.revoke(t, p)
			}
		case *events.UsageDecided:
			tok := w.tokens[p.TokenID]
			if p.TokenID == "" || tok == "" {
				continue // token-less: TestFoldingMatchesRealEnforcer; never issued: no claims to mint from
			}
			d := w.byName[p.Enforcer].Check(&enforce.Request{Token: tok, Method: p.Method, Route: p.Route, Scope: p.Scope,
				RemoteAddr: netip.MustParseAddr(p.SourceIP), UserAgent: p.UserAgent, Time: env.Time})
			compared[p.Reason]++
			if string(d.Reason) != p.Reason || d.Allow != (p.Decision == events.DecisionAllow) || d.TokenID != p.TokenID {
				mismatches++
				if mismatches <= 10 {
					t.Errorf("%s %s %s from %s at %s with %s: simulated %s/%s, the enforcer says %v/%s",
						p.Enforcer, p.Method, p.Route, p.SourceIP, env.Time.Format(time.RFC3339), p.TokenID, p.Decision, p.Reason, d.Allow, d.Reason)
				}
			}
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d decisions differ from the real enforcer's", mismatches)
	}
	for _, r := range []string{events.ReasonOK, events.ReasonRevoked, events.ReasonScopeMissing} {
		if compared[r] == 0 {
			t.Errorf("no %s decision compared: the test proves little", r)
		}
	}
	t.Logf("compared %v", compared)
}

// TestEventsMatchRealEnforcer sends a sample of simulated requests over
// HTTP through a real enforcer's middleware — the concrete path, the raw
// user agent, the source address — and compares the usage events it
// publishes with the simulated ones: route pattern, resource, scope,
// client, source, decision, token.
func TestEventsMatchRealEnforcer(t *testing.T) {
	ds := defaultDataset(t)
	w := startRealWorld(t, ds.Scenario, routesOf(ds), true)
	upstream := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	servers := map[string]*httptest.Server{}
	for id, e := range w.byName {
		s := httptest.NewServer(e.Middleware(upstream))
		t.Cleanup(s.Close)
		servers[id] = s
	}
	// A sample: the first allowed request of each route and client, with
	// a token minted without time or network limits (what is compared is
	// the event's shape, not the decision).
	type sent struct {
		want *events.UsageDecided
	}
	sample := map[string][]sent{}
	seen := map[string]bool{}
	issued := map[string]*events.TokenIssued{}
	for _, env := range ds.Events {
		switch p := env.Data.(type) {
		case *events.TokenIssued:
			issued[p.TokenID] = p
		case *events.UsageDecided:
			k := p.Enforcer + p.Method + p.Route + p.Client
			if p.Decision != events.DecisionAllow || seen[k] || issued[p.TokenID] == nil {
				continue
			}
			seen[k] = true
			sample[p.Enforcer] = append(sample[p.Enforcer], sent{want: p})
		}
	}
	total := 0
	for id, ss := range sample {
		for _, s := range ss {
			p := s.want
			iss := *issued[p.TokenID]
			iss.Claims.Networks, iss.Claims.Windows = nil, nil
			iss.Claims.NotBefore, iss.Claims.Expiry = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
			req, _ := http.NewRequest(p.Method, servers[id].URL+simulate.Concrete(p.Route, p.Resource), nil)
			req.Header.Set("Authorization", "Bearer "+w.mint(t, &iss))
			req.Header.Set("User-Agent", p.UserAgent)
			req.Header.Set("X-Forwarded-For", p.SourceIP)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %s: status %d", p.Method, simulate.Concrete(p.Route, p.Resource), resp.StatusCode)
			}
			total++
		}
	}
	got := readUsage(t, w, total)
	strict := true
	for id, ss := range sample {
		for i, s := range ss {
			p, r := s.want, got[id][i]
			same := r.TokenID == p.TokenID && r.Tenant == p.Tenant && r.Holder == p.Holder && r.Enforcer == p.Enforcer &&
				r.Service == p.Service && r.SourceIP == p.SourceIP && r.UserAgent == p.UserAgent && r.Method == p.Method &&
				r.Route == p.Route && r.Scope == p.Scope && r.Decision == p.Decision && r.Reason == p.Reason && r.Count == p.Count
			if !same {
				t.Errorf("%s: simulated %+v\nthe enforcer published %+v", id, *p, r)
			}
			// The enforcer fills resource and client once the context work
			// of issue 9 is in; until then an empty field is not compared.
			if r.Resource != "" && r.Resource != p.Resource || r.Client != "" && r.Client != p.Client {
				t.Errorf("%s %s: simulated resource %q client %q, the enforcer published %q %q", id, p.Route, p.Resource, p.Client, r.Resource, r.Client)
			}
			if r.Resource == "" && p.Resource != "" {
				strict = false
			}
		}
	}
	if !strict {
		t.Log("this enforcer does not report resource and client yet: those fields were not compared")
	}
	t.Logf("compared %d events over %d enforcers", total, len(sample))
}

// readUsage reads n usage events from the USAGE stream, by enforcer in
// publication order.
func readUsage(t *testing.T, w *realWorld, n int) map[string][]events.UsageDecided {
	t.Helper()
	for _, e := range w.byName {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := w.env.JS.OrderedConsumer(ctx, events.StreamUsage, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]events.UsageDecided{}
	got := 0
	for got < n {
		batch, err := cons.Fetch(n-got, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for m := range batch.Messages() {
			_, u, err := events.DecodeAs[*events.UsageDecided](m.Data())
			if err != nil {
				t.Fatal(err)
			}
			out[u.Enforcer] = append(out[u.Enforcer], *u)
			got++
			k++
		}
		if k == 0 {
			t.Fatalf("read %d usage events, want %d", got, n)
		}
	}
	return out
}

// TestFoldingMatchesRealEnforcer: a burst of forged tokens from one source
// and token-less probes are folded by the simulator exactly as a real
// enforcer folds and throttles them: per source, reason and key id, with
// counts, no token id.
func TestFoldingMatchesRealEnforcer(t *testing.T) {
	sc, err := simulate.ParseScenario("mini.yaml", []byte(minimal+`  - variant: forging
    description: a burst of tampered tokens
    count: 1
    target: learnt
    token: none
    forged: bad_signature
    varied: true
    from: new_network
    client: attacker
    when: any
    requests: 100
    over: 5s
monitors:
  - {name: uptime, route: "GET /v1/invoices/{id}", every: 1h, from: 198.51.100.20, agent: "UptimeRobot/2.0"}
`))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := simulate.Generate(sc)
	if err != nil {
		t.Fatal(err)
	}
	var forging simulate.Attack
	for _, a := range ds.Attacks {
		if a.Variant == "forging" {
			forging = a
		}
	}
	// What the simulator says: requests per reason, and one event per
	// (reason, kid) for a burst within one second... or a few seconds.
	want := map[string]int64{}
	var wantEvents []events.UsageDecided
	for _, env := range ds.Events {
		if u, ok := env.Data.(*events.UsageDecided); ok && u.SourceIP == forging.Sources[0] {
			want[u.Reason] += u.Requests()
			wantEvents = append(wantEvents, *u)
		}
	}
	if want[events.ReasonBadSignature] != int64(sc.Enforcer.ThrottleBurst) || want[events.ReasonThrottled] != 100-int64(sc.Enforcer.ThrottleBurst) {
		t.Fatalf("simulated %v, want %d bad signatures then throttled", want, sc.Enforcer.ThrottleBurst)
	}
	w := startRealWorld(t, sc, routesOf(ds), true)
	e := w.byName["edge-invoices"]
	srv := httptest.NewServer(e.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	t.Cleanup(srv.Close)
	// Tokens signed by another key under the scenario's key id: bad
	// signatures, each a different string.
	other, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other.KeyID = w.signer.KeyID
	for i := range 100 {
		forged, err := other.Mint(token.Claims{ID: fmt.Sprintf("019a0000-0000-7000-8000-%012d", i), Tenant: "acme", Holder: "billing-1",
			Scopes: []string{"invoices:admin"}, Audience: []string{"invoices-api"}, IssuedAt: time.Now().Unix(), NotBefore: time.Now().Add(-time.Minute).Unix(), Expiry: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", srv.URL+"/v1/invoices/42", nil)
		req.Header.Set("Authorization", "Bearer "+forged)
		req.Header.Set("X-Forwarded-For", forging.Sources[0])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	natstest.WaitFor(t, 10*time.Second, func() error {
		got = map[string]int64{}
		us := readAllUsage(t, w)
		for _, u := range us {
			if u.TokenID != "" || u.Decision != events.DecisionDeny || u.SourceIP != forging.Sources[0] {
				return fmt.Errorf("the enforcer published %+v", u)
			}
			got[u.Reason] += u.Requests()
		}
		if got[events.ReasonBadSignature]+got[events.ReasonThrottled] < 100 {
			return fmt.Errorf("folded %v so far", got)
		}
		return nil
	})
	for r, n := range want {
		if got[r] != n {
			t.Errorf("%s: simulated %d requests, the enforcer folded %d (simulated %v, real %v)", r, n, got[r], want, got)
		}
	}
	for _, u := range wantEvents {
		if u.TokenID != "" || (u.Reason == events.ReasonBadSignature) != (u.KeyID == sc.Enforcer.KeyID) || u.Scope == "" {
			t.Errorf("simulated folded event %+v: want no token, the key id on bad signatures only, the route's scope", u)
		}
	}
}

// readAllUsage reads the USAGE stream as it is now.
func readAllUsage(t *testing.T, w *realWorld) []events.UsageDecided {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := w.env.JS.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Msgs)
	if n == 0 {
		return nil
	}
	var out []events.UsageDecided
	for _, us := range readUsage(t, w, n) {
		out = append(out, us...)
	}
	return out
}
