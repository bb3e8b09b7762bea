package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/internal/faults"
)

// TestBinary builds cordon-bench and runs it the two ways it is run: as a
// user runs it (its help speaks of what it measures) and as the fault
// harness re-executes it (with faults.EnvChild set its main becomes the
// child before anything else and answers in the children's protocol). If
// main stopped calling faults.ChildMain, the fault-tolerance suite could
// start no auditor; this test fails first.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	exe := filepath.Join(t.TempDir(), "cordon-bench")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("help", func(t *testing.T) {
		out, err := exec.Command(exe, "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("cordon-bench -h: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("measure Cordon's latency, throughput and memory on this machine")) {
			t.Errorf("cordon-bench -h does not say what it does:\n%s", out)
		}
	})

	t.Run("fault child", func(t *testing.T) {
		cfg, err := json.Marshal(map[string]any{"chdb_path": t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "--only", "nosuch") // a bench run would refuse these flags
		cmd.Env = append(os.Environ(), faults.EnvChild+"="+faults.ChildQuery, faults.EnvConfig+"="+string(cfg))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("query child: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
		}
		line, _, _ := bufio.NewReader(bytes.NewReader(out)).ReadLine()
		var msg struct {
			Kind   string          `json:"kind"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(line, &msg); err != nil || msg.Kind != "result" || len(msg.Result) == 0 {
			t.Fatalf("query child answered %q (%v), want a result message", line, err)
		}
		if strings.Contains(string(out), "machine:") {
			t.Errorf("the child ran the benchmarks:\n%s", out)
		}
	})
}
