// Command cordon is Cordon's single binary: every service (cordon up runs
// them all in one process), the enforcing proxy, and the operator CLI. The
// benchmarks and their fault-injection children live in cmd/cordon-bench:
// nothing here links a test harness (harness_deps_test.go).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cordonhq/cordon/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
