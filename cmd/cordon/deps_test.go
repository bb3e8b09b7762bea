package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// chdbStorePkg is the embedded ClickHouse backend, the only package that
// loads libchdb.so (through purego).
const chdbStorePkg = "github.com/cordonhq/cordon/pkg/store/chdbstore"

// TestNoChDBBuildLeavesChDBOut: the server images build with -tags nochdb
// and must never need libchdb.so, so nothing of chDB may be linked in: no
// chDB backend and no purego, which only it uses. The full build links the
// backend (cordon up needs it).
func TestNoChDBBuildLeavesChDBOut(t *testing.T) {
	deps := func(tags ...string) []string {
		args := append([]string{"list"}, tags...)
		out, err := exec.Command("go", append(args, "-deps", ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	for _, dep := range deps("-tags", "nochdb") {
		if strings.Contains(dep, "chdb") || strings.HasPrefix(dep, "github.com/ebitengine/purego") {
			t.Errorf("the nochdb build links %s", dep)
		}
	}
	if !slices.Contains(deps(), chdbStorePkg) {
		t.Errorf("the full build does not link %s: cordon up would have no ClickHouse", chdbStorePkg)
	}
}
