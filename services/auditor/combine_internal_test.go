package auditor

import (
	"slices"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
)

// TestCombinedToken: a lone group keeps its partition's token; a combined
// insert's token is a valid de-duplication token whatever the number of
// members, and names exactly its members' ranges.
func TestCombinedToken(t *testing.T) {
	members := func(n int, shift uint64) []*combineReq {
		var qs []*combineReq
		for p := range n {
			qs = append(qs, &combineReq{p: p, first: uint64(1_000_000*p) + shift + 1, last: uint64(1_000_000*p) + shift + 50_000})
		}
		return qs
	}
	if got, want := combinedToken("e", members(1, 0)), groupToken("e", 0, 1, 50_000); got != want {
		t.Fatalf("lone group: token %q, want %q", got, want)
	}
	seen := map[string]bool{}
	for _, n := range []int{2, 8, 64, 1024} {
		tok := combinedToken("lwxq3k2n8a1b", members(n, 0))
		if err := store.ValidateDedupToken(tok); err != nil {
			t.Fatalf("%d members: %v", n, err)
		}
		if tok != combinedToken("lwxq3k2n8a1b", members(n, 0)) {
			t.Fatalf("%d members: the token is not deterministic", n)
		}
		seen[tok] = true
		// One member's range moved by one: another insert.
		qs := members(n, 0)
		qs[n-1].last++
		seen[combinedToken("lwxq3k2n8a1b", qs)] = true
		seen[combinedToken("lwxq3k2n8a1b", members(n, 1))] = true
	}
	if len(seen) != 12 {
		t.Fatalf("%d distinct tokens for 12 distinct inserts", len(seen))
	}
	// The same members in another order: the same insert.
	qs := members(8, 0)
	slices.Reverse(qs)
	if got, want := combinedToken("e", qs), combinedToken("e", members(8, 0)); got != want {
		t.Fatalf("members reversed: token %q, want %q", got, want)
	}
	// The same ranges of a stream created again: other inserts.
	for _, n := range []int{1, 8} {
		if a, b := combinedToken("lwxq3k2n8a1b", members(n, 0)), combinedToken("lwxq3k2n8a1c", members(n, 0)); a == b {
			t.Fatalf("%d members: token %q for two streams", n, a)
		}
	}
}
