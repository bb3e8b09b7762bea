package detect_test

import (
	"bytes"
	"testing"

	"github.com/cordonhq/cordon/pkg/detect"
)

// TestSharedKeepsEarliest: a fact keeps its earliest time; Learn relays
// what is new or earlier, Add never relays; malformed facts are refused.
func TestSharedKeepsEarliest(t *testing.T) {
	var relayed []detect.Fact
	s := detect.NewShared(func(f detect.Fact) { relayed = append(relayed, f) })
	net := detect.Fact{Kind: detect.FactWorkNetwork, Key: 42, Time: 1000}
	steps := []struct {
		name    string
		learn   bool // Learn, else Add
		f       detect.Fact
		changed bool
		relays  int // relayed so far
		held    int64
	}{
		{"new", true, net, true, 1, 1000},
		{"same again", true, net, false, 1, 1000},
		{"later", true, with(net, 2000), false, 1, 1000},
		{"earlier", true, with(net, 900), true, 2, 900},
		{"earlier from elsewhere", false, with(net, 800), true, 2, 800},
		{"tenant and family ignored for a network", true, detect.Fact{Kind: detect.FactWorkNetwork, Key: 42, Tenant: 7, V6: true, Time: 850}, false, 2, 800},
		{"unknown kind", true, detect.Fact{Kind: 9, Key: 42, Time: 1}, false, 2, 800},
		{"no time", true, with(net, 0), false, 2, 800},
		{"negative time", false, with(net, -5), false, 2, 800},
	}
	for _, st := range steps {
		var changed bool
		if st.learn {
			changed = s.Learn(st.f)
		} else {
			changed = s.Add(st.f)
		}
		if changed != st.changed || len(relayed) != st.relays {
			t.Fatalf("%s: changed %v, %d relayed; want %v, %d", st.name, changed, len(relayed), st.changed, st.relays)
		}
		if fs := s.Facts(); len(fs) != 1 || fs[0].Time != st.held {
			t.Fatalf("%s: facts %+v, want one at %d", st.name, fs, st.held)
		}
	}
	// Facts of other kinds, tenants and families are distinct.
	for _, f := range []detect.Fact{
		{Kind: detect.FactTenantSpace, Tenant: 1, Key: 42, Time: 5},
		{Kind: detect.FactTenantSpace, Tenant: 2, Key: 42, Time: 5},
		{Kind: detect.FactTenantSpace, Tenant: 1, Key: 42, V6: true, Time: 5},
		{Kind: detect.FactTenantLearnt, Tenant: 1, Time: 5},
	} {
		if !s.Learn(f) {
			t.Fatalf("%+v: not new", f)
		}
	}
	if s.Len() != 5 {
		t.Fatalf("%d facts, want 5", s.Len())
	}
}

func with(f detect.Fact, t int64) detect.Fact { f.Time = t; return f }

// TestShareRestoredState: an engine restored from a checkpoint reports
// what the checkpoint holds again (a fact its first owner had not relayed
// yet is not lost), at the checkpoint's event time: never earlier than
// the first run learnt it, so it cannot count sooner than it did.
func TestShareRestoredState(t *testing.T) {
	ds := smallScenario(t)
	first := detect.NewShared(nil)
	a, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.Share(first, nil)
	observeAll(t, a, ds.Events)
	learnt := map[detect.FactKind]int{}
	earliest := map[detect.Fact]int64{}
	for _, f := range first.Facts() {
		learnt[f.Kind]++
		at := f.Time
		f.Time = 0
		earliest[f] = at
	}
	if learnt[detect.FactWorkNetwork] == 0 || learnt[detect.FactTenantSpace] == 0 || learnt[detect.FactTenantLearnt] == 0 {
		t.Fatalf("the run learnt %v: the test would prove nothing", learnt)
	}
	var snap bytes.Buffer
	if err := a.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	again := detect.NewShared(nil)
	b, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	b.Share(again, nil)
	if again.Len() != 0 {
		t.Fatalf("an empty engine shared %d facts", again.Len())
	}
	if err := b.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	last := ds.Events[len(ds.Events)-1].Time.Unix()
	restored := map[detect.FactKind]int{}
	for _, f := range again.Facts() {
		restored[f.Kind]++
		at := f.Time
		f.Time = 0
		was, ok := earliest[f]
		switch {
		case !ok && f.Kind != detect.FactWorkNetwork:
			t.Errorf("restored %+v, which the run never learnt", f)
		case !ok:
			// A network that entered a holder's baseline by promotion or
			// issuance and was not used since: the run reports it at its
			// next allowed use (as the engine's own filter learns it).
		case at < was || at > last:
			t.Errorf("restored %+v at %d: learnt at %d, the stream ends at %d", f, at, was, last)
		}
	}
	// Every network and space still in the state is shared again (those
	// evicted since, or forgotten by a full address-space set, are not);
	// a tenant's learning is told again at its next event.
	if restored[detect.FactWorkNetwork] == 0 || restored[detect.FactTenantSpace] == 0 || restored[detect.FactTenantLearnt] != 0 {
		t.Fatalf("restored %v of %v", restored, learnt)
	}
}
