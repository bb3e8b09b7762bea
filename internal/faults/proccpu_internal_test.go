package faults

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// rusageCPU is this process's user and system time from getrusage, in
// microseconds: the reference procCPU is held to.
func rusageCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestProcCPU holds procCPU to getrusage across CPU-bound work: the
// nanosecond figure moves with the work, within a tick of the reference,
// where /proc/<pid>/stat alone moves in steps of 10 ms.
func TestProcCPU(t *testing.T) {
	pid := os.Getpid()
	c0, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	r0 := rusageCPU(t)
	// About 300 ms of CPU, by the reference clock (not the wall).
	x := uint64(1)
	for rusageCPU(t)-r0 < 300*time.Millisecond {
		for i := 0; i < 100_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	c1, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	r1 := rusageCPU(t)
	got, want := c1-c0, r1-r0
	if got < want-2*tick || got > want+2*tick {
		t.Errorf("procCPU moved %v over work getrusage puts at %v (x=%d)", got, want, x)
	}
	if got%tick == 0 {
		t.Logf("procCPU moved a whole number of ticks (%v): the task schedstat files may be missing", got)
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("procCPU of a pid that cannot exist: no error")
	}
}
