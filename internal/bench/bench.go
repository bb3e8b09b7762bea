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
}

// Suite is a named group of measurements.
type Suite struct {
	// Name is what --only matches and the results file's heading.
	Name string
	// Summary says in a line what the suite measures (cordon-bench -h).
	Summary string
	// Run measures, writing progress as it goes.
	Run func(ctx context.Context, progress io.Writer) ([]Figure, error)
}

// Suites lists every suite in the order make bench runs them.
func Suites() []Suite {
	return []Suite{
		EnforceSuite(),
		RevocationSuite(),
		AuditorSuite(),
		EvalSuite(),
		FaultsSuite(),
		NodeLossSuite(),
	}
}

// Percentiles returns the given percentiles (0–100) of samples, sorting them.
func Percentiles(samples []time.Duration, ps ...float64) []time.Duration {
	out := make([]time.Duration, len(ps))
	if len(samples) == 0 {
		return out
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	for i, p := range ps {
		idx := int(math.Ceil(p/100*float64(len(samples)))) - 1
		idx = max(0, min(idx, len(samples)-1))
		out[i] = samples[idx]
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

// Run runs the suites whose names contain filter (all if empty), prints
// figures to out as they come, and returns them by suite.
func Run(ctx context.Context, filter string, out io.Writer) (map[string][]Figure, []string, error) {
	res := map[string][]Figure{}
	var order []string
	for _, s := range Suites() {
		if filter != "" && !strings.Contains(s.Name, filter) {
			continue
		}
		fmt.Fprintf(out, "== %s\n", s.Name)
		start := time.Now()
		figs, err := s.Run(ctx, out)
		if err != nil {
			return res, order, fmt.Errorf("suite %s: %w", s.Name, err)
		}
		for _, f := range figs {
			mark := "ok"
			if !f.OK {
				mark = "MISSED"
			}
			if f.Target == "" {
				mark = ""
			}
			fmt.Fprintf(out, "   %-58s %12s %-8s %-12s %s\n", f.Name, formatValue(f.Value), f.Unit, f.Target, mark)
		}
		fmt.Fprintf(out, "   (%s in %.1fs)\n", s.Name, time.Since(start).Seconds())
		res[s.Name] = figs
		order = append(order, s.Name)
	}
	return res, order, nil
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
func WriteMarkdown(w io.Writer, res map[string][]Figure, order []string, when time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` on %s.\n\nMachine: %s\n\n", when.UTC().Format(time.RFC3339), Machine())
	for _, name := range order {
		fmt.Fprintf(&b, "## %s\n\n| figure | value | unit | target | met |\n|---|---:|---|---|---|\n", name)
		for _, f := range res[name] {
			met := "yes"
			if !f.OK {
				met = "**no**"
			}
			if f.Target == "" {
				met = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", f.Name, formatValue(f.Value), f.Unit, f.Target, met)
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
