package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
)

// scaleOutEvents is the usage the scale-out suite sends through each run.
const scaleOutEvents = 200_000

// scaleOutBacklogEvents is the usage of each backlog run: a catch-up of
// 200,000 events lasts two seconds, in which what an instance pays per
// run (resuming, the last write, the harness's polling) is a tenth of
// its CPU; over 600,000 events, a thirtieth.
const scaleOutBacklogEvents = 600_000

// ScaleOutSuite runs one, two and four auditor processes in lease mode on
// the same usage batches against a three-node cluster of nats-server
// processes and one ClickHouse (chDB behind the ClickHouse HTTP protocol,
// in its own process), then four with one killed by SIGKILL mid-run
// (faults.ScaleOut); then one, two and four catching up the same usage
// as a backlog (stopped while it is published, partitions given by
// --partitions). It reports throughput, CPU per event per instance and its
// ratio to one instance's, and what each run lost, duplicated or raised
// differently from one instance.
func ScaleOutSuite() Suite {
	return Suite{Name: "scale-out: auditor instances", Run: runScaleOutSuite,
		Summary: "1, 2 and 4 auditor processes sharing the USAGE partitions by leases (3 nats-server processes, one ClickHouse), 4 with one SIGKILLed, and 1, 2 and 4 catching up a backlog: events/s, CPU µs per event per instance against one instance's, rows and anomalies against one instance"}
}

// scaleOutRuns are the suite's live runs, and scaleOutBacklogRuns its
// backlog runs: one, two and four instances three times each, interleaved
// (this VM's speed drifts by a sixth within a minute: one run of each
// cannot be compared).
var (
	scaleOutRuns        = []faults.ScaleOutRunSpec{{Instances: 1}, {Instances: 2}, {Instances: 4}, {Instances: 4, Kill: true}}
	scaleOutBacklogRuns = []faults.ScaleOutRunSpec{
		{Instances: 1, Backlog: true}, {Instances: 2, Backlog: true}, {Instances: 4, Backlog: true},
		{Instances: 4, Backlog: true}, {Instances: 2, Backlog: true}, {Instances: 1, Backlog: true},
		{Instances: 1, Backlog: true}, {Instances: 2, Backlog: true}, {Instances: 4, Backlog: true},
	}
)

// flatBound is how far above one instance's CPU per event the instances
// of a larger run may be, together, for the cost to count as flat.
const flatBound = 1.10

