package main

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// harnessPackages are the module's test harnesses: they start servers,
// kill processes or measure, and link package testing. They belong to
// tests and to cmd/cordon-bench, never to the shipped binary.
var harnessPackages = []string{
	"github.com/cordonhq/cordon/internal/bench",
	"github.com/cordonhq/cordon/internal/faults",
	"github.com/cordonhq/cordon/internal/natscluster",
	"github.com/cordonhq/cordon/internal/natstest",
}

// TestShippedBinaryLinksNoHarness: cordon, in the full build and in the
// server build (-tags nochdb), links no package testing, none of the
// module's harnesses and no package named like a test helper (…test):
// such code registers test flags, carries fault injection and bloats the
// binary operators run.
func TestShippedBinaryLinksNoHarness(t *testing.T) {
	for _, tags := range []string{"", "nochdb"} {
		name := "tags=" + tags
		if tags == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			deps := listDeps(t, tags)
			if len(deps) < 10 {
				t.Fatalf("go list found %d dependencies: %v", len(deps), deps)
			}
			for _, bad := range harnessViolations(deps) {
				t.Errorf("the %s build of cmd/cordon links %s", name, bad)
			}
		})
	}
}

// harnessViolations returns the packages among deps (import path → part
// of the standard library) that the shipped binary must not link.
func harnessViolations(deps map[string]bool) []string {
	var bad []string
	for path, std := range deps {
		last := path[strings.LastIndex(path, "/")+1:]
		switch {
		case path == "testing" || strings.HasPrefix(path, "testing/"):
			bad = append(bad, path+" (package testing)")
		case isHarness(path):
			bad = append(bad, path+" (a test harness)")
		// The runtime's own internal/synctest support is linked by every
		// program; any other …test package is a test helper.
		case strings.HasSuffix(last, "test") && !(std && strings.HasPrefix(path, "internal/")):
			bad = append(bad, path+" (a package named like a test helper)")
		}
	}
	sort.Strings(bad)
	return bad
}

func isHarness(path string) bool {
	for _, h := range harnessPackages {
		if path == h || strings.HasPrefix(path, h+"/") {
			return true
		}
	}
	return false
}

// listDeps returns cmd/cordon's dependencies under the build tags, each
// with whether it is in the standard library.
func listDeps(t *testing.T, tags string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-tags", tags, "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -tags %q -deps .: %v\n%s", tags, err, out)
	}
	deps := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, std, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("go list: unexpected line %q", line)
		}
		deps[path] = std == "true"
	}
	return deps
}

// TestHarnessViolations: the judge catches each kind of harness, and lets
// the ordinary dependencies of a Go program through.
func TestHarnessViolations(t *testing.T) {
	tests := []struct {
		path string
		std  bool
		bad  bool
	}{
		{"testing", true, true},
		{"testing/synctest", true, true},
		{"net/http/httptest", true, true},
		{"github.com/cordonhq/cordon/internal/faults", false, true},
		{"github.com/cordonhq/cordon/internal/natscluster", false, true},
		{"github.com/cordonhq/cordon/internal/bench", false, true},
		{"github.com/cordonhq/cordon/internal/natstest", false, true},
		{"github.com/cordonhq/cordon/pkg/store/storetest", false, true},
		{"github.com/example/mocktest", false, true},
		{"internal/synctest", true, false},
		{"net/http", true, false},
		{"github.com/cordonhq/cordon/pkg/enforce", false, false},
		{"github.com/cordonhq/cordon/internal/benchmarks-not", false, false},
		{"github.com/nats-io/nats-server/v2/server", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got := len(harnessViolations(map[string]bool{tt.path: tt.std})) > 0
			if got != tt.bad {
				t.Errorf("%s judged bad=%v, want %v", tt.path, got, tt.bad)
			}
		})
	}
}
