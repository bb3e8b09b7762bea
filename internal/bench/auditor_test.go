package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestAuditorSuite runs the auditor suite once at full size and checks it
// produces its figures (the targets are judged by make bench, not here).
func TestAuditorSuite(t *testing.T) {
	if testing.Short() || os.Getenv("CORDON_BENCH_AUDITOR") == "" {
		t.Skip("benchmark suite (about 2 minutes): set CORDON_BENCH_AUDITOR=1 to run it")
	}
	figs, err := AuditorSuite().Run(context.Background(), Env{Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) < 14 {
		t.Fatalf("%d figures", len(figs))
	}
	for _, f := range figs {
		t.Logf("%-62s %12.3f %-9s %-10s ok=%v", f.Name, f.Value, f.Unit, f.Target, f.OK)
	}
}

// TestAuditorSuiteProfiles: with Env.CPUProfile (cordon-bench
// --cpuprofile) a smoke run of the auditor suite writes one CPU profile
// per measured stage.
func TestAuditorSuiteProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the auditor suite at smoke size")
	}
	prefix := filepath.Join(t.TempDir(), "prof")
	if _, err := AuditorSuite().Run(context.Background(), Env{Progress: io.Discard, Smoke: true, CPUProfile: prefix}); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"enforcers", "auditor", "store", "e2e"} {
		fi, err := os.Stat(prefix + "." + stage + ".pprof")
		if err != nil || fi.Size() == 0 {
			t.Errorf("stage %s: no profile (%v)", stage, err)
		}
	}
}
