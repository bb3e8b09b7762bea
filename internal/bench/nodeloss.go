package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/faults"
)

// nodeLossVictims are the victims the node-loss suite measures: the worst
// node to lose (meta leader and leader of TOKENS, KV_denylist and USAGE,
// host of the denylist watches) and the node both enforcers are
// connected to.
var nodeLossVictims = []string{faults.VictimAllLeaders, faults.VictimEnforcerNode}

// nodeLossOutage is how long the victim stays down: longer than a
// JetStream leader election (4–9 s).
const nodeLossOutage = 10 * time.Second

// NodeLossSuite kills a node of a three-node cluster of nats-server
// processes (separate processes, clients over loopback TCP, every stream
// and bucket R3) with SIGKILL for 10 seconds while the issuer, the
// revoker and two enforcers (fail-closed, 2s staleness bound) run
// in-process with a workload — an issuance every 20ms, a revocation every
// 80ms, each enforcer asked about a random token every 2ms and about
// every revocation in flight every 2ms — and reports how revocation,
// enforcement, usage and issuance fared (faults.NodeLoss).
func NodeLossSuite() Suite {
	return Suite{Name: "fault tolerance: node loss", Run: runNodeLossSuite,
		Summary: "a node of three nats-server processes (TCP) killed with SIGKILL: revocation propagation, fail-closed window, late allows, usage lost, issuance gap"}
}

