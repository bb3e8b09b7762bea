// Command cordon-bench measures Cordon's latency, throughput and memory on
// this machine and writes them to a results file (make bench writes
// BENCHMARKS.md). It is a development tool kept apart from the shipped
// cordon binary: it links the benchmark and fault-injection harnesses, and
// its fault-tolerance suite re-executes this binary as auditor and query
// child processes, and its memory suite as a fresh measuring process,
// which is why faults.ChildMain and bench.ChildMain run first.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cordonhq/cordon/internal/bench"
	"github.com/cordonhq/cordon/internal/faults"
)

func main() {
	faults.ChildMain() // a fault-injection child of this binary runs here and exits
	bench.ChildMain()  // so does a measuring child (the memory suite)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
