// Package bench runs Cordon's performance suites (make bench, the
// cordon-bench command): each suite measures latency percentiles,
// throughput, memory or losses on the real components, prints them beside
// their targets, and the runner records them in BENCHMARKS.md together
// with the machine they ran on. It is a harness: it links the fault
// harnesses (internal/faults) and with them package testing, so it belongs
// in cmd/cordon-bench and never in the shipped cordon binary.
package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Figure is one measured number and the target it is held to.
type Figure struct {
	Name   string
	Value  float64
	Unit   string
	Target string // e.g. "≤ 2 µs"; empty if none
	// OK reports whether Value meets Target (true when there is no target).
	OK bool
	// How says how the number was taken: what the timer starts and stops
	// on, the sample size, and the baseline of the same run it compares
	// with. Empty for counts and settings that need no explanation.
	How string
}

// Missed reports whether the figure has a target it does not meet.
func (f Figure) Missed() bool { return f.Target != "" && !f.OK }

// Env is what a suite runs with.
type Env struct {
	// Progress receives a line per step.
	Progress io.Writer
	// Smoke runs the suite at tiny sizes: every code path runs, the
	// figures mean nothing and no target is judged (make bench-smoke, CI).
	Smoke bool
	// CPUProfile, when set, is the prefix of the CPU profiles the auditor
	// suite writes, one per measured stage: <prefix>.<stage>.pprof.
	CPUProfile string
}

// size is full in a measured run and smoke in a smoke run.
func (e Env) size(full, smoke int) int {
	if e.Smoke {
		return smoke
	}
	return full
}

// dur is full in a measured run and smoke in a smoke run.
func (e Env) dur(full, smoke time.Duration) time.Duration {
	if e.Smoke {
		return smoke
	}
	return full
}

// Suite is a named group of measurements.
type Suite struct {
	// Name is what --only matches and the results file's heading.
	Name string
	// Summary says in a line what the suite measures (cordon-bench -h).
	Summary string
	// Run measures, writing progress to env.Progress as it goes.
	Run func(ctx context.Context, env Env) ([]Figure, error)
}

// Suites lists every suite in the order make bench runs them.
func Suites() []Suite {
	return []Suite{
		EnforceSuite(),
		RevocationSuite(),
		AuditorSuite(),
		MemorySuite(),
		EvalSuite(),
		FaultsSuite(),
		NodeLossSuite(),
		ScaleOutSuite(),
		LeakSuite(),
		CanarySuite(),
	}
}

// MinSamples is the smallest sample a percentile p (0–100) is taken from:
// the tail beyond it must hold at least 10 samples, so p99 needs 1,000,
// p99.9 10,000 and p90 100. The median and lower percentiles need one.
func MinSamples(p float64) int {
	if p <= 50 {
		return 1
	}
	if p >= 100 {
		return 1
	}
	return int(math.Ceil(10/(1-p/100) - 1e-6))
}

// Quantile is one percentile of a sample, or its maximum when the sample
// is too small to hold that percentile (MinSamples).
type Quantile struct {
	Value time.Duration
	// Label is "p50", "p99", "p99.9", or "max (n=40)" when the sample was
	// too small for the percentile asked (or the maximum was asked).
	Label string
	// N is the sample size.
	N int
	// Max is set when Value is the sample's maximum, not the percentile.
	Max bool
}

// Percentiles returns the given percentiles (0–100) of samples, sorting
// them. A percentile the sample is too small for (fewer than
// MinSamples(p) samples) is refused: its Quantile is the maximum, labelled
// "max (n=…)", never a tail percentile of a few dozen samples.
func Percentiles(samples []time.Duration, ps ...float64) []Quantile {
	out := make([]Quantile, len(ps))
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	n := len(samples)
	for i, p := range ps {
		q := Quantile{N: n}
		switch {
		case n == 0:
			q.Label = "none (n=0)"
		case p >= 100 || n < MinSamples(p):
			q.Value, q.Max, q.Label = samples[n-1], true, fmt.Sprintf("max (n=%d)", n)
		default:
			idx := int(math.Ceil(p/100*float64(n)-1e-9)) - 1 // nearest rank, float error aside
			q.Value = samples[max(0, min(idx, n-1))]
			q.Label = "p" + strconv.FormatFloat(p, 'f', -1, 64)
		}
		out[i] = q
	}
	return out
}

