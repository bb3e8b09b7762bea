package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Environment variables of a child process.
const (
	// EnvChild names the role a re-executed binary plays (ChildAuditor or
	// ChildQuery); ChildMain does nothing when it is unset.
	EnvChild = "CORDON_FAULTS_CHILD"
	// EnvConfig holds the child's settings as JSON.
	EnvConfig = "CORDON_FAULTS_CONFIG"
)

// Child roles, the values of EnvChild.
const (
	// ChildAuditor runs an auditor (JetStream consumer, chDB store,
	// detectors with a state directory) until it is killed or asked to
	// stop with SIGTERM.
	ChildAuditor = "auditor"
	// ChildQuery opens the chDB data path, reports what the auditor
	// databases hold as one JSON line and exits.
	ChildQuery = "query"
)

// ErrNoChildMain is returned when a child exits before it is ready: the
// binary probably does not call ChildMain first thing.
var ErrNoChildMain = errors.New("child exited before it was ready (does the binary call faults.ChildMain first thing in main or TestMain?)")

// ErrNested is returned when a harness is started inside a child process.
var ErrNested = errors.New("fault harness started inside a fault child")

// Command is how to start a child: a binary that calls ChildMain before
// anything else. The harness adds EnvChild and EnvConfig to Env.
type Command struct {
	// Path is the executable.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is added to the parent's environment.
	Env []string
}

// ErrNotReexecutable is returned by SelfCommand when the running binary
// never called ChildMain: re-executed, it would not become a child.
var ErrNotReexecutable = errors.New("this binary cannot be re-executed as a fault child: its main (or TestMain) does not call faults.ChildMain first; run the harness from cordon-bench or a test binary")

// childMainCalled records that ChildMain ran in this process (and, without
// EnvChild, returned): only such a binary becomes a child when re-executed.
var childMainCalled atomic.Bool

// SelfCommand re-executes the running binary: a test binary whose TestMain
// calls ChildMain, or cordon-bench (cmd/cordon-bench), whose main does. It
// fails with ErrNotReexecutable in a binary that did not call ChildMain.
func SelfCommand() (Command, error) {
	if !childMainCalled.Load() {
		return Command{}, ErrNotReexecutable
	}
	exe, err := os.Executable()
	if err != nil {
		return Command{}, fmt.Errorf("child command: %w", err)
	}
	// A test binary would otherwise run its tests if ChildMain were not
	// wired; with -test.run matching nothing it exits at once instead.
	var args []string
	if strings.HasSuffix(exe, ".test") {
		args = []string{"-test.run=^$"}
	}
	return Command{Path: exe, Args: args}, nil
}

// childConfig is what a child is told through EnvConfig.
type childConfig struct {
	// NATS is the client URL.
	NATS string `json:"nats,omitempty"`
	// ChDBPath is the chDB data path; Database the store's database (one
	// for an auditor, several for a query).
	ChDBPath  string   `json:"chdb_path"`
	Database  string   `json:"database,omitempty"`
	Databases []string `json:"databases,omitempty"`
	// StateDir is the detector checkpoint directory.
	StateDir string `json:"state_dir,omitempty"`
	// Durable prefixes the auditor's consumer names.
	Durable string `json:"durable,omitempty"`
	// AckWait, BatchSize, BatchWait and CheckpointEvery tune the auditor
	// (zero: the auditor's defaults).
	AckWait         time.Duration `json:"ack_wait,omitempty"`
	BatchSize       int           `json:"batch_size,omitempty"`
	BatchWait       time.Duration `json:"batch_wait,omitempty"`
	CheckpointEvery time.Duration `json:"checkpoint_every,omitempty"`
	// CrossCheck, for a query, names a pair of databases whose usage
	// event ids are compared.
	CrossCheck [2]string `json:"cross_check,omitempty"`
}

