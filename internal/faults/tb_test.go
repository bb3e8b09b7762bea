package faults_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/internal/faults"
)

func TestWithTB(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		fn      func(tb testing.TB) error
		wantErr string // substring; "" means no error
		failed  bool
	}{
		{name: "ok", fn: func(tb testing.TB) error { tb.Log("hello"); return nil }},
		{name: "returned error", fn: func(testing.TB) error { return errors.New("boom") }, wantErr: "boom"},
		{name: "error goes on", fn: func(tb testing.TB) error {
			tb.Errorf("first %d", 1)
			tb.Error("second")
			return nil
		}, wantErr: "first 1; second", failed: true},
		{name: "fatal stops", fn: func(tb testing.TB) error {
			tb.Fatalf("stop %s", "here")
			return errors.New("not reached")
		}, wantErr: "stop here", failed: true},
		{name: "panic", fn: func(testing.TB) error { panic("oops") }, wantErr: "panic: oops"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			var order []int
			var dir string
			err := faults.WithTB(ctx, "drill", &log, func(tb testing.TB) error {
				dir = tb.TempDir()
				tb.Cleanup(func() { order = append(order, 1) })
				tb.Cleanup(func() { order = append(order, 2) })
				return tc.fn(tb)
			})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, faults.ErrFailed); got != tc.failed {
				t.Errorf("errors.Is(err, ErrFailed) = %v, want %v", got, tc.failed)
			}
			if len(order) != 2 || order[0] != 2 || order[1] != 1 {
				t.Errorf("cleanups ran %v, want [2 1]", order)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("temp dir %s not removed: %v", dir, err)
			}
			if tc.name == "ok" && !strings.Contains(log.String(), "hello") {
				t.Errorf("log %q lacks the message", log.String())
			}
		})
	}
}
