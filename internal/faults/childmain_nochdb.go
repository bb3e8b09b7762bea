//go:build nochdb

package faults

import (
	"fmt"
	"os"
)

// ChildMain turns the process into a fault child when EnvChild is set. The
// nochdb build has no ClickHouse engine to run an auditor child with: it
// reports that and exits. Without EnvChild it returns at once.
func ChildMain() {
	childMainCalled.Store(true)
	role := os.Getenv(EnvChild)
	if role == "" {
		return
	}
	fmt.Fprintf(os.Stderr, "fault child %s: this cordon was built with -tags nochdb and has no chDB\n", role)
	os.Exit(2)
}
