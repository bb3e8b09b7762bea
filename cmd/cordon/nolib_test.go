//go:build !nochdb

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// The full build links the chDB backend, but only the commands that open a
// chDB store may need libchdb.so: these tests build cordon once and run it
// as a user would, on a machine without the library and on one with it.

// cordonBin builds ./cmd/cordon (the full build) once per test binary.
var cordonBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cordon-nolib-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cordon")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := cordonBin(); err == nil {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// result is what a run of the binary gave.
type result struct {
	code           int
	stdout, stderr string
}

// cordon runs the built binary with args in dir with env (on top of the
// test's environment without the variables that locate the library).
func cordon(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	bin, err := cordonBin()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(envWithoutLibrary(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("cordon %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// envWithoutLibrary is the test's environment without the variables that
// locate the chDB library.
func envWithoutLibrary() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case chdbstore.EnvLibPath, "CORDON_CACHE", "XDG_CACHE_HOME", "HOME":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// noLibrary is an environment in which the library cannot be found: every
// place it is looked for is empty or missing.
func noLibrary(t *testing.T) []string {
	empty := t.TempDir()
	return []string{
		chdbstore.EnvLibPath + "=" + filepath.Join(empty, "missing", "libchdb.so"),
		"CORDON_CACHE=" + empty, "XDG_CACHE_HOME=" + empty, "HOME=" + empty,
	}
}

// withLibrary is an environment in which the library is found the way
// `make chdb` installs it: in the cache under HOME, CHDB_LIB_PATH unset.
func withLibrary(t *testing.T) []string {
	lib, ok := chdbstore.LibPath()
	if !ok {
		t.Fatalf("no chDB library at %q: run `%s`", lib, chdbstore.InstallCommand)
	}
	home := t.TempDir()
	cached := filepath.Join(home, ".cache", "cordon", "chdb", chdbstore.Version, "libchdb.so")
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(lib, cached); err != nil {
		t.Fatal(err)
	}
	return []string{"HOME=" + home}
}

// repoPath returns a path of the repository (tests run in cmd/cordon).
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkNoPanic fails when the output shows a Go panic or a stack trace.
func checkNoPanic(t *testing.T, r result) {
	t.Helper()
	for _, s := range []string{"panic", "goroutine ", ".go:"} {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("the output shows a panic or a stack trace (%q):\n%s%s", s, r.stdout, r.stderr)
		}
	}
}

// checkLibraryMissing: the command exits with status 3 and one line that
// names the install command and where it looked, and no panic.
func checkLibraryMissing(t *testing.T, r result, env []string) {
	t.Helper()
	if r.code != 3 {
		t.Fatalf("exit status %d, want 3; output:\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkNoPanic(t, r)
	var line string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, "make chdb") {
			if line != "" {
				t.Errorf("the message spans several lines:\n%s", r.stderr)
			}
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no line names `make chdb`:\n%s", r.stderr)
	}
	missing := strings.TrimPrefix(env[0], chdbstore.EnvLibPath+"=")
	for _, w := range []string{"libchdb.so", missing, "scripts/install-chdb.sh"} {
		if !strings.Contains(line, w) {
			t.Errorf("the message lacks %q: %s", w, line)
		}
	}
}

// TestCommandsWithoutLibrary: on a machine without libchdb.so, every
// command that does not touch ClickHouse works (with chdb-go, the binary
// exited with the missing-library error before main, --help included).
func TestCommandsWithoutLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cordon")
	}
	env := noLibrary(t)
	dir := t.TempDir()
	policy := repoPath(t, "testdata/policy/default.yaml")
	tests := []struct {
		name string
		args []string
		want string // in stdout or stderr
	}{
		{"help", []string{"--help"}, "Commands:"},
		{"version", []string{"version"}, "cordon "},
		{"command help", []string{"up", "-h"}, "Usage: cordon up"},
		{"creds generate", []string{"creds", "generate", "--out", filepath.Join(dir, "creds")}, "auth.conf"},
		{"anchor generate", []string{"anchor", "generate", "--out", filepath.Join(dir, "anchor")}, "cordonanchor_"},
		{"issuer check-config", []string{"issuer", "--check-config", "--policy", policy, "--data", filepath.Join(dir, "issuer")}, ": ok"},
		{"revoker check-config", []string{"revoker", "--check-config", "--policy", policy}, ": ok"},
		{"enforce check-config", []string{"enforce", "--check-config", "--upstream", "http://127.0.0.1:9", "--routes", repoPath(t, "testdata/routes/demo.yaml")}, ": ok"},
		{"simulate", []string{"simulate", "--out", filepath.Join(dir, "sim"), "--days", "7", "--holders", "12", "--events", "2000", "--attacks-per-kind", "1", "--seed", "5"}, "usage.jsonl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := cordon(t, dir, env, tc.args...)
			if r.code != 0 {
				t.Fatalf("exit status %d; output:\n%s%s", r.code, r.stdout, r.stderr)
			}
			checkNoPanic(t, r)
			if !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Errorf("output lacks %q:\n%s%s", tc.want, r.stdout, r.stderr)
			}
		})
	}
}