func runScaleOutSuite(ctx context.Context, env Env) ([]Figure, error) {
	child, err := faults.SelfCommand()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cordon-bench-scaleout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var profiles string
	if env.CPUProfile != "" {
		if profiles, err = os.MkdirTemp(filepath.Dir(env.CPUProfile+".x"), filepath.Base(env.CPUProfile)+".scaleout-"); err != nil {
			return nil, err
		}
		fmt.Fprintf(env.Progress, "   scale-out: every auditor process writes a CPU profile to %s\n", profiles)
	}
	var reps [2]*faults.ScaleOutReport
	for i, set := range []struct {
		runs   []faults.ScaleOutRunSpec
		events int
	}{{scaleOutRuns, env.size(scaleOutEvents, 5_000)}, {scaleOutBacklogRuns, env.size(scaleOutBacklogEvents, 5_000)}} {
		fmt.Fprintf(env.Progress, "   scale-out: %d usage events, runs %v, each on a fresh 3-node cluster…\n", set.events, set.runs)
		sub, err := os.MkdirTemp(dir, "set-")
		if err != nil {
			return nil, err
		}
		err = faults.WithTB(ctx, "scale-out", env.Progress, func(tb testing.TB) error {
			var err error
			reps[i], err = faults.ScaleOut(ctx, tb, faults.ScaleOutOptions{Child: child, Events: set.events, Dir: sub, Progress: env.Progress,
				Runs: set.runs, CPUProfiles: profiles, IdleWindow: env.dur(2*time.Second, 200*time.Millisecond)})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("scale-out: %w", err)
		}
	}
	return append(scaleOutFigures(reps[0]), backlogFigures(reps[1], env.Smoke)...), nil
}

// scaleOutFigures are the figures of the live runs: each against the
// first.
func scaleOutFigures(rep *faults.ScaleOutReport) []Figure {
	how := func(base *faults.ScaleOutRun) string {
		return fmt.Sprintf("%d events in %d batches; timer from starting the auditor processes to every instance caught up and every row in ClickHouse (so it includes their start-up, the hand-out of the leases and the publishing: events/s is a lower bound); CPU from /proc/<pid>/task/*/schedstat of each auditor process (ns) over its life (start-up and idle polling included; ClickHouse's process not included); baseline: the %s run of the same suite", rep.Events, rep.Messages, base.ScaleOutRunSpec)
	}
	howWork := fmt.Sprintf("%d events in %d batches; CPU from /proc/<pid>/task/*/schedstat of each auditor process (ns), from the moment every instance held its partitions and the first usage was published to its stop (idle polling while waiting included; ClickHouse's process not included), over the usage rows it wrote; a killed instance's CPU up to its kill; baseline: the n1 run", rep.Events, rep.Messages)
	const howNet = "as the row above, less each instance's idle CPU rate (measured over 2 s, from 1 s after every instance held its partitions, before any usage) times its wall time from the first usage to its stop: the CPU its events cost it"
	var figs []Figure
	var base *faults.ScaleOutRun
	var baseRate, baseWorkRate float64
	for _, r := range rep.Runs {
		workRate := float64(rep.Events) / r.WorkTime.Seconds()
		if base == nil {
			base = r
			baseRate, baseWorkRate = float64(rep.Events)/r.Time.Seconds(), workRate
		}
		p := "scale-out " + r.ScaleOutRunSpec.String() + ": "
		rate, rateHow := float64(rep.Events)/r.Time.Seconds(), how(base)
		var perInst, perInstWork, perInstNet, idle, evs []string
		var sum, sumWork, sumNet, n float64
		for _, i := range r.Instances {
			if i.Killed || i.Events == 0 {
				continue
			}
			us := float64(i.CPUPerEvent()) / float64(time.Microsecond)
			work := float64(i.WorkCPUPerEvent()) / float64(time.Microsecond)
			net := float64(i.NetCPUPerEvent()) / float64(time.Microsecond)
			perInst = append(perInst, fmt.Sprintf("%.1f", us))
			perInstWork = append(perInstWork, fmt.Sprintf("%.1f", work))
			perInstNet = append(perInstNet, fmt.Sprintf("%.1f", net))
			idle = append(idle, fmt.Sprintf("%.0f", 1000*i.IdleRate))
			evs = append(evs, fmt.Sprint(i.Events))
			sum += us
			sumWork += work
			sumNet += net
			n++
		}
		figs = append(figs,
			Figure{Name: p + "events/s (ratio to " + base.ScaleOutRunSpec.String() + ")", Value: rate, Unit: fmt.Sprintf("events/s (%.2f×)", rate/baseRate), OK: true, How: rateHow},
			Figure{Name: p + "events/s from the first usage published (ratio to " + base.ScaleOutRunSpec.String() + ")", Value: workRate, Unit: fmt.Sprintf("events/s (%.2f×)", workRate/baseWorkRate), OK: true,
				How: "as the row above, the timer started when every instance held its partitions and the first usage was published (start-up, the hand-out of the leases and the idle window excluded); publishing paces it"},
			Figure{Name: p + "CPU per event, mean of the surviving instances' own (each: " + fmt.Sprint(perInst) + ")", Value: sum / max(n, 1), Unit: "µs", OK: true, How: how(base)},
			Figure{Name: p + "CPU per event from the first usage on (start-up excluded), mean of the surviving instances' own (each: " + fmt.Sprint(perInstWork) + ")", Value: sumWork / max(n, 1), Unit: "µs", OK: true, How: howWork},
			Figure{Name: p + "CPU per event, start-up and idling excluded, mean of the surviving instances' own (each: " + fmt.Sprint(perInstNet) + "; idle ms of CPU per s: " + fmt.Sprint(idle) + "; events: " + fmt.Sprint(evs) + ")", Value: sumNet / max(n, 1), Unit: "µs", OK: true, How: howNet},
			Figure{Name: p + "CPU per event, all auditor processes together", Value: float64(r.CPUPerEvent(rep.Events)) / float64(time.Microsecond), Unit: "µs", OK: true, How: how(base)},
			Figure{Name: p + "CPU per event, start-up and idling excluded, all auditor processes together (their CPU over their events)", Value: float64(r.NetCPUPerEvent()) / float64(time.Microsecond), Unit: "µs", OK: true, How: howNet + "; summed over the instances, a killed one included, and divided by the rows they wrote"},
		)
		if r != base && !r.Kill {
			ratio := float64(r.NetCPUPerEvent()) / float64(max(base.NetCPUPerEvent(), 1))
			f := Figure{Name: p + "per-instance CPU per event against " + base.ScaleOutRunSpec.String() + "'s (start-up and idling excluded, their CPU over their events)",
				Value: ratio, Unit: "×", OK: true,
				How: "the row above divided by the same figure of " + base.ScaleOutRunSpec.String() + ", measured in the same suite minutes apart; this VM's speed drifts by up to half between sittings, so compare sittings with care"}
			f.Name = p + "per-instance CPU per event against " + base.ScaleOutRunSpec.String() + "'s, each instance at 1/" + fmt.Sprint(r.ScaleOutRunSpec.Instances) + " of the load (start-up and idling excluded, their CPU over their events)"
			f.How += "; live, the publishing paces every run alike, so each instance reads 1/n of the messages at 1/n of the rate and handles fewer events per wake-up: this is the cost of running instances below their capacity; the backlog runs' ratio is what an instance costs per event"
			figs = append(figs, f)
		}
		figs = append(figs,
			Figure{Name: p + "events lost + written twice", Value: float64(r.Lost + r.Duplicates), Unit: "events", Target: "0", OK: r.Lost == 0 && r.Duplicates == 0},
			Figure{Name: p + "rows and anomalies differing from n1 (foreign + missing rows, missed + extra anomalies)", Value: float64(r.Foreign + r.Missing + uint64(len(r.MissedAnomalies)+len(r.ExtraAnomalies))), Unit: "", Target: "0",
				OK: r.Foreign+r.Missing == 0 && len(r.MissedAnomalies)+len(r.ExtraAnomalies) == 0},
		)
		if r.Kill {
			figs = append(figs, Figure{Name: p + "victim's partitions taken over (" + fmt.Sprint(r.VictimPartitions) + ")", Value: map[bool]float64{true: 1}[r.Reowned], Unit: "yes=1", Target: "1", OK: r.Reowned && r.MidRun})
		}
	}
	return figs
}

// backlogFigures sum the backlog runs up by instance count: the median of
// each count's runs, and its ratio to the first count's median.
func backlogFigures(rep *faults.ScaleOutReport, smoke bool) []Figure {
	runs := rep.Runs
	how := fmt.Sprintf("%d events in %d batches; the instances (partition p run by instance p mod n, --partitions) were started on the empty stream and watched idle for 2 s, stopped with SIGSTOP, every message was published, and they were resumed with SIGCONT: timer from the resumption to every instance caught up and every row in ClickHouse; CPU from /proc/<pid>/task/*/schedstat of each auditor process (ns) from the resumption to its stop, less its idle CPU rate times that wall time, summed over the instances and divided by the rows they wrote; the median of the runs of each instance count, the runs interleaved (%s)", rep.Events, rep.Messages, specs(runs))
	type agg struct {
		cpu, rate []float64
		bad       uint64
	}
	by := map[int]*agg{}
	var counts []int
	for _, r := range runs {
		n := r.ScaleOutRunSpec.Instances
		a := by[n]
		if a == nil {
			a = &agg{}
			by[n] = a
			counts = append(counts, n)
		}
		a.cpu = append(a.cpu, float64(r.NetCPUPerEvent())/float64(time.Microsecond))
		a.rate = append(a.rate, float64(rep.Events)/r.WorkTime.Seconds())
		a.bad += uint64(r.Lost+r.Duplicates) + r.Foreign + r.Missing + uint64(len(r.MissedAnomalies)+len(r.ExtraAnomalies))
	}
	var figs []Figure
	var baseCPU, baseRate float64
	for _, n := range counts {
		a := by[n]
		cpu, rate := median(a.cpu), median(a.rate)
		if baseCPU == 0 {
			baseCPU, baseRate = cpu, rate
		}
		p := fmt.Sprintf("scale-out n%d+backlog, %d runs: ", n, len(a.cpu))
		figs = append(figs,
			Figure{Name: p + "events/s catching up, median (each: " + fmtEach(a.rate, "%.0f") + ")", Value: rate, Unit: fmt.Sprintf("events/s (%.2f×)", rate/baseRate), OK: true, How: how},
			Figure{Name: p + "CPU per event, start-up and idling excluded, their CPU over their events, median (each: " + fmtEach(a.cpu, "%.2f") + ")", Value: cpu, Unit: "µs", OK: true, How: how},
		)
		if n != counts[0] {
			ratio := cpu / baseCPU
			figs = append(figs, Figure{Name: p + fmt.Sprintf("per-instance CPU per event against n%d+backlog's (medians)", counts[0]), Value: ratio, Unit: "×",
				Target: fmt.Sprintf("≤ %.2f× (flat)", flatBound), OK: smoke || ratio <= flatBound, How: "the row above divided by the same figure of one instance: at capacity, what an instance costs per event"})
		}
		figs = append(figs, Figure{Name: p + "events lost, written twice, or rows and anomalies differing from the first n1+backlog run, over the runs", Value: float64(a.bad), Target: "0", OK: a.bad == 0})
	}
	return figs
}

// fmtEach formats every value with format, in brackets.
func fmtEach(vs []float64, format string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprintf(format, v)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// median is the middle of vs (the lower middle of an even count).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// specs names the runs in order.
func specs(runs []*faults.ScaleOutRun) string {
	names := make([]string, len(runs))
	for i, r := range runs {
		names[i] = r.ScaleOutRunSpec.String()
	}
	return strings.Join(names, ", ")
}
