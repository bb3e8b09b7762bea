package simulate_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSimulatorIndependentOfDetectors keeps the evaluation honest: the
// simulator — its code and its tests — must not import the detectors (nor
// the auditor that embeds them), so that no attack and no benign drift can
// be built from a detector's threshold.
func TestSimulatorIndependentOfDetectors(t *testing.T) {
	for _, args := range [][]string{
		{"list", "-deps", "github.com/cordonhq/cordon/pkg/simulate"},
		{"list", "-deps", "-test", "github.com/cordonhq/cordon/pkg/simulate"},
	} {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go %s returned %d packages", strings.Join(args, " "), len(deps))
		}
		for _, d := range deps {
			for _, banned := range []string{"/pkg/detect", "/services/auditor", "/pkg/response"} {
				if strings.HasPrefix(d, "github.com/cordonhq/cordon"+banned) {
					t.Errorf("go %s: pkg/simulate depends on %s", strings.Join(args, " "), d)
				}
			}
		}
	}
}