// Machine describes the host for the results file.
func Machine() string {
	cpu := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %d cores%s, %s/%s, %s", cpu, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// Result is what one suite gave: its figures, or the error that stopped it.
type Result struct {
	Suite   string
	Figures []Figure
	Err     error
	Took    time.Duration
	// Load is the machine's load average (1, 5, 15 minutes) when the
	// suite started and when it ended: what else ran beside it.
	Load [2]string
}

// loadAverage is /proc/loadavg's first three fields, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Run runs the suites whose names contain filter (all if empty), prints
// figures to env.Progress as they come, and returns every suite's result
// in order. A suite that fails does not stop the others: its error is in
// its Result.
func Run(ctx context.Context, filter string, env Env) []Result {
	return runSuites(ctx, Suites(), filter, env)
}

// runSuites is Run over the given suites.
func runSuites(ctx context.Context, suites []Suite, filter string, env Env) []Result {
	out := env.Progress
	var res []Result
	for _, s := range suites {
		if !selected(suites, s.Name, filter) {
			continue
		}
		if ctx.Err() != nil {
			res = append(res, Result{Suite: s.Name, Err: ctx.Err()})
			continue
		}
		load0 := loadAverage()
		fmt.Fprintf(out, "== %s (load average %s)\n", s.Name, load0)
		start := time.Now()
		figs, err := s.Run(ctx, env)
		r := Result{Suite: s.Name, Figures: figs, Took: time.Since(start), Load: [2]string{load0, loadAverage()}}
		if err != nil {
			r.Err = fmt.Errorf("suite %s: %w", s.Name, err)
			fmt.Fprintf(out, "   FAILED: %v\n", err)
		}
		if env.Smoke {
			// Nothing is judged in a smoke run.
			for i := range r.Figures {
				r.Figures[i].Target, r.Figures[i].OK = "", true
			}
		}
		for _, f := range r.Figures {
			mark := ""
			if f.Target != "" {
				mark = "ok"
				if f.Missed() {
					mark = "MISSED"
				}
			}
			fmt.Fprintf(out, "   %-58s %12s %-8s %-12s %s\n", f.Name, formatValue(f.Value), f.Unit, f.Target, mark)
			if f.How != "" {
				fmt.Fprintf(out, "   %-58s (%s)\n", "", f.How)
			}
		}
		fmt.Fprintf(out, "   (%s in %.1fs; load average %s at the end)\n", s.Name, r.Took.Seconds(), r.Load[1])
		res = append(res, r)
	}
	return res
}

func formatValue(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// WriteMarkdown writes the results as the body of BENCHMARKS.md.
func WriteMarkdown(w io.Writer, res []Result, when time.Time, smoke bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` on %s.\n\nMachine: %s\n\n", when.UTC().Format(time.RFC3339), Machine())
	if smoke {
		b.WriteString("**Smoke run** (`--smoke`): tiny sizes, these figures mean nothing and no target was judged.\n\n")
	}
	b.WriteString("A percentile is taken only from enough samples for it (p99: 1,000; p99.9: 10,000); below that the figure is the maximum, labelled `max (n=…)`. The last column says what the timer starts and stops on, the sample size and the baseline of the same run.\n\n")
	for _, r := range res {
		fmt.Fprintf(&b, "## %s\n\nRan for %.0f s; load average (1, 5, 15 min) %s at the start, %s at the end (this machine has %d cores).\n\n",
			r.Suite, r.Took.Seconds(), r.Load[0], r.Load[1], runtime.NumCPU())
		if r.Err != nil {
			fmt.Fprintf(&b, "**Suite failed:** %s\n\n", strings.ReplaceAll(r.Err.Error(), "\n", " "))
		}
		if len(r.Figures) == 0 {
			continue
		}
		b.WriteString("| figure | value | unit | target | met | how measured |\n|---|---:|---|---|---|---|\n")
		for _, f := range r.Figures {
			met := "yes"
			if f.Missed() {
				met = "**no**"
			}
			if f.Target == "" {
				met = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", f.Name, formatValue(f.Value), f.Unit, f.Target, met, f.How)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Micros converts a duration to microseconds for a Figure.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Millis converts a duration to milliseconds for a Figure.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// selected reports whether the suite named name runs under filter (--only):
// every suite whose name contains it, or only the one named exactly so
// (--only auditor runs the auditor suite, not also "scale-out: auditor
// instances").
func selected(suites []Suite, name, filter string) bool {
	for _, s := range suites {
		if s.Name == filter {
			return name == filter
		}
	}
	return strings.Contains(name, filter)
}
