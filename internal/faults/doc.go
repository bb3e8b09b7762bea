// Package faults breaks Cordon on purpose and measures what survives. It
// holds the harnesses shared by the tests of this package and by the
// fault-tolerance bench suite (internal/bench, cmd/cordon-bench):
//
//   - NodeLoss: a three-process NATS cluster (internal/natscluster) with
//     the issuer, the revoker and two fail-closed enforcers running
//     in-process while one node (a victim of Victims: the meta leader, a
//     stream leader, the enforcers' node, all leaders at once) is killed
//     with SIGKILL and restarted; no revoked token may be allowed past the
//     staleness bound, every decision must have its usage event exactly
//     once, every acknowledged ledger event and denylist entry must be on
//     every node afterwards, and Check must never wait on the network.
//   - AuditorChaos: usage events flow into JetStream while auditor
//     processes (a JetStream consumer, chDB at one data path, detectors with
//     a state directory) are killed with SIGKILL and restarted, one at a
//     time; ClickHouse must end with every event exactly once and the same
//     anomalies as an uninterrupted run over the same events.
//   - ScaleOut: a three-node cluster per run, one child owning chDB behind
//     the ClickHouse HTTP interface (internal/chshim) and N auditor
//     children on it; the same usage with every N (1, 2, 4, 4 with one
//     SIGKILLed) must give the same rows and anomalies, and the victim's
//     partitions new owners. Several instances need the auditor's lease
//     mode (PartitionedAuditor).
//
// The auditor children are real processes — a kill is a crash, with no
// deferred cleanup — started by re-executing a binary that calls
// ChildMain first thing: the test binary of this package (its TestMain) or
// cordon-bench (its main). The shipped cordon binary links none of this
// (cmd/cordon's dependency test keeps it so). chDB keeps one session per process at one
// data path, so only one child opens the chDB path at a time and the
// parent reads the results through a query child as well.
package faults
