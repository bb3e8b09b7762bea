package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
)

// scaleOutEvents is the usage the scale-out suite sends through each run.
const scaleOutEvents = 200_000

// ScaleOutSuite runs one, two and four auditor processes in lease mode on
// the same usage batches against a three-node cluster of nats-server
// processes and one ClickHouse (chDB behind the ClickHouse HTTP protocol,
// in its own process), then four with one killed by SIGKILL mid-run
// (faults.ScaleOut), and reports throughput, CPU per event per instance,
// and what each run lost, duplicated or raised differently from one
// instance.
func ScaleOutSuite() Suite {
	return Suite{Name: "scale-out: auditor instances", Run: runScaleOutSuite,
		Summary: "1, 2 and 4 auditor processes sharing the USAGE partitions by leases (3 nats-server processes, one ClickHouse), and 4 with one SIGKILLed: events/s, CPU µs per event per instance, rows and anomalies against one instance"}
}

func runScaleOutSuite(ctx context.Context, env Env) ([]Figure, error) {
	child, err := faults.SelfCommand()
	if err != nil {
		return nil, err
	}
	events := scaleOutEvents
	if env.Smoke {
		events = 5_000
	}
	dir, err := os.MkdirTemp("", "cordon-bench-scaleout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(env.Progress, "   scale-out: %d usage events, runs n1, n2, n4, n4+kill, each on a fresh 3-node cluster…\n", events)
	var rep *faults.ScaleOutReport
	err = faults.WithTB(ctx, "scale-out", env.Progress, func(tb testing.TB) error {
		var err error
		rep, err = faults.ScaleOut(ctx, tb, faults.ScaleOutOptions{Child: child, Events: events, Dir: dir, Progress: env.Progress,
			IdleWindow: env.dur(2*time.Second, 200*time.Millisecond)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("scale-out: %w", err)
	}
	var figs []Figure
	how := func(r *faults.ScaleOutRun) string {
		return fmt.Sprintf("%d events in %d batches; timer from starting the auditor processes to every instance caught up and every row in ClickHouse (so it includes their start-up, the hand-out of the leases and the publishing: events/s is a lower bound); CPU from /proc/<pid>/task/*/schedstat of each auditor process (ns) over its life (start-up and idle polling included; ClickHouse's process not included); baseline: the n1 run of the same suite", rep.Events, rep.Messages)
	}
	howWork := func(r *faults.ScaleOutRun) string {
		return fmt.Sprintf("%d events in %d batches; CPU from /proc/<pid>/task/*/schedstat of each auditor process (ns), from the moment every instance held its partitions and the first usage was published to its stop (idle polling while waiting included; ClickHouse's process not included), over the usage rows it wrote; a killed instance's CPU up to its kill; baseline: the n1 run of the same suite", rep.Events, rep.Messages)
	}
	const howNet = "as the row above, less each instance's idle CPU rate (measured over 2 s, from 1 s after every instance held its partitions, before any usage) times its wall time from the first usage to its stop: the CPU its events cost it"
	var base float64
	for _, r := range rep.Runs {
		p := "scale-out " + r.ScaleOutRunSpec.String() + ": "
		rate := float64(rep.Events) / r.Time.Seconds()
		if base == 0 {
			base = rate
		}
		var perInst, perInstWork, perInstNet, idle, evs []string
		var sum, sumWork, sumNet, n float64
		for _, i := range r.Instances {
			if i.Killed || i.Events == 0 {
				continue
			}
			us := float64(i.CPUPerEvent()) / float64(time.Microsecond)
			work := float64(i.WorkCPUPerEvent()) / float64(time.Microsecond)
			perInst = append(perInst, fmt.Sprintf("%.1f", us))
			net := float64(i.NetCPUPerEvent()) / float64(time.Microsecond)
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
			Figure{Name: p + "events/s (ratio to n1)", Value: rate, Unit: fmt.Sprintf("events/s (%.2f×)", rate/base), OK: true, How: how(r)},
			Figure{Name: p + "CPU per event, mean of the surviving instances' own (each: " + fmt.Sprint(perInst) + ")", Value: sum / max(n, 1), Unit: "µs", OK: true, How: how(r)},
			Figure{Name: p + "CPU per event from the first usage on (start-up excluded), mean of the surviving instances' own (each: " + fmt.Sprint(perInstWork) + ")", Value: sumWork / max(n, 1), Unit: "µs", OK: true, How: howWork(r)},
			Figure{Name: p + "CPU per event, start-up and idling excluded, mean of the surviving instances' own (each: " + fmt.Sprint(perInstNet) + "; idle ms of CPU per s: " + fmt.Sprint(idle) + "; events: " + fmt.Sprint(evs) + ")", Value: sumNet / max(n, 1), Unit: "µs", OK: true, How: howNet},
			Figure{Name: p + "CPU per event, all auditor processes together", Value: float64(r.CPUPerEvent(rep.Events)) / float64(time.Microsecond), Unit: "µs", OK: true, How: how(r)},
			Figure{Name: p + "CPU per event, start-up and idling excluded, all auditor processes together (their CPU over their events)", Value: float64(r.NetCPUPerEvent()) / float64(time.Microsecond), Unit: "µs", OK: true, How: howNet + "; summed over the instances, a killed one included, and divided by the rows they wrote"},
			Figure{Name: p + "events lost + written twice", Value: float64(r.Lost + r.Duplicates), Unit: "events", Target: "0", OK: r.Lost == 0 && r.Duplicates == 0},
			Figure{Name: p + "rows and anomalies differing from n1 (foreign + missing rows, missed + extra anomalies)", Value: float64(r.Foreign + r.Missing + uint64(len(r.MissedAnomalies)+len(r.ExtraAnomalies))), Unit: "", Target: "0",
				OK: r.Foreign+r.Missing == 0 && len(r.MissedAnomalies)+len(r.ExtraAnomalies) == 0},
		)
		if r.Kill {
			figs = append(figs, Figure{Name: p + "victim's partitions taken over (" + fmt.Sprint(r.VictimPartitions) + ")", Value: map[bool]float64{true: 1}[r.Reowned], Unit: "yes=1", Target: "1", OK: r.Reowned && r.MidRun})
		}
	}
	return figs, nil
}
