package chdbstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"
)

// This file is Cordon's own binding of the few functions of libchdb.so
// that the backend calls, through purego (no cgo).
//
// Why not github.com/chdb-io/chdb-go: its chdb-purego package dlopens the
// library in a package init and panics when it is missing, so every program
// that links it (the whole cordon binary, --help included) dies at start on
// a machine without the library, and no caller can turn that into an
// error. The calls below are the ones chdb-go v1.11.0's chdb.Session makes
// (chdb_connect with "clickhouse --path=DIR", chdb_query, the result's
// buffer, length and error, chdb_destroy_query_result, chdb_close_conn),
// with the library loaded on first use instead (see Load).

// cConnection is what chdb_connect returns a pointer to: C's
// chdb_connection, itself a pointer to the engine's opaque connection.
type cConnection struct {
	handle unsafe.Pointer
}

// cResult is C's opaque chdb_result.
type cResult struct {
	_ unsafe.Pointer
}

// library is a loaded libchdb.so: the C functions the backend calls.
type library struct {
	path string

	connect       func(argc int32, argv **byte) *cConnection               // chdb_connection *chdb_connect(int, char **)
	closeConn     func(conn *cConnection)                                  // void chdb_close_conn(chdb_connection *)
	query         func(conn unsafe.Pointer, query, format string) *cResult // chdb_result *chdb_query(chdb_connection, const char *, const char *)
	destroyResult func(res *cResult)                                       // void chdb_destroy_query_result(chdb_result *)
	resultBuffer  func(res *cResult) *byte                                 // char *chdb_result_buffer(chdb_result *)
	resultLength  func(res *cResult) uintptr                               // size_t chdb_result_length(chdb_result *)
	resultError   func(res *cResult) string                                // const char *chdb_result_error(chdb_result *)
}

// loadLibrary dlopens path and binds the functions the backend calls. A
// file that cannot be loaded, or that lacks one of them, is an error
// wrapping ErrLibraryMissing; nothing panics.
func loadLibrary(path string) (*library, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s cannot be loaded (%v); re%s", ErrLibraryMissing, path, err, installHint)
	}
	l := &library{path: path}
	for _, f := range []struct {
		name string
		fptr any
	}{
		{"chdb_connect", &l.connect},
		{"chdb_close_conn", &l.closeConn},
		{"chdb_query", &l.query},
		{"chdb_destroy_query_result", &l.destroyResult},
		{"chdb_result_buffer", &l.resultBuffer},
		{"chdb_result_length", &l.resultLength},
		{"chdb_result_error", &l.resultError},
	} {
		// Dlsym and check: purego.RegisterLibFunc panics on a missing
		// symbol. The library stays loaded on failure: unloading a C++
		// library whose initialisers ran is not safe, and this happens
		// once per process.
		sym, err := purego.Dlsym(h, f.name)
		if err != nil || sym == 0 {
			return nil, fmt.Errorf("%w: %s has no function %s (is it chDB %s?); re%s", ErrLibraryMissing, path, f.name, Version, installHint)
		}
		purego.RegisterFunc(f.fptr, sym)
	}
	return l, nil
}

// conn is an open chDB connection. The engine keeps one per process (a
// second chdb_connect closes the first): the backend holds at most one.
type conn struct {
	lib  *library
	c    *cConnection
	path string // absolute data directory
	temp bool   // path was created by connect and is removed by close
}

// open opens a connection on the data directory path, as chdb-go's
// NewSession(path) does: an empty path is a new temporary directory
// (removed by close), a relative one is made absolute, a missing one is
// created, and it must be writable. The engine is started with the
// arguments "clickhouse --path=DIR".
func (l *library) open(path string) (*conn, error) {
	temp := false
	if path == "" {
		d, err := os.MkdirTemp("", "chdb_")
		if err != nil {
			return nil, fmt.Errorf("temporary chdb directory: %w", err)
		}
		path, temp = d, true
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("chdb directory %q: %w", path, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("chdb directory: %w", err)
	}
	if err := unix.Access(abs, unix.W_OK); err != nil {
		return nil, fmt.Errorf("chdb directory %s is not writable: %w", abs, err)
	}
	args := []string{"clickhouse", "--path=" + abs}
	cargs := make([][]byte, len(args))
	argv := make([]*byte, len(args))
	for i, a := range args {
		cargs[i] = append([]byte(a), 0)
		argv[i] = &cargs[i][0]
	}
	c := l.connect(int32(len(argv)), &argv[0])
	runtime.KeepAlive(cargs)
	runtime.KeepAlive(argv)
	if c == nil || c.handle == nil {
		if temp {
			_ = os.RemoveAll(abs)
		}
		return nil, fmt.Errorf("chdb could not open a connection on %s (the engine's reason is on stderr)", abs)
	}
	return &conn{lib: l, c: c, path: abs, temp: temp}, nil
}

// errNUL refuses a statement holding a NUL byte: C would read it only up
// to the NUL, a different statement from the one the caller checked.
var errNUL = errors.New("the statement holds a NUL byte")

// query runs one statement and returns a copy of its output in format
// (nil when the engine returns no result). q may end with one NUL byte,
// which spares purego a copy of a large statement; any other NUL is
// refused. Safe for concurrent use: the engine serialises statements.
func (c *conn) query(q, format string) ([]byte, error) {
	if i := strings.IndexByte(q, 0); i >= 0 && i != len(q)-1 {
		return nil, errNUL
	}
	res := c.lib.query(c.c.handle, q, format)
	runtime.KeepAlive(q)
	if res == nil {
		return nil, nil
	}
	defer c.lib.destroyResult(res)
	if msg := c.lib.resultError(res); msg != "" {
		return nil, errors.New(msg)
	}
	p := c.lib.resultBuffer(res)
	if p == nil {
		return nil, nil
	}
	out := make([]byte, c.lib.resultLength(res))
	copy(out, unsafe.Slice(p, len(out)))
	return out, nil
}

// close closes the connection and removes a temporary data directory.
func (c *conn) close() {
	c.lib.closeConn(c.c)
	if c.temp {
		_ = os.RemoveAll(c.path)
	}
}
