package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoChDBBuildLeavesChDBOut: the server images build with -tags nochdb
// and must never need libchdb.so, so nothing of chDB may be linked in.
func TestNoChDBBuildLeavesChDBOut(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "nochdb", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "chdb") {
			t.Errorf("the nochdb build links %s", dep)
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "chdb-go") {
		t.Error("the full build does not link chDB: cordon up would have no ClickHouse")
	}
}
