package events_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cordonhq/cordon"

// goList runs `go list` with args in the module and returns its lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += "\n" + string(ee.Stderr)
		}
		t.Fatalf("go list %s: %s", strings.Join(args, " "), msg)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestEventsImportsNothingOfOurs: the event contract is what every service
// depends on, so it depends on no package of this module (DESIGN.md).
func TestEventsImportsNothingOfOurs(t *testing.T) {
	deps := goList(t, "-deps", module+"/pkg/events")
	if !slices.Contains(deps, module+"/pkg/events") || len(deps) < 10 {
		t.Fatalf("go list -deps pkg/events returned %d packages: %v", len(deps), deps)
	}
	for _, d := range deps {
		if (d == module || strings.HasPrefix(d, module+"/")) && d != module+"/pkg/events" {
			t.Errorf("pkg/events depends on %s", d)
		}
	}
}

// TestPkgImportsNoInternalOrServices: the packages under pkg/ are the
// libraries others build on; none depends, directly or through another
// package, on the module's internal/ packages (outside pkg/) or on a
// service. pkg/store/internal is pkg's own and allowed.
func TestPkgImportsNoInternalOrServices(t *testing.T) {
	lines := goList(t, "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/pkg/...")
	if len(lines) < 10 {
		t.Fatalf("go list pkg/... returned %d packages", len(lines))
	}
	for _, l := range lines {
		f := strings.Fields(l)
		pkg, deps := f[0], f[1:]
		for _, d := range deps {
			if !strings.HasPrefix(d, module+"/internal/") && !strings.HasPrefix(d, module+"/services/") {
				continue
			}
			t.Errorf("%s depends on %s", strings.TrimPrefix(pkg, module+"/"), strings.TrimPrefix(d, module+"/"))
		}
	}
}
