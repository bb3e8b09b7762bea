package bench

import (
	"context"
	"os"
	"testing"
)

// TestEnforceSuite runs the enforce suite once and checks it produces its
// figures (the targets are judged by make bench, not here).
func TestEnforceSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark suite")
	}
	figs, err := EnforceSuite().Run(context.Background(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) < 10 {
		t.Fatalf("%d figures", len(figs))
	}
	for _, f := range figs {
		t.Logf("%-55s %10.3f %-6s %-8s ok=%v", f.Name, f.Value, f.Unit, f.Target, f.OK)
		if f.Value < 0 && f.Unit != "ms" {
			t.Errorf("%s: negative %v", f.Name, f.Value)
		}
	}
}
