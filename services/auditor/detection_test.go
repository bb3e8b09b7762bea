package auditor

import (
	"context"
	"testing"
	"time"
)

// TestFrontierWait: a writer waiting on the detection frontier is released
// exactly when the frontier reaches both its sequences, and gives up when
// its context ends.
func TestFrontierWait(t *testing.T) {
	tests := []struct {
		name          string
		usage, ledger uint64
		advances      [][2]uint64
		wantReleased  bool
	}{
		{name: "already reached", usage: 5, ledger: 0, advances: nil, wantReleased: true},
		{name: "reached by an advance", usage: 10, ledger: 2, advances: [][2]uint64{{7, 2}, {10, 2}}, wantReleased: true},
		{name: "usage reached, ledger not", usage: 10, ledger: 3, advances: [][2]uint64{{12, 2}}, wantReleased: false},
		{name: "never reached", usage: 20, ledger: 0, advances: [][2]uint64{{19, 0}}, wantReleased: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f frontier
			f.advance(5, 0)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- f.wait(ctx, tt.usage, tt.ledger) }()
			for _, a := range tt.advances {
				f.advance(a[0], a[1])
			}
			err := <-done
			if released := err == nil; released != tt.wantReleased {
				t.Fatalf("released = %v (err %v), want %v", released, err, tt.wantReleased)
			}
		})
	}
}
