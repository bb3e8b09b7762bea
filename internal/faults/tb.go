package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// ErrFailed is wrapped by WithTB's error when fn reported failures
// (Error, Fatal) through its testing.TB.
var ErrFailed = errors.New("failed")

// WithTB runs fn with a testing.TB outside of `go test`, for harness code
// written against one (internal/natscluster): Log goes to log, TempDir
// and Cleanup work, Error marks a failure and Fatal (or FailNow, Skip)
// ends fn. It returns fn's error, or one that wraps ErrFailed with the
// failure messages. Fatal must be called from fn's goroutine, as in a
// test; methods without a meaning here (Setenv, Chdir, …) panic, and a
// panic in fn becomes an error.
func WithTB(ctx context.Context, name string, log io.Writer, fn func(tb testing.TB) error) (err error) {
	if log == nil {
		log = io.Discard
	}
	h := &harnessTB{name: name, log: log, ctx: ctx}
	defer func() {
		h.runCleanups()
		r := recover()
		var f fatal
		switch {
		case r == nil:
		case errors.As(asError(r), &f):
		default:
			err = fmt.Errorf("%s: panic: %v", name, r)
			return
		}
		if h.Failed() {
			err = errors.Join(err, fmt.Errorf("%s %w: %s", name, ErrFailed, strings.Join(h.messages(), "; ")))
		}
	}()
	return fn(h)
}

// fatal ends fn after Fatal, FailNow or Skip.
type fatal struct{ msg string }

func (f fatal) Error() string { return f.msg }

func asError(r any) error {
	if e, ok := r.(error); ok {
		return e
	}
	return fmt.Errorf("%v", r)
}

// harnessTB implements testing.TB for WithTB. The embedded interface is
// nil: it only supplies testing.TB's unexported method.
type harnessTB struct {
	testing.TB
	name string
	log  io.Writer
	ctx  context.Context

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	msgs     []string
}

func (h *harnessTB) Helper()      {}
func (h *harnessTB) Name() string { return h.name }
func (h *harnessTB) Context() context.Context {
	return h.ctx
}

func (h *harnessTB) Log(args ...any) { h.write(fmt.Sprintln(args...)) }
func (h *harnessTB) Logf(format string, args ...any) {
	h.write(fmt.Sprintf(format, args...))
}

func (h *harnessTB) write(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintln(h.log, "   "+strings.TrimRight(s, "\n"))
}

func (h *harnessTB) Error(args ...any) { h.fail(fmt.Sprint(args...)) }
func (h *harnessTB) Errorf(format string, args ...any) {
	h.fail(fmt.Sprintf(format, args...))
}
func (h *harnessTB) Fatal(args ...any) {
	msg := fmt.Sprint(args...)
	h.fail(msg)
	panic(fatal{msg})
}
func (h *harnessTB) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.fail(msg)
	panic(fatal{msg})
}
func (h *harnessTB) Fail() { h.fail("") }
func (h *harnessTB) FailNow() {
	h.fail("")
	panic(fatal{"FailNow"})
}
func (h *harnessTB) Failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}
func (h *harnessTB) Skip(args ...any) { h.Fatal(append([]any{"skipped: "}, args...)...) }
func (h *harnessTB) Skipf(format string, args ...any) {
	h.Fatalf("skipped: "+format, args...)
}
func (h *harnessTB) SkipNow()      { h.Fatal("skipped") }
func (h *harnessTB) Skipped() bool { return false }

func (h *harnessTB) fail(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed = true
	if msg != "" {
		h.msgs = append(h.msgs, msg)
	}
}

func (h *harnessTB) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

func (h *harnessTB) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *harnessTB) runCleanups() {
	for {
		h.mu.Lock()
		if len(h.cleanups) == 0 {
			h.mu.Unlock()
			return
		}
		f := h.cleanups[len(h.cleanups)-1]
		h.cleanups = h.cleanups[:len(h.cleanups)-1]
		h.mu.Unlock()
		f()
	}
}

func (h *harnessTB) TempDir() string {
	dir, err := os.MkdirTemp("", "cordon-"+h.name+"-")
	if err != nil {
		h.Fatalf("temp dir: %v", err)
	}
	h.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
