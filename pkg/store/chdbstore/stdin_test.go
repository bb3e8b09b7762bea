package chdbstore_test

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// TestInsertWithPipedStdin runs a child process whose stdin is a pipe, as
// `cordon up < file` or a service under a supervisor would be: chDB reads
// such a stdin as data for every INSERT and refuses it, unless Open keeps
// stdin away. The child inserts, and still reads its stdin afterwards.
func TestInsertWithPipedStdin(t *testing.T) {
	if os.Getenv("CHDBSTORE_STDIN_CHILD") == "1" {
		ctx := t.Context()
		b, err := chdbstore.Open(ctx, chdbstore.Options{Path: t.TempDir(), Database: "stdin"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Exec(ctx, "CREATE TABLE stdin.t (x UInt8) ENGINE = MergeTree ORDER BY x"); err != nil {
			t.Fatal(err)
		}
		if err := b.Insert(ctx, "t", []string{"x"}, []byte("[1]\n[2]\n"), store.InsertOptions{}); err != nil {
			t.Fatalf("insert with a piped stdin: %v", err)
		}
		in, err := chdbstore.KeepStdin()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(in)
		if err != nil || string(got) != "from the pipe\n" {
			t.Fatalf("stdin after chDB opened: %q, %v", got, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInsertWithPipedStdin$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CHDBSTORE_STDIN_CHILD=1")
	cmd.Stdin = strings.NewReader("from the pipe\n") // os/exec passes it through a pipe
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
