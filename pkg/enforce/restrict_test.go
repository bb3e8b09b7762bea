package enforce

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// narrowValue is a quarantine record for token id, in force for an hour
// unless until says otherwise.
func narrowValue(t testing.TB, id string, until time.Time, scopes []string, nets ...string) []byte {
	t.Helper()
	if until.IsZero() {
		until = time.Now().Add(time.Hour)
	}
	return denyValue(t, events.DenyRecord{Kind: events.StepNarrow, TokenID: id, Step: events.StepNarrow,
		Until: until.UTC(), Scopes: scopes, Networks: nets})
}

// stepUpValue is a step-up record for token id, in force for an hour
// unless until says otherwise.
func stepUpValue(t testing.TB, id string, until time.Time) []byte {
	t.Helper()
	if until.IsZero() {
		until = time.Now().Add(time.Hour)
	}
	return denyValue(t, events.DenyRecord{Kind: events.StepStepUp, TokenID: id, Step: events.StepStepUp, Until: until.UTC()})
}

// TestRestrictionDecisions: what a quarantine and a step-up let through,
// the attacks on each included, alone and together.
func TestRestrictionDecisions(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, nil)
	device := token.Thumbprint([]byte("laptop"))
	other := token.Thumbprint([]byte("stolen"))
	known := []string{"192.0.2.0/24", "2001:db8::/32"}
	end := time.Now().Add(30 * time.Minute).Truncate(time.Second) // before the tokens expire

	type restrict struct {
		narrow  bool
		scopes  []string // of the quarantine
		stepUp  bool
		revoked bool
	}
	cases := []struct {
		name     string
		claims   func(*token.Claims)
		restrict restrict
		scope    string // of the request; default invoices:read
		addr     string // default 192.0.2.1 (a known network)
		device   string
		at       time.Time // request time; default now
		want     Reason
	}{
		{name: "unrestricted", want: ReasonOK},

		// Quarantine.
		{name: "quarantined read from a known network", restrict: restrict{narrow: true}, want: ReasonOK},
		{name: "quarantined read from a known IPv6 network", restrict: restrict{narrow: true}, addr: "2001:db8::7", want: ReasonOK},
		{name: "quarantined write", claims: allInvoices, restrict: restrict{narrow: true}, scope: "invoices:write", want: ReasonQuarantined},
		{name: "quarantined list (list only reads)", restrict: restrict{narrow: true}, scope: "invoices:list", want: ReasonOK},
		{name: "quarantined read from another network", restrict: restrict{narrow: true}, addr: "198.51.100.1", want: ReasonQuarantined},
		{name: "quarantined read, IPv4-mapped known address", restrict: restrict{narrow: true}, addr: "::ffff:192.0.2.1", want: ReasonOK},
		{name: "quarantined read, IPv4-mapped other address", restrict: restrict{narrow: true}, addr: "::ffff:198.51.100.1", want: ReasonQuarantined},
		{name: "quarantined read without an address", restrict: restrict{narrow: true}, addr: "none", want: ReasonQuarantined},
		{name: "quarantined scope ending in thread", claims: allInvoices, restrict: restrict{narrow: true}, scope: "invoices:thread", want: ReasonQuarantined},
		{name: "quarantined scope bread:x", claims: func(c *token.Claims) { c.Scopes = []string{"bread:*"} }, restrict: restrict{narrow: true}, scope: "bread:x", want: ReasonQuarantined},
		{name: "quarantined scope read.x", claims: allInvoices, restrict: restrict{narrow: true}, scope: "invoices:read.x", want: ReasonQuarantined},
		{name: "quarantined scope xread", claims: allInvoices, restrict: restrict{narrow: true}, scope: "invoices:xread", want: ReasonQuarantined},
		{name: "quarantined read of a scope it does not keep", claims: withCustomers, restrict: restrict{narrow: true, scopes: []string{"invoices:read"}}, scope: "customers:read", want: ReasonQuarantined},
		{name: "quarantined read of a scope it keeps", claims: withCustomers, restrict: restrict{narrow: true, scopes: []string{"invoices:read", "customers:read"}}, scope: "customers:read", want: ReasonOK},
		{name: "quarantine keeping a wildcard", claims: withCustomers, restrict: restrict{narrow: true, scopes: []string{"customers:*"}}, scope: "customers:read", want: ReasonOK},
		{name: "quarantine without scopes keeps every read", claims: withCustomers, restrict: restrict{narrow: true}, scope: "customers:read", want: ReasonOK},
		{name: "quarantine over", restrict: restrict{narrow: true}, addr: "198.51.100.1", at: end, want: ReasonOK},
		{name: "quarantine in its last second", restrict: restrict{narrow: true}, addr: "198.51.100.1", at: end.Add(-time.Second), want: ReasonQuarantined},

		// Step-up.
		{name: "step-up without a device binding", restrict: restrict{stepUp: true}, want: ReasonStepUpRequired},
		{name: "step-up without a device binding, a certificate presented", restrict: restrict{stepUp: true}, device: other, want: ReasonStepUpRequired},
		{name: "step-up, bound, no certificate", claims: boundTo(device), restrict: restrict{stepUp: true}, want: ReasonDeviceBinding},
		{name: "step-up, bound, another certificate", claims: boundTo(device), restrict: restrict{stepUp: true}, device: other, want: ReasonDeviceBinding},
		{name: "step-up, bound device presented", claims: boundTo(device), restrict: restrict{stepUp: true}, device: device, want: ReasonOK},
		{name: "step-up over", restrict: restrict{stepUp: true}, at: end, want: ReasonOK},

		// Both, and revocation.
		{name: "both, bound device reads from a known network", claims: boundTo(device), restrict: restrict{narrow: true, stepUp: true}, device: device, want: ReasonOK},
		{name: "both, bound device writes", claims: func(c *token.Claims) { allInvoices(c); boundTo(device)(c) }, restrict: restrict{narrow: true, stepUp: true}, scope: "invoices:write", device: device, want: ReasonQuarantined},
		{name: "both, unbound read from a known network", restrict: restrict{narrow: true, stepUp: true}, want: ReasonStepUpRequired},
		{name: "both, unbound read from another network", restrict: restrict{narrow: true, stepUp: true}, addr: "198.51.100.1", want: ReasonQuarantined},
		{name: "revoked and quarantined", restrict: restrict{narrow: true, revoked: true}, want: ReasonRevoked},
		{name: "revoked and stepped up", claims: boundTo(device), restrict: restrict{stepUp: true, revoked: true}, device: device, want: ReasonRevoked},
	}
	rev := uint64(0)
	put := func(key string, value []byte) {
		t.Helper()
		rev++
		if err := e.dl.apply(key, value, false, rev, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, c := mint(t, s, tc.claims)
			if tc.restrict.narrow {
				put(events.DenyKeyNarrow(c.ID), narrowValue(t, c.ID, end, tc.restrict.scopes, known...))
			}
			if tc.restrict.stepUp {
				put(events.DenyKeyStepUp(c.ID), stepUpValue(t, c.ID, end))
			}
			if tc.restrict.revoked {
				put(events.DenyKeyToken(c.ID), denyValue(t, events.DenyRecord{Kind: events.RevokeToken, TokenID: c.ID}))
			}
			r := readReq(tok)
			if tc.scope != "" {
				r.Scope = tc.scope
			}
			switch tc.addr {
			case "":
			case "none":
				r.RemoteAddr = netip.Addr{}
			default:
				r.RemoteAddr = netip.MustParseAddr(tc.addr)
			}
			r.Device, r.Time = tc.device, tc.at
			for _, when := range []string{"first use", "from the cache"} {
				d := e.Check(r)
				if d.Reason != tc.want || d.Allow != (tc.want == ReasonOK) {
					t.Fatalf("%s: got %+v, want %s", when, d, tc.want)
				}
				if d.TokenID != c.ID {
					t.Fatalf("%s: identity not reported: %+v", when, d)
				}
			}
		})
	}
}

