package faults_test

import (
	"os"
	"testing"

	"github.com/cordonhq/cordon/internal/faults"
)

// TestMain lets the harness re-execute this test binary as an auditor or
// query child: with faults.EnvChild set, ChildMain runs the child and
// exits before any test runs.
func TestMain(m *testing.M) {
	faults.ChildMain()
	os.Exit(m.Run())
}
