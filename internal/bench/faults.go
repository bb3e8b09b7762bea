package bench

import (
	"context"
	"fmt"

	"github.com/cordonhq/cordon/internal/faults"
)

// Scale of the fault suite.
const (
	faultsEvents = 200_000
	faultsKills  = 6
)

// FaultsSuite kills things and counts what is lost: auditor
// processes killed with SIGKILL while 200,000 usage events flow, compared
// with an uninterrupted run (a NATS node killed under the services is
// NodeLossSuite). The auditor children
// re-execute the running binary, whose main must call faults.ChildMain
// (cmd/cordon-bench does; faults.SelfCommand refuses a binary that does
// not).
func FaultsSuite() Suite {
	return Suite{Name: "fault tolerance", Summary: "auditor processes killed with SIGKILL: what is lost, how long it takes", Run: runFaultsSuite}
}

func runFaultsSuite(ctx context.Context, env Env) ([]Figure, error) {
	progress := env.Progress
	child, err := faults.SelfCommand()
	if err != nil {
		return nil, err
	}
	events, kills := env.size(faultsEvents, 3000), env.size(faultsKills, 1)
	fmt.Fprintf(progress, "   auditor kill -9: %d usage events, %d kills…\n", events, kills)
	ch, err := faults.AuditorChaos(ctx, faults.AuditorChaosOptions{Child: child, Events: events, Kills: kills, Progress: progress})
	if err != nil {
		return nil, fmt.Errorf("auditor kill -9: %w", err)
	}
	zero := func(name string, v int, unit string) Figure {
		return Figure{Name: name, Value: float64(v), Unit: unit, Target: "0", OK: v == 0}
	}
	figs := []Figure{
		{Name: "auditor kill -9: usage events sent", Value: float64(ch.Events), Unit: "events", OK: true},
		{Name: "auditor kill -9: auditor kills (SIGKILL)", Value: float64(ch.Kills), Unit: "kills", Target: fmt.Sprintf("≥ %d", kills), OK: ch.Kills >= kills},
		{Name: "auditor kill -9: kills with unacknowledged events", Value: float64(ch.KillsMidBatch), Unit: "kills", OK: true},
		{Name: "auditor kill -9: rows in ClickHouse", Value: float64(ch.Chaos.Rows), Unit: "rows", Target: fmt.Sprintf("= %d", ch.Events), OK: ch.Chaos.Rows == uint64(ch.Events)},
		zero("auditor kill -9: rows lost", ch.Lost, "rows"),
		zero("auditor kill -9: duplicates", ch.Duplicates, "rows"),
		{Name: "auditor kill -9: rows written twice (collapsed), at least", Value: float64(ch.Chaos.RawRows - ch.Chaos.Rows), Unit: "rows", OK: true},
		{Name: "auditor kill -9: anomalies in the uninterrupted run", Value: float64(len(ch.Reference.Anomalies)), Unit: "anomalies", OK: true},
		zero("auditor kill -9: anomalies missed", len(ch.MissedAnomalies), "anomalies"),
		zero("auditor kill -9: anomalies not in the uninterrupted run", len(ch.ExtraAnomalies), "anomalies"),
		{Name: "auditor kill -9: wall time, first event to last row", Value: ch.ChaosTime.Seconds(), Unit: "s", OK: true},
	}
	fmt.Fprintf(progress, "   %s\n", ch)

	return figs, nil
}
