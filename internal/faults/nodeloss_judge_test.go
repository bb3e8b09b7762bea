package faults

import (
	"testing"
	"time"
)

// TestFailClosedWindow: stretches run from the first denylist_stale
// decision to the first decision after it that was not (or the last
// stale one at the end), in start order whatever order they were
// recorded in.
func TestFailClosedWindow(t *testing.T) {
	ms := func(v int64) int64 { return v * int64(time.Millisecond) }
	tests := []struct {
		name string
		ds   []decision
		want FailClosedWindow
	}{
		{"none", nil, FailClosedWindow{}},
		{"never stale", []decision{{ms(1), false}, {ms(2), false}}, FailClosedWindow{}},
		{"one stretch closed by an allow", []decision{{ms(0), false}, {ms(10), true}, {ms(20), true}, {ms(35), false}},
			FailClosedWindow{Total: 25 * time.Millisecond, Longest: 25 * time.Millisecond, Stretches: 1, Decisions: 2}},
		{"two stretches, recorded out of order", []decision{{ms(50), true}, {ms(10), true}, {ms(30), false}, {ms(0), false}, {ms(20), true}, {ms(90), false}, {ms(60), true}},
			FailClosedWindow{Total: 20*time.Millisecond + 40*time.Millisecond, Longest: 40 * time.Millisecond, Stretches: 2, Decisions: 4}},
		{"stale at the end", []decision{{ms(0), false}, {ms(10), true}, {ms(70), true}},
			FailClosedWindow{Total: 60 * time.Millisecond, Longest: 60 * time.Millisecond, Stretches: 1, Decisions: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failClosedWindow(tt.ds); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDistribution: nearest-rank percentiles of unsorted samples, which
// are left as they were.
func TestDistribution(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 … 1
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Distribution
	}{
		{"empty", nil, Distribution{}},
		{"one", ms(7), Distribution{N: 1, P50: 7 * time.Millisecond, P99: 7 * time.Millisecond, Max: 7 * time.Millisecond}},
		{"hundred", ms(hundred...), Distribution{N: 100, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}},
		{"three", ms(30, 10, 20), Distribution{N: 3, P50: 20 * time.Millisecond, P99: 30 * time.Millisecond, Max: 30 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := time.Duration(-1)
			if len(tt.in) > 0 {
				first = tt.in[0]
			}
			if got := distribution(tt.in); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if len(tt.in) > 0 && tt.in[0] != first {
				t.Error("distribution sorted its input")
			}
		})
	}
}