func allInvoices(c *token.Claims) { c.Scopes = []string{"invoices:*"} }

func withCustomers(c *token.Claims) { c.Scopes = append(c.Scopes, "customers:read") }

func boundTo(device string) func(*token.Claims) {
	return func(c *token.Claims) { c.Device = device }
}

// TestRestrictionUnreadableFailsClosed: a restriction record that cannot
// be read restricts as tightly as its step can, whatever the request time,
// until its entry is deleted; the error is returned to be logged.
func TestRestrictionUnreadableFailsClosed(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, nil)
	device := token.Thumbprint([]byte("laptop"))
	future := time.Now().Add(10 * 365 * 24 * time.Hour)
	cases := []struct {
		name   string
		narrow bool // else step-up
		value  func(id string) []byte
	}{
		{"narrow, not JSON", true, func(string) []byte { return []byte("{not json") }},
		{"narrow, empty", true, func(string) []byte { return nil }},
		{"narrow, no until", true, func(id string) []byte {
			return denyValue(t, events.DenyRecord{Kind: events.StepNarrow, TokenID: id, Networks: []string{"0.0.0.0/0"}})
		}},
		{"narrow, a bad network", true, func(id string) []byte {
			return narrowValue(t, id, time.Time{}, nil, "192.0.2.0/24", "0.0.0.0/33")
		}},
		{"narrow, an address for a network", true, func(id string) []byte {
			return narrowValue(t, id, time.Time{}, nil, "192.0.2.1")
		}},
		{"narrow, too many networks", true, func(id string) []byte {
			nets := make([]string, events.MaxRestrictNetworks+1)
			for i := range nets {
				nets[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32).String()
			}
			return narrowValue(t, id, time.Time{}, nil, nets...)
		}},
		{"step-up, not JSON", false, func(string) []byte { return []byte(`"until"`) }},
		{"step-up, no until", false, func(id string) []byte {
			return denyValue(t, events.DenyRecord{Kind: events.StepStepUp, TokenID: id})
		}},
		{"step-up, until of the wrong type", false, func(string) []byte { return []byte(`{"until":17}`) }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The quarantined token is bound and presents its device (it
			// must not help); the stepped-up one is not bound.
			bound, key, want := true, "", ReasonQuarantined
			if !tc.narrow {
				bound, want = false, ReasonStepUpRequired
			}
			tok, c := mint(t, s, func(cl *token.Claims) {
				cl.Expiry = future.Add(time.Hour).Unix() // still valid in the future
				if bound {
					cl.Device = device
				}
			})
			if tc.narrow {
				key = events.DenyKeyNarrow(c.ID)
			} else {
				key = events.DenyKeyStepUp(c.ID)
			}
			rev := uint64(2*i + 1)
			if err := e.dl.apply(key, tc.value(c.ID), false, rev, time.Now()); err == nil {
				t.Fatal("no error for an unreadable record")
			}
			r := readReq(tok) // a read from a known network
			if tc.narrow {
				r.Device = device
			}
			for _, at := range []time.Time{{}, future} {
				r.Time = at
				if d := e.Check(r); d.Reason != want {
					t.Fatalf("at %v: got %+v, want %s", at, d, want)
				}
			}
			if !tc.narrow {
				// A token of the id bound to a device passes with it: the
				// step-up still means what it says.
				other, _ := mint(t, s, func(cl *token.Claims) { cl.ID = c.ID; cl.Device = device })
				br := readReq(other)
				br.Device = device
				if d := e.Check(br); !d.Allow {
					t.Fatalf("bound device denied: %+v", d)
				}
			}
			if err := e.dl.apply(key, nil, true, rev+1, time.Now()); err != nil {
				t.Fatal(err)
			}
			r.Time = time.Time{}
			if d := e.Check(r); !d.Allow {
				t.Fatalf("after the delete: %+v", d)
			}
		})
	}
}

