package bench

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
)

// Scale of the fault suite.
const (
	faultsEvents = 200_000
	faultsKills  = 6
)

// FaultsSuite kills things and counts what is lost: auditor
// processes killed with SIGKILL while 200,000 usage events flow, compared
// with an uninterrupted run; and a node of a three-node NATS cluster
// killed while tokens are issued, used and revoked. The auditor children
// re-execute the running binary, whose main must call faults.ChildMain
// (cmd/cordon-bench does; faults.SelfCommand refuses a binary that does
// not).
func FaultsSuite() Suite {
	return Suite{Name: "fault tolerance", Summary: "auditor processes and a NATS node killed: what is lost, how long it takes", Run: runFaultsSuite}
}

func runFaultsSuite(ctx context.Context, progress io.Writer) ([]Figure, error) {
	child, err := faults.SelfCommand()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "   auditor kill -9: %d usage events, %d kills…\n", faultsEvents, faultsKills)
	ch, err := faults.AuditorChaos(ctx, faults.AuditorChaosOptions{Child: child, Events: faultsEvents, Kills: faultsKills, Progress: progress})
	if err != nil {
		return nil, fmt.Errorf("auditor kill -9: %w", err)
	}
	zero := func(name string, v int, unit string) Figure {
		return Figure{Name: name, Value: float64(v), Unit: unit, Target: "0", OK: v == 0}
	}
	figs := []Figure{
		{Name: "auditor kill -9: usage events sent", Value: float64(ch.Events), Unit: "events", OK: true},
		{Name: "auditor kill -9: auditor kills (SIGKILL)", Value: float64(ch.Kills), Unit: "kills", Target: fmt.Sprintf("≥ %d", faultsKills), OK: ch.Kills >= faultsKills},
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

	fmt.Fprintf(progress, "   node loss: three-node cluster, issuer, revoker, two enforcers…\n")
	var nl *faults.NodeLossReport
	err = faults.WithTB(ctx, "node-loss", progress, func(tb testing.TB) error {
		var err error
		nl, err = faults.NodeLoss(ctx, tb, faults.NodeLossOptions{Progress: progress})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node loss: %w", err)
	}
	fmt.Fprintf(progress, "   %s\n", nl)
	bound := nl.PropagationBound
	figs = append(figs,
		Figure{Name: "node loss: nodes killed (SIGKILL)", Value: float64(nl.NodesKilled), Unit: "nodes", OK: true},
		Figure{Name: "node loss: issuances and revocations acknowledged", Value: float64(nl.Issued + nl.Revoked), Unit: "events", OK: true},
		zero("node loss: acknowledged events lost (ledger, deny, usage)", nl.AcknowledgedLost, "events"),
		Figure{Name: "node loss: ledger unavailable (longest issuance gap)", Value: nl.IssueGap.Seconds(), Unit: "s", OK: true},
		Figure{Name: "node loss: slowest decision", Value: Millis(nl.CheckMax), Unit: "ms", Target: "≤ 50 ms", OK: nl.CheckMax <= 50*time.Millisecond},
		zero("node loss: live tokens denied", nl.GoodDenied, "decisions"),
		zero("node loss: revoked tokens allowed after a deny", nl.RevokedAllowed, "decisions"),
		Figure{Name: "node loss: revocation → denied by both enforcers, worst", Value: nl.PropagationMax.Seconds(), Unit: "s",
			Target: fmt.Sprintf("≤ %.0f s", bound.Seconds()), OK: nl.PropagationMax <= bound},
		zero(fmt.Sprintf("node loss: revoked tokens allowed > %.0f s after revoking", bound.Seconds()), nl.RevokedAllowedLate, "decisions"),
		Figure{Name: "node loss: usage events the enforcers gave up on", Value: float64(nl.UsageFailed), Unit: "events", OK: true},
		Figure{Name: "node loss: restart → replicas current", Value: nl.Heal.Seconds(), Unit: "s", OK: true},
	)
	return figs, nil
}
