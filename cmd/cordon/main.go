// Command cordon is Cordon's single binary: every service (cordon up runs
// them all in one process), the enforcing proxy, and the operator CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cordonhq/cordon/internal/cli"
	"github.com/cordonhq/cordon/internal/faults"
)

func main() {
	faults.ChildMain() // a fault-injection child of cordon bench runs here and exits
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