func runNodeLossSuite(ctx context.Context, env Env) ([]Figure, error) {
	progress := env.Progress
	var figs []Figure
	victims, outage := nodeLossVictims, nodeLossOutage
	opts := faults.NodeLossOptions{Outage: outage, Progress: progress}
	if env.Smoke {
		victims = victims[:1]
		opts.Before, opts.Outage, opts.After = 500*time.Millisecond, 3*time.Second, time.Second
	}
	for _, victim := range victims {
		fmt.Fprintf(progress, "   node loss (%s): three nats-server processes over TCP, issuer, revoker, two fail-closed enforcers…\n", victim)
		var rep *faults.NodeLossReport
		err := faults.WithTB(ctx, "node-loss-"+victim, progress, func(tb testing.TB) error {
			var err error
			o := opts
			o.Victim = victim
			rep, err = faults.NodeLoss(ctx, tb, o)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("node loss (%s): %w", victim, err)
		}
		fmt.Fprintf(progress, "   %s\n", rep)
		figs = append(figs, nodeLossFigures(victim, opts.Outage, rep)...)
	}
	return figs, nil
}

// propagationTarget is the issue's target for revocations during a node
// loss: through the broadcast, p99 within 100ms.
const propagationTarget = 100 * time.Millisecond

// nodeLossFigures turns one run's report into figures named for what
// they measure.
func nodeLossFigures(victim string, outage time.Duration, r *faults.NodeLossReport) []Figure {
	p := "node loss, " + victim + ": "
	zero := func(name string, v uint64, unit string) Figure {
		return Figure{Name: p + name, Value: float64(v), Unit: unit, Target: "0", OK: v == 0}
	}
	info := func(name string, v float64, unit string) Figure {
		return Figure{Name: p + name, Value: v, Unit: unit, OK: true}
	}
	how := func(d faults.Distribution) string {
		return fmt.Sprintf("timer from the Revoke call (or its return) to the later of the two enforcers' first 'revoked' decision; n=%d revocations during the outage", d.N)
	}
	// dist gives the median and the tail: the p99 when there are enough
	// revocations for one (MinSamples), else the maximum, labelled so.
	dist := func(what string, d faults.Distribution, target bool) []Figure {
		tail := Figure{Name: p + what + ", p99", Value: Millis(d.P99), Unit: "ms", OK: true, How: how(d)}
		if d.N < MinSamples(99) {
			tail.Name, tail.Value = fmt.Sprintf("%s%s, max (n=%d)", p, what, d.N), Millis(d.Max)
		}
		if target {
			tail.Target = fmt.Sprintf("≤ %.0f ms", Millis(propagationTarget))
			if d.N < MinSamples(99) {
				tail.OK = d.N > 0 && d.Max <= propagationTarget
			} else {
				tail.OK = d.P99 <= propagationTarget
			}
		}
		figs := []Figure{{Name: p + what + ", p50", Value: Millis(d.P50), Unit: "ms", OK: true, How: how(d)}, tail}
		if d.N >= MinSamples(99) {
			figs = append(figs, Figure{Name: p + what + ", max", Value: Millis(d.Max), Unit: "ms", OK: true, How: how(d)})
		}
		return figs
	}
	var closedTotal, closedLongest time.Duration
	for _, w := range r.FailClosed {
		closedTotal, closedLongest = max(closedTotal, w.Total), max(closedLongest, w.Longest)
	}
	var usageFailed uint64
	for _, u := range r.Usage {
		usageFailed += u.Failed + u.Dropped + u.SpoolDropped
	}
	figs := []Figure{
		info("victim killed (SIGKILL) and kept down for (3 nats-server processes over loopback TCP, R3; beside it: an issuance every 20 ms, a revocation every 80 ms, each enforcer asked every 2 ms)", outage.Seconds(), "s"),
		info("revocations requested during the outage (sample of the next lines)", float64(r.OutagePropFromRequest.N), "revocations"),
	}
	figs = append(figs, dist("during the outage, Revoke call start → both enforcers' first 'revoked' decision", r.OutagePropFromRequest, true)...)
	figs = append(figs, dist("during the outage, Revoke returned → both enforcers' first 'revoked' decision", r.OutagePropFromAck, true)...)
	figs = append(figs,
		wholeRun(p, r.PropFromRequest),
		info("fail-closed window, longest stretch of denylist_stale decisions (worse enforcer)", closedLongest.Seconds(), "s"),
		info("fail-closed window, total over the run (worse enforcer)", closedTotal.Seconds(), "s"),
		zero(fmt.Sprintf("decisions allowing a revoked token > %v after Revoke returned", r.MaxStaleness), uint64(r.RevokedAllowedLate), "decisions"),
		zero("decisions allowing a token after that enforcer denied it as revoked", uint64(r.RevokedAllowed), "decisions"),
		zero("live tokens denied for another reason than denylist_stale", uint64(r.LiveDeniedOther), "decisions"),
		zero("acknowledged revocations never denied by both enforcers", uint64(r.Unpropagated), "revocations"),
		zero("usage events lost (decisions without their event in USAGE)", r.UsageLost, "events"),
		zero("usage events duplicated in USAGE", r.UsageDuplicated, "events"),
		zero("usage events dropped or given up on by the enforcers", usageFailed, "events"),
		zero("acknowledged ledger events and denylist entries lost", uint64(r.AcknowledgedLost), "events"),
		zero("decisions over 1 s (Check waited on the network)", uint64(r.SlowChecks), "decisions"),
		Figure{Name: p + "slowest decision", Value: Millis(r.CheckMax), Unit: "ms", Target: "≤ 50 ms", OK: r.CheckMax <= 50*time.Millisecond},
		info("longest time between two acknowledged issuances", r.IssueGap.Seconds(), "s"),
	)
	resume := Figure{Name: p + "TOKENS led again (polled every 25 ms) → first issuance acknowledged", Value: r.IssueResume.Seconds(), Unit: "s",
		Target: "≤ 1 s", OK: r.IssueResume >= 0 && r.IssueResume <= time.Second}
	if r.IssueResume < 0 {
		// The harness's -1 means it never saw it: say so, not "-0.000 s".
		resume.Name, resume.Value = resume.Name+" (-1: not seen before the run ended)", -1
	}
	return append(figs, resume, info("restart → every replica current", r.Heal.Seconds(), "s"))
}

// wholeRun is the whole run's propagation tail: its p99 when there are
// enough revocations for one, else its maximum, labelled so.
func wholeRun(p string, d faults.Distribution) Figure {
	if d.N < MinSamples(99) {
		return Figure{Name: fmt.Sprintf("%swhole run, Revoke call start → both deny as revoked, max (n=%d)", p, d.N), Value: Millis(d.Max), Unit: "ms", OK: true}
	}
	return Figure{Name: fmt.Sprintf("%swhole run, Revoke call start → both deny as revoked, p99 (n=%d)", p, d.N), Value: Millis(d.P99), Unit: "ms", OK: true}
}