// childMsg is one line a child writes on its standard output.
type childMsg struct {
	// Kind is "ready", "stats", "result" or "error".
	Kind   string       `json:"kind"`
	Stats  *childStats  `json:"stats,omitempty"`
	Result *QueryResult `json:"result,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// childStats are an auditor child's counters.
type childStats struct {
	Usage      uint64 `json:"usage"`
	Anomalies  uint64 `json:"anomalies"`
	LastSeq    uint64 `json:"last_seq"`
	SeenSeq    uint64 `json:"seen_seq"`
	Batches    uint64 `json:"batches"`
	WriteError uint64 `json:"write_errors"`
}

// QueryResult is what a query child found in the chDB data path.
type QueryResult struct {
	Databases map[string]*DBContents `json:"databases"`
	// OnlyInFirst and OnlyInSecond count the usage event ids found in one
	// database of the cross-checked pair and not in the other.
	OnlyInFirst  uint64 `json:"only_in_first"`
	OnlyInSecond uint64 `json:"only_in_second"`
}

// DBContents is what one auditor database holds.
type DBContents struct {
	// Rows and Distinct are count() and uniqExact(event_id) of the
	// usage_events view (which reads FINAL); RawRows counts the stored
	// rows of usage_events_raw, copies written again after a crash
	// included until a merge collapses them.
	Rows, Distinct, RawRows uint64
	// AnomalyRows is count() of the anomalies view; Anomalies are its
	// rows by id.
	AnomalyRows uint64
	Anomalies   []AnomalyRef
}

// AnomalyRef names one anomaly.
type AnomalyRef struct {
	ID       string `json:"id"`
	Detector string `json:"detector"`
	TokenID  string `json:"token_id"`
}

// proc is a running child process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	ready   chan struct{}
	result  chan *QueryResult
	exited  chan struct{}
	waitErr error

	mu    sync.Mutex
	stats childStats
	err   string
}

// startProc starts a child with the given role and configuration (a
// childConfig, or the role's own); its standard error goes to logPath.
func startProc(c Command, role, name string, cfg any, logPath string) (*proc, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = append(append(os.Environ(), c.Env...), EnvChild+"="+role, EnvConfig+"="+string(b))
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	// Its own process group, so that a ^C reaches the harness first; killed
	// with the harness if that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, c.Path, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, ready: make(chan struct{}), result: make(chan *QueryResult, 1), exited: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p.read(out)
	}()
	go func() {
		<-readDone
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// read follows the child's standard output.
func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 256<<20)
	readied := false
	for sc.Scan() {
		var m childMsg
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue // not ours (a test binary may print)
		}
		switch m.Kind {
		case "ready":
			if !readied {
				readied = true
				close(p.ready)
			}
		case "stats":
			if m.Stats != nil {
				p.mu.Lock()
				p.stats = *m.Stats
				p.mu.Unlock()
			}
		case "result":
			p.result <- m.Result
		case "error":
			p.mu.Lock()
			p.err = m.Error
			p.mu.Unlock()
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Stats returns the last counters the child reported.
func (p *proc) Stats() childStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// failure describes why a child ended: its own error line, else the tail
// of its log.
func (p *proc) failure() string {
	p.mu.Lock()
	msg := p.err
	p.mu.Unlock()
	if msg != "" {
		return msg
	}
	return "log " + p.logPath + ":\n" + tail(p.logPath, 15)
}

// waitReady waits until the child says it is ready.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		p.mu.Lock()
		own := p.err
		p.mu.Unlock()
		if own != "" {
			return fmt.Errorf("%s: %s", p.name, own)
		}
		return fmt.Errorf("%s (%s): %w; %s", p.name, p.exitStatus(), ErrNoChildMain, p.failure())
	case <-t.C:
		p.kill()
		return fmt.Errorf("%s: not ready after %v; %s", p.name, timeout, p.failure())
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}

// exitStatus describes how the exited process ended.
func (p *proc) exitStatus() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits until the process is gone. It reports
// whether the signal is what ended it (false: it had already exited).
func (p *proc) kill() bool {
	if !p.running() {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// stop asks the child to stop with SIGTERM and waits for a clean exit,
// killing it after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if !p.running() {
		if p.waitErr != nil {
			return fmt.Errorf("%s had exited: %v; %s", p.name, p.waitErr, p.failure())
		}
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s: still running %v after SIGTERM; killed", p.name, timeout)
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s: %v; %s", p.name, p.waitErr, p.failure())
	}
	return nil
}

// tail returns the last lines of a file.
func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// poll calls fn every interval until it returns nil, ctx ends or timeout
// passes; the error then wraps fn's last error.
func poll(ctx context.Context, timeout, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(every):
		}
	}
}
