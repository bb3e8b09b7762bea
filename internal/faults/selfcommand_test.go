package faults

import (
	"errors"
	"os"
	"testing"
)

// TestSelfCommand: a binary re-executes itself as a child only when it
// called ChildMain (this test binary's TestMain did); otherwise SelfCommand
// says so instead of starting a copy that would not become a child (the
// shipped cordon, for instance, no longer calls it).
func TestSelfCommand(t *testing.T) {
	tests := []struct {
		name    string
		called  bool
		wantErr error
	}{
		{"ChildMain called", true, nil},
		{"ChildMain never called", false, ErrNotReexecutable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			was := childMainCalled.Load()
			t.Cleanup(func() { childMainCalled.Store(was) })
			childMainCalled.Store(tt.called)
			cmd, err := SelfCommand()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("SelfCommand: error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Path != exe {
				t.Errorf("path %q, want the running binary %q", cmd.Path, exe)
			}
			// A test binary re-executed without ChildMain taking over would
			// run every test again: the command must select none.
			if len(cmd.Args) != 1 || cmd.Args[0] != "-test.run=^$" {
				t.Errorf("args %q, want -test.run=^$ for a test binary", cmd.Args)
			}
		})
	}
}
