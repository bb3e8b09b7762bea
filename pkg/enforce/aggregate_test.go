package enforce

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// streamedUsage returns every usage event of enforcer id in the
// fixture's USAGE stream.
func streamedUsage(t *testing.T, f *fixture, id string) []*events.UsageDecided {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := fetchUsage(ctx, f.env.JS, id, -1)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*events.UsageDecided, len(evs))
	for i := range evs {
		out[i] = &evs[i].u
	}
	return out
}

// TestTokenlessFlood is the flood of issue 8: 300 token-less requests from
// one source through the proxy become a handful of usage events whose
// counts add up to 300 (one per aggregation interval the flood spans), and
// so do malformed and throttled ones.
func TestTokenlessFlood(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-flood", nil)
	srv := f.proxy(t, e)
	interval := e.Options().AggregateInterval
	start := time.Now()
	for range 300 {
		if r := do(t, nil, "GET", srv.URL+"/invoices/42", "", nil); r.reason != string(ReasonMissing) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	}
	for i := range 100 {
		do(t, nil, "GET", srv.URL+"/invoices/42", token.Seal(fmt.Sprintf("junk%d.x.y", i)), nil)
	}
	for i := range 50 {
		do(t, nil, "GET", srv.URL+fmt.Sprintf("/invoices/..%%2F%d", i), "", nil) // bad_path
	}
	spanned := int(time.Since(start)/interval) + 2
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs := streamedUsage(t, f, "edge-flood")
	sums := map[string]int64{}
	perReason := map[string]int{}
	for _, u := range evs {
		if u.TokenID != "" || u.Decision != events.DecisionDeny || u.SourceIP != "127.0.0.1" {
			t.Fatalf("unexpected event %+v", u)
		}
		sums[u.Reason] += u.Requests()
		perReason[u.Reason]++
	}
	if sums["missing"] != 300 || sums["malformed"]+sums["throttled"] != 100 || sums["bad_path"] != 50 {
		t.Fatalf("counts per reason %v, want missing 300, malformed+throttled 100, bad_path 50", sums)
	}
	if sums["throttled"] == 0 {
		t.Fatalf("100 malformed tokens from one source were never throttled: %v", sums)
	}
	for reason, n := range perReason {
		if n > spanned {
			t.Errorf("%d events for %s over at most %d intervals", n, reason, spanned)
		}
	}
	if len(evs) > 4*spanned {
		t.Fatalf("%d events for 450 requests", len(evs))
	}
	t.Logf("450 token-less requests: %d usage events %v, counts %v", len(evs), perReason, sums)
	if st := e.Stats(); st.Aggregated != 450 || st.AggregateOverflow != 0 {
		t.Fatalf("stats: aggregated %d, overflow %d", st.Aggregated, st.AggregateOverflow)
	}
}

// TestAggregatePublishesEachInterval: folded events go out at the end of
// the interval without a Flush, and an allowed request is never folded.
func TestAggregatePublishesEachInterval(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-tick", nil)
	tok, _ := mint(t, f.signer, nil)
	for range 3 {
		e.Check(&Request{Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("192.0.2.9")})
		e.Check(readReq(tok))
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		evs := streamedUsage(t, f, "edge-tick")
		var folded, allowed int64
		for _, u := range evs {
			if u.Decision == events.DecisionAllow {
				if u.Count != 0 {
					return fmt.Errorf("allow with count %d", u.Count)
				}
				allowed++
			} else {
				folded += u.Requests()
			}
		}
		if allowed != 3 || folded != 3 {
			return fmt.Errorf("%d allows, %d folded denials published", allowed, folded)
		}
		return nil
	})
}

// TestAggregateBound: past its bound the table folds into one "other"
// entry per reason, counted, and no decision is lost.
func TestAggregateBound(t *testing.T) {
	a := newAggregator(4)
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range 100 {
		r := usageRecord{at: at.Add(time.Duration(i)), remote: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), d: Decision{Reason: ReasonMissing}}
		a.add(r)
		a.add(r) // the same source again
		if n := a.len(); n > 5 {
			t.Fatalf("%d entries, bound 4 (+1 other)", n)
		}
	}
	if a.overflow.Load() != 192 || a.decisions.Load() != 200 {
		t.Fatalf("overflow %d, decisions %d", a.overflow.Load(), a.decisions.Load())
	}
	recs := a.take()
	var sum int64
	var other *usageRecord
	for i := range recs {
		sum += recs[i].count
		if recs[i].remote == otherSource {
			other = &recs[i]
		}
		if i > 0 && recs[i].at.Before(recs[i-1].at) {
			t.Fatal("records not in time order")
		}
	}
	if sum != 200 || other == nil || other.count != 192 {
		t.Fatalf("sum %d, other %+v", sum, other)
	}
	if a.len() != 0 || a.take() != nil {
		t.Fatal("take did not empty the table")
	}
}
