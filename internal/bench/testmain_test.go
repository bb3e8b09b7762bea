package bench

import (
	"os"
	"testing"

	"github.com/cordonhq/cordon/internal/faults"
)

// TestMain lets the suites re-execute this test binary as their children:
// the memory suite's (ChildMain) and the fault suite's auditors and
// queries (faults.ChildMain), as cordon-bench's main does.
func TestMain(m *testing.M) {
	faults.ChildMain()
	ChildMain()
	code := m.Run()
	removeSharedChDB()
	os.Exit(code)
}
