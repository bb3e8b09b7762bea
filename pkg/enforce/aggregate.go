package enforce

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// aggregator folds the denials that name no token (see folded) into one
// usage event per (source, reason, key id) and interval, carrying a count,
// so a flood of token-less or forged requests is a handful of events and
// rows rather than one per request. The table is bounded: past max entries,
// new pairs fold into one "other" entry per reason whose source is the
// unspecified address 0.0.0.0.
type aggregator struct {
	max int

	mu sync.Mutex
	m  map[aggKey]*aggEntry

	decisions atomic.Uint64 // decisions folded
	overflow  atomic.Uint64 // decisions folded into an "other" entry
}

type aggKey struct {
	src    netip.Addr
	reason Reason
	kid    string
}

// aggEntry is the first record of its key in the interval and how many
// decisions it stands for.
type aggEntry struct {
	rec   usageRecord
	count int64
}

// otherSource is the source of the entries past the bound.
var otherSource = netip.IPv4Unspecified()

func newAggregator(max int) *aggregator {
	return &aggregator{max: max, m: make(map[aggKey]*aggEntry)}
}

// add folds one record in.
func (a *aggregator) add(r usageRecord) {
	k := aggKey{src: r.remote.Unmap(), reason: r.d.Reason, kid: r.d.KeyID}
	a.decisions.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.m[k]; e != nil {
		e.count++
		return
	}
	if len(a.m) >= a.max {
		a.overflow.Add(1)
		k = aggKey{src: otherSource, reason: r.d.Reason}
		if e := a.m[k]; e != nil {
			e.count++
			return
		}
		r.remote, r.d.KeyID = otherSource, ""
	}
	a.m[k] = &aggEntry{rec: r, count: 1}
}

// take empties the table and returns its records, each with its count, in
// the order of their first decision.
func (a *aggregator) take() []usageRecord {
	a.mu.Lock()
	m := a.m
	if len(m) == 0 {
		a.mu.Unlock()
		return nil
	}
	a.m = make(map[aggKey]*aggEntry, min(len(m), a.max))
	a.mu.Unlock()
	out := make([]usageRecord, 0, len(m))
	for _, e := range m {
		r := e.rec
		r.count = e.count
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y usageRecord) int { return x.at.Compare(y.at) })
	return out
}

// len is the number of entries waiting for the end of the interval.
func (a *aggregator) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
