package enforce

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAnalyticsDeps keeps enforcers small: the enforcement library must
// not import ClickHouse or chDB, directly or through a dependency.
func TestNoAnalyticsDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cordonhq/cordon/pkg/enforce").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages", len(deps))
	}
	for _, d := range deps {
		l := strings.ToLower(d)
		if strings.Contains(l, "clickhouse") || strings.Contains(l, "chdb") {
			t.Errorf("pkg/enforce depends on %s", d)
		}
	}
}