// TestRestrictionReleaseAndBroadcast drives the live denylist directly: a
// restriction goes with its bucket delete (a release), a broadcast one
// survives an older delete or replay, and the later write replaces it.
func TestRestrictionReleaseAndBroadcast(t *testing.T) {
	s := newSigner(t)
	tok, c := mint(t, s, nil)
	now := time.Now()
	soon, later := now.Add(time.Hour), now.Add(2*time.Hour)
	key := events.DenyKeyNarrow(c.ID)
	// A quarantine that lets reads from 192.0.2.0/24 through, or one that
	// lets nothing through (its only network is elsewhere).
	open := func(until time.Time) []byte { return narrowValue(t, c.ID, until, nil, "192.0.2.0/24") }
	shut := func(until time.Time) []byte { return narrowValue(t, c.ID, until, nil, "198.51.100.0/24") }
	type step struct {
		op    string // put, del, bcast, replay
		value []byte
		rev   uint64 // bucket revision (put, del, replay) or KVRev (bcast)
	}
	cases := []struct {
		name  string
		steps []step
		want  Reason // of a read from 192.0.2.1, now
		until time.Time
	}{
		{"put restricts", []step{{"put", shut(soon), 1}}, ReasonQuarantined, soon},
		{"delete releases", []step{{"put", shut(soon), 1}, {"del", nil, 2}}, ReasonOK, time.Time{}},
		{"later put replaces", []step{{"put", shut(soon), 1}, {"put", open(later), 2}}, ReasonOK, later},
		{"replay without it releases", []step{{"put", shut(soon), 1}, {"replay", nil, 3}}, ReasonOK, time.Time{}},
		{"pending broadcast survives a delete", []step{{"put", shut(soon), 1}, {"bcast", shut(later), 0}, {"del", nil, 2}}, ReasonQuarantined, later},
		{"pending broadcast survives a replay", []step{{"bcast", shut(soon), 0}, {"replay", nil, 5}}, ReasonQuarantined, soon},
		{"broadcast survives an older delete", []step{{"bcast", shut(soon), 7}, {"del", nil, 6}}, ReasonQuarantined, soon},
		{"broadcast survives an older replay", []step{{"bcast", shut(soon), 7}, {"replay", nil, 6}}, ReasonQuarantined, soon},
		{"confirmed broadcast goes with a later delete", []step{{"bcast", shut(soon), 7}, {"put", shut(soon), 7}, {"del", nil, 8}}, ReasonOK, time.Time{}},
		{"replay covering the broadcast decides", []step{{"bcast", shut(soon), 7}, {"replay", nil, 9}}, ReasonOK, time.Time{}},
		{"older put does not replace a pending broadcast", []step{{"bcast", shut(later), 0}, {"put", open(soon), 3}}, ReasonQuarantined, later},
		{"later broadcast replaces", []step{{"bcast", shut(soon), 0}, {"bcast", open(later), 0}}, ReasonOK, later},
		{"later broadcast extends", []step{{"put", shut(soon), 1}, {"bcast", shut(later), 2}}, ReasonQuarantined, later},
		{"older broadcast does not replace a newer one", []step{{"bcast", shut(later), 9}, {"bcast", open(soon), 8}}, ReasonQuarantined, later},
		{"covered broadcast is old news", []step{{"put", shut(soon), 4}, {"del", nil, 5}, {"bcast", shut(soon), 4}}, ReasonOK, time.Time{}},
		{"broadcast then its own put then a release", []step{{"bcast", shut(soon), 0}, {"bcast", shut(soon), 4}, {"put", shut(soon), 4}, {"del", nil, 5}}, ReasonOK, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := local(t, s, nil)
			d := e.dl
			for _, st := range tc.steps {
				switch st.op {
				case "put":
					if err := d.apply(key, st.value, false, st.rev, now); err != nil {
						t.Fatal(err)
					}
				case "del":
					if err := d.apply(key, nil, true, st.rev, now); err != nil {
						t.Fatal(err)
					}
				case "bcast":
					if _, err := d.applyBroadcast(key, st.value, st.rev, now); err != nil {
						t.Fatal(err)
					}
				case "replay":
					d.replace(newDenySet(), st.rev)
				}
			}
			if got := e.Check(readReq(tok)); got.Reason != tc.want {
				t.Fatalf("decision %+v, want %s", got, tc.want)
			}
			n, ok := d.set.narrow[c.ID]
			switch {
			case tc.until.IsZero() && ok:
				t.Fatalf("restriction held: %+v", n)
			case !tc.until.IsZero() && (!ok || n.until != untilUnix(tc.until)):
				t.Fatalf("restriction %+v (held %v), want until %d", n, ok, untilUnix(tc.until))
			}
			if want := d.set.len(); d.len() != want {
				t.Fatalf("len %d, set has %d", d.len(), want)
			}
		})
	}
}