// TestChDBCommandsNeedLibrary: the commands that open a chDB store work
// with the library where `make chdb` puts it, and without it exit with
// status 3 and one line naming `make chdb` (no panic): cordon up, the
// auditor on chDB, replay and eval (private pipelines) and sql on a
// replay's store.
func TestChDBCommandsNeedLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cordon")
	}
	dir := t.TempDir()
	// Events to replay, written by the binary itself (no library needed).
	if r := cordon(t, dir, noLibrary(t), "simulate", "--out", "sim", "--days", "7", "--holders", "12", "--events", "2000",
		"--attacks-per-kind", "1", "--seed", "5"); r.code != 0 {
		t.Fatalf("simulate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	events := filepath.Join(dir, "sim", "usage.jsonl")
	replayDir := filepath.Join(dir, "replay")

	t.Run("with the library", func(t *testing.T) {
		env := withLibrary(t)
		r := cordon(t, dir, env, "replay", events, "--dir", replayDir, "--no-progress")
		if r.code != 0 || !strings.Contains(r.stdout, "cordon sql --replay-dir") {
			t.Fatalf("replay: exit status %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = cordon(t, dir, env, "sql", "--replay-dir", replayDir, "-o", "csv", "SELECT count() AS n FROM anomalies")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "n\n") {
			t.Fatalf("sql --replay-dir: exit status %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	nats := natstest.Run(t)
	// The auditor checks its trust anchor before it opens the store.
	if r := cordon(t, dir, noLibrary(t), "anchor", "generate", "--out", "anchor"); r.code != 0 {
		t.Fatalf("anchor generate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"up", []string{"up", "--data", filepath.Join(dir, "up"), "--nats-port", "-1", "--api", "127.0.0.1:0", "--proxy", "127.0.0.1:0"}},
		{"auditor", []string{"auditor", "--store", "chdb", "--nats", nats.Server.ClientURL(), "--state", filepath.Join(dir, "auditor"),
			"--chdb-path", filepath.Join(dir, "auditor", "chdb"), "--trust-anchor", filepath.Join(dir, "anchor", "trust-anchor.pub")}},
		{"replay", []string{"replay", events, "--no-progress"}},
		{"eval", []string{"eval", "--scenario", repoPath(t, "testdata/scenarios/small.yaml"), "--no-progress"}},
		{"sql replay-dir", []string{"sql", "--replay-dir", replayDir, "SELECT count() FROM anomalies"}},
	}
	for _, tc := range tests {
		t.Run("without the library/"+tc.name, func(t *testing.T) {
			env := noLibrary(t)
			checkLibraryMissing(t, cordon(t, dir, env, tc.args...), env)
		})
	}
}
