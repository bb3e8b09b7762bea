//go:build linux

package chdbstore

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// KeepStdin keeps the process's stdin away from chDB, which reads
// fd 0 as external data for every INSERT when it is not a terminal and
// then refuses the INSERT ("Processing async inserts with both inlined and
// external data (from stdin or infile) is not supported";
// chdb-io/chdb-core#239): a replay or an eval started in a pipe would fail
// on its first write. When stdin is a pipe or a file, it moves it to a new
// descriptor, returned for the caller to read, and puts /dev/null on fd 0
// (os.Stdin stays the file of fd 0, which must not be dropped: its
// finalizer would close fd 0, which the next open would then reuse). A
// terminal or /dev/null is left alone. Open calls it, before the session
// opens; a program that reads stdin after opening chDB reads the returned
// file (calling KeepStdin again returns it).
func KeepStdin() (*os.File, error) {
	movedStdin.Lock()
	defer movedStdin.Unlock()
	if movedStdin.f != nil {
		return movedStdin.f, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(0, &st); err != nil || st.Mode&syscall.S_IFMT == syscall.S_IFCHR {
		return os.Stdin, nil // closed, a terminal or /dev/null
	}
	fd, err := syscall.Dup(0)
	if err != nil {
		return nil, fmt.Errorf("move stdin away from chDB: %w", err)
	}
	syscall.CloseOnExec(fd)
	null, err := os.Open(os.DevNull)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("move stdin away from chDB: %w", err)
	}
	defer null.Close()
	if err := syscall.Dup3(int(null.Fd()), 0, 0); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("move stdin away from chDB: %w", err)
	}
	movedStdin.f = os.NewFile(uintptr(fd), "/dev/stdin")
	return movedStdin.f, nil
}

// movedStdin is the process's stdin once KeepStdin moved it.
var movedStdin struct {
	sync.Mutex
	f *os.File
}
