package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMinSamples: a percentile needs ten samples beyond it.
func TestMinSamples(t *testing.T) {
	tests := []struct {
		p    float64
		want int
	}{{0, 1}, {50, 1}, {90, 100}, {95, 200}, {99, 1000}, {99.9, 10_000}, {100, 1}}
	for _, tt := range tests {
		if got := MinSamples(tt.p); got != tt.want {
			t.Errorf("MinSamples(%v) = %d, want %d", tt.p, got, tt.want)
		}
	}
}

// TestPercentilesRefuseSmallSamples: a p99 of fewer than 1,000 samples
// (a p99.9 of fewer than 10,000) is the maximum, labelled "max (n=…)";
// with enough samples it is the nearest-rank percentile.
func TestPercentilesRefuseSmallSamples(t *testing.T) {
	ramp := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[n-1-i] = time.Duration(i+1) * time.Microsecond // unsorted on purpose
		}
		return s
	}
	tests := []struct {
		name  string
		n     int
		p     float64
		want  time.Duration
		label string
		isMax bool
	}{
		{"p99 of 40 is the max", 40, 99, 40 * time.Microsecond, "max (n=40)", true},
		{"p99 of 999 is the max", 999, 99, 999 * time.Microsecond, "max (n=999)", true},
		{"p99 of 1000", 1000, 99, 990 * time.Microsecond, "p99", false},
		{"p99.9 of 9999 is the max", 9999, 99.9, 9999 * time.Microsecond, "max (n=9999)", true},
		{"p99.9 of 10000", 10_000, 99.9, 9990 * time.Microsecond, "p99.9", false},
		{"p50 of 3", 3, 50, 2 * time.Microsecond, "p50", false},
		{"max asked", 5, 100, 5 * time.Microsecond, "max (n=5)", true},
		{"empty", 0, 99, 0, "none (n=0)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := Percentiles(ramp(tt.n), tt.p)[0]
			if q.Value != tt.want || q.Label != tt.label || q.Max != tt.isMax || q.N != tt.n {
				t.Errorf("got %+v, want value %v label %q max %v n %d", q, tt.want, tt.label, tt.isMax, tt.n)
			}
		})
	}
}

// TestParseVmRSS reads the resident set from /proc/<pid>/status text and
// refuses text without it.
func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		err      bool
	}{
		{"status", "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n", 2048 << 10, false},
		{"no VmRSS", "Name:\tx\n", 0, true},
		{"garbage", "VmRSS:\tlots kB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parseVmRSS = %d, %v; want %d, error %v", got, err, tt.want, tt.err)
			}
		})
	}
	if rss, err := vmRSS(); err != nil || rss <= 0 {
		t.Errorf("vmRSS of this process = %d, %v", rss, err)
	}
}

// TestRunKeepsFailuresVisible: a missed target and a failed suite make
// the run exit 1, but only after every suite ran and the results file
// holds them all; a smoke run judges no target but still fails on a
// failed suite.
func TestRunKeepsFailuresVisible(t *testing.T) {
	ran := map[string]int{}
	suite := func(name string, figs []Figure, err error) Suite {
		return Suite{Name: name, Summary: name, Run: func(context.Context, Env) ([]Figure, error) {
			ran[name]++
			return figs, err
		}}
	}
	met := suite("met", []Figure{{Name: "fast", Value: 1, Unit: "ms", Target: "≤ 2", OK: true}}, nil)
	missed := suite("missed", []Figure{{Name: "slow", Value: 5, Unit: "ms", Target: "≤ 2", OK: false, How: "timer around nothing; n=1"}}, nil)
	broken := suite("broken", nil, errors.New("engine on fire"))
	tests := []struct {
		name        string
		suites      []Suite
		smoke       bool
		code        int
		inFile, err []string
	}{
		{"all met", []Suite{met}, false, 0, []string{"| fast | 1 | ms | ≤ 2 | yes |"}, nil},
		{"missed target", []Suite{missed, met}, false, 1, []string{"| slow | 5 | ms | ≤ 2 | **no** | timer around nothing; n=1 |", "## met"},
			[]string{"target missed: missed: slow = 5 ms (target ≤ 2)", "0 suite(s) failed, 1 target(s) missed"}},
		{"failed suite", []Suite{broken, missed, met}, false, 1, []string{"**Suite failed:** suite broken: engine on fire", "## missed", "## met"},
			[]string{"engine on fire", "1 suite(s) failed, 1 target(s) missed"}},
		{"smoke judges no target", []Suite{missed, met}, true, 0, []string{"Smoke run", "| slow | 5 | ms |  | — |"}, nil},
		{"smoke still fails on a failed suite", []Suite{broken, met}, true, 1, []string{"**Suite failed:**", "## met"}, []string{"1 suite(s) failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clear(ran)
			out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.suites, Env{Progress: &stdout, Smoke: tt.smoke}, "", out, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tt.code, stderr.String())
			}
			for _, s := range tt.suites {
				if ran[s.Name] != 1 {
					t.Errorf("suite %s ran %d times, want once", s.Name, ran[s.Name])
				}
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("results file: %v", err)
			}
			for _, w := range tt.inFile {
				if !strings.Contains(string(b), w) {
					t.Errorf("results file lacks %q:\n%s", w, b)
				}
			}
			for _, w := range tt.err {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestTripleOrders: the proxy triples' orders are the six permutations of
// the three targets, so each target goes first, second and last equally
// often and no path is favoured by its position (a warm connection, a
// cache line).
func TestTripleOrders(t *testing.T) {
	seen := map[[3]int]bool{}
	var at [3][3]int // at[position][target]
	for _, p := range perms {
		if seen[p] {
			t.Errorf("order %v twice", p)
		}
		seen[p] = true
		for pos, k := range p {
			at[pos][k]++
		}
		if p[0] == p[1] || p[1] == p[2] || p[0] == p[2] {
			t.Errorf("order %v repeats a target", p)
		}
	}
	for pos := range at {
		for k := range at[pos] {
			if at[pos][k] != 2 {
				t.Errorf("target %d at position %d in %d orders, want 2", k, pos, at[pos][k])
			}
		}
	}
}

// TestMemoryChildRefuses: a memory child with missing or malformed sizes
// says what is wrong instead of measuring.
func TestMemoryChildRefuses(t *testing.T) {
	tests := []struct {
		name, role, cfg, want string
	}{
		{"unknown role", "cpu", `{}`, `want "memory"`},
		{"malformed config", ChildMemory, `{tokens:`, EnvChildConfig},
		{"no tokens", ChildMemory, `{"tokens":0,"holders":1000}`, "tokens 0"},
		{"too few holders", ChildMemory, `{"tokens":10,"holders":100}`, "holders 100 (want ≥ 101)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvChildConfig, tt.cfg)
			err := runChild(tt.role)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runChild: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}