// TestRestrictionThroughBucketAndBroadcast: a quarantine written to the
// denylist bucket and a step-up sent on the broadcast reach Check, are
// counted, and a bucket delete releases the quarantine.
func TestRestrictionThroughBucketAndBroadcast(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-restrict", func(o *Options) { o.DisableUsage = true })
	kv := f.kv(t, events.BucketDenylist)
	ctx := context.Background()

	tok, c := mint(t, f.signer, func(c *token.Claims) { c.Scopes = []string{"invoices:*"} })
	if d := e.Check(readReq(tok)); !d.Allow {
		t.Fatalf("before: %+v", d)
	}
	rev := f.revoke(t, events.DenyKeyNarrow(c.ID), events.DenyRecord{Kind: events.StepNarrow, TokenID: c.ID,
		Step: events.StepNarrow, Until: time.Now().Add(time.Hour).UTC(), Networks: []string{"192.0.2.0/24"}})
	waitRevision(t, e, rev)
	write := readReq(tok)
	write.Method, write.Scope = "PUT", "invoices:write"
	elsewhere := readReq(tok)
	elsewhere.RemoteAddr = netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		name string
		req  *Request
		want Reason
	}{
		{"read from a known network", readReq(tok), ReasonOK},
		{"write", write, ReasonQuarantined},
		{"read from elsewhere", elsewhere, ReasonQuarantined},
	} {
		if d := e.Check(tc.req); d.Reason != tc.want {
			t.Fatalf("%s: got %+v, want %s", tc.name, d, tc.want)
		}
	}
	if s := e.Stats(); s.Quarantined != 1 || s.SteppedUp != 0 || s.QuarantineDenials != 2 || s.DenyEntries != 1 {
		t.Fatalf("stats %+v", s)
	}

	// A step-up from a revoker's broadcast, not written to the bucket.
	r := newFakeRevoker(t, f.env.NC)
	r.change(events.DenyChange{Origin: r.origin, Seq: 1, Key: events.DenyKeyStepUp(c.ID),
		Value: stepUpValue(t, c.ID, time.Now().Add(time.Hour)), At: time.Now()})
	waitReason(t, e, tok, ReasonStepUpRequired)
	if s := e.Stats(); s.SteppedUp != 1 || s.StepUpDenials == 0 || s.DenyUnconfirmed != 1 {
		t.Fatalf("stats %+v", s)
	}

	// The metrics follow the stats.
	reg := prometheus.NewRegistry()
	if err := reg.Register(e.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.Contains(mf.GetName(), "quarantine") && !strings.Contains(mf.GetName(), "step_up") {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue()
			if c := m.GetCounter(); c != nil {
				v = c.GetValue()
			}
			got[mf.GetName()] = v
		}
	}
	st := e.Stats()
	want := map[string]float64{
		"cordon_enforcer_quarantined_tokens":      1,
		"cordon_enforcer_step_up_tokens":          1,
		"cordon_enforcer_quarantine_denied_total": 2,
		"cordon_enforcer_step_up_denied_total":    float64(st.StepUpDenials),
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (exported %v), want %v", name, g, ok, v)
		}
	}

	// A release of the quarantine by bucket delete; the step-up holds.
	if err := kv.Delete(ctx, events.DenyKeyNarrow(c.ID)); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, f.revoke(t, events.DenyKeyToken("sentinel"), events.DenyRecord{Kind: events.RevokeToken}))
	if d := e.Check(elsewhere); d.Reason != ReasonStepUpRequired {
		t.Fatalf("after the release: %+v", d)
	}
	natstest.WaitFor(t, wait, func() error {
		if s := e.Stats(); s.Quarantined != 0 || s.SteppedUp != 1 {
			return errorf("quarantined %d, stepped up %d", s.Quarantined, s.SteppedUp)
		}
		return nil
	})
}

// TestRestrictedAllocations: restrictions cost no allocation, on a
// restricted token's decision or on another token's.
func TestRestrictedAllocations(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, func(o *Options) { o.DisableUsage = false; o.UsageBuffer = 1 << 20 })
	free, _ := mint(t, s, nil)
	held, c := mint(t, s, nil)
	if err := e.dl.apply(events.DenyKeyNarrow(c.ID), narrowValue(t, c.ID, time.Time{}, []string{"invoices:read"}, "10.0.0.0/8", "192.0.2.0/24"), false, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.dl.apply(events.DenyKeyStepUp(c.ID), stepUpValue(t, c.ID, time.Time{}), false, 2, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  *Request
		want Reason
	}{
		{"unrestricted token", readReq(free), ReasonOK},
		{"restricted token", readReq(held), ReasonStepUpRequired},
	} {
		if d := e.Check(tc.req); d.Reason != tc.want {
			t.Fatalf("%s: %+v, want %s", tc.name, d, tc.want)
		}
		if n := testing.AllocsPerRun(1000, func() { e.Check(tc.req) }); n > 0 {
			t.Fatalf("%s: %v allocations per decision, want 0", tc.name, n)
		}
	}
}
