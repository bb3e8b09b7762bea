//go:build !nochdb

package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/internal/replay"
)

// simulated writes a small simulated scenario and returns its events file
// and its lines.
func simulated(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	env, _, _ := testEnv()
	if err := runSimulate(context.Background(), env, []string{"--out", dir, "--days", "7", "--holders", "12", "--events", "15000",
		"--attacks-per-kind", "1", "--seed", "5"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, simulateEvents)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// mainCLI runs cordon in-process as the binary would and returns its exit
// status and output.
func mainCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestReplayInputFailures: an input a replay cannot use fails with exit
// status 1 and says why, in plain text: every line bad (the first ten
// listed with their numbers and a count of the rest), empty, out of order
// (both line numbers and what to do).
func TestReplayInputFailures(t *testing.T) {
	path, lines := simulated(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(strings.Repeat("{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventName\":\"GetPasswordData\"}\n", 2900)), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Two files concatenated: the second starts back at the beginning.
	unordered := filepath.Join(dir, "unordered.jsonl")
	n := len(lines) / 2
	if err := os.WriteFile(unordered, []byte(strings.Join(append(append([]string{}, lines[n:]...), lines[:n]...), "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want []string // in stderr
		not  string
	}{
		{"every line bad", []string{bad},
			[]string{"bad lines:         2900", "  line 1: malformed event", "  line 10: ", "  … and 2890 more", "nothing to replay: none of the 2900 non-empty lines is a valid event"},
			"line 11:"},
		{"empty", []string{empty}, []string{"nothing to replay: the input is empty"}, ""},
		{"out of order", []string{unordered},
			[]string{fmt.Sprintf("line %d: event time", len(lines)-n+1), fmt.Sprintf("before line %d's", len(lines)-n), "--sort"}, ""},
		{"out of order, strictly", []string{unordered, "--order-tolerance", "0"}, []string{"the input is not in time order"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := mainCLI(append([]string{"replay"}, tc.args...)...)
			if code != 1 {
				t.Fatalf("exit status %d, want 1\nstdout: %s\nstderr: %s", code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if tc.not != "" && strings.Contains(errs, tc.not) {
				t.Errorf("stderr has %q:\n%s", tc.not, errs)
			}
			if strings.Contains(out+errs, "\x1b[") || strings.Contains(out, "no anomalies") {
				t.Errorf("colour codes or an empty success in the output:\nstdout %q\nstderr %q", out, errs)
			}
		})
	}

	// --sort replays the unordered input as the ordered one.
	code, want, _ := mainCLI("replay", path, "--no-progress", "-o", "json")
	code2, got, errs := mainCLI("replay", unordered, "--sort", "-o", "json")
	if code != 0 || code2 != 0 {
		t.Fatalf("exit status %d / %d: %s", code, code2, errs)
	}
	if anomaliesOf(t, got) != anomaliesOf(t, want) || !strings.Contains(got, `"sorted": true`) {
		t.Errorf("sorted replay differs from the ordered one:\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(errs, "replaying: done 100%") || strings.ContainsAny(errs, "\r\x1b") {
		t.Errorf("progress on a non-terminal is not plain: %q", errs)
	}
}

// anomaliesOf extracts the anomalies array of replay -o json output.
func anomaliesOf(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, `"anomalies": [`)
	if i < 0 {
		t.Fatalf("no anomalies in %s", out)
	}
	return out[i:]
}

// TestReplayDetectorsOnlyPolicy: replay and eval take a policy file with
// only detectors:, which the issuer still refuses.
func TestReplayDetectorsOnlyPolicy(t *testing.T) {
	path, _ := simulated(t)
	pol := filepath.Join("..", "..", "testdata", "policy", "detection", "detectors-only.yaml")
	env, out, _ := testEnv()
	if err := runReplay(context.Background(), env, []string{path, "--policy", pol, "--no-progress"}); err != nil {
		t.Fatalf("replay with a detectors-only policy: %v", err)
	}
	if !strings.Contains(out.String(), "anomalies:") {
		t.Errorf("output:\n%s", out.String())
	}
	cfg, err := loadDetectors(pol)
	if err != nil || cfg.Cooldown.String() != "30m0s" {
		t.Errorf("detectors of %s: %+v, %v", pol, cfg.Cooldown, err)
	}
	bad := writeFile(t, "bad.yaml", "detectors:\n  cooldown: soon\n")
	if _, err := loadDetectors(bad); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("bad detectors: %v", err)
	}
	env, _, _ = testEnv()
	if err := runIssuer(context.Background(), env, []string{"--check-config", "--policy", pol, "--data", t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), `missing required field "version"`) {
		t.Errorf("issuer with a detectors-only policy: %v, want it refused", err)
	}
}

// TestReplayDirFlags: a second replay into the same --dir is refused at
// once with the way out; --fresh and --continue do what they say; the
// output says how to query the kept data.
func TestReplayDirFlags(t *testing.T) {
	path, _ := simulated(t)
	dir := filepath.Join(t.TempDir(), "r")
	code, out, errs := mainCLI("replay", path, "--dir", dir, "--no-progress")
	if code != 0 || !strings.Contains(out, "cordon sql --replay-dir "+dir) {
		t.Fatalf("first replay: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = mainCLI("replay", path, "--dir", dir, "--no-progress")
	if code != 1 || !strings.Contains(errs, "holds a previous replay") || !strings.Contains(errs, "--fresh") || !strings.Contains(errs, "--continue") {
		t.Fatalf("second replay: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = mainCLI("replay", path, "--dir", dir, "--continue", "--no-progress")
	if code != 1 || !strings.Contains(errs, "line 1: event time") || !strings.Contains(errs, "--fresh replays this input alone") {
		t.Fatalf("continue with the same events: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = mainCLI("replay", path, "--dir", dir, "--fresh", "--no-progress")
	if code != 0 || strings.Contains(out, "no anomalies") {
		t.Fatalf("fresh replay: %d\n%s\n%s", code, out, errs)
	}
	rec, err := replay.ReadRecord(dir)
	if err != nil || rec == nil || len(rec.Runs) != 1 {
		t.Fatalf("record after --fresh: %+v, %v", rec, err)
	}

	// A directory that is not a replay's is never used.
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "admin.token"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{nil, {"--fresh"}} {
		code, _, errs = mainCLI(append([]string{"replay", path, "--dir", foreign, "--no-progress"}, extra...)...)
		if code != 1 || !strings.Contains(errs, "not a replay directory") {
			t.Errorf("replay into a foreign directory %v: %d %s", extra, code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(foreign, "admin.token")); err != nil {
		t.Fatalf("the foreign directory was touched: %v", err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{path, "--fresh"}, "add --dir DIR"},
		{[]string{path, "--dir", dir, "--fresh", "--continue"}, "choose one"},
		{[]string{path, "--dir", dir, "--nats", "nats://127.0.0.1:1"}, "--dir applies to the private pipeline"},
		{[]string{path, "--order-tolerance", "-1s"}, "--order-tolerance"},
	} {
		env, _, _ := testEnv()
		if err := runReplay(context.Background(), env, c.args); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("replay %v: %v, want usage error %q", c.args, err, c.want)
		}
	}
}

// TestReplayHelp: `cordon replay -h` explains the input format, the order
// it needs and the directory.
func TestReplayHelp(t *testing.T) {
	env, _, errb := testEnv()
	if err := runReplay(context.Background(), env, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, w := range []string{"Input: JSONL, one Cordon event envelope per line", "Order:", "sorted by the events' time", "--sort", "--order-tolerance",
		"cordon sql --replay-dir DIR", "--fresh", "--continue", "exit status 1"} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("help lacks %q:\n%s", w, errb.String())
		}
	}
}

// TestLoggerPlainOffTerminal: logs written to a file or a pipe carry no
// colour codes.
func TestLoggerPlainOffTerminal(t *testing.T) {
	var b bytes.Buffer
	log := newLogger(&b)
	log.Warn().Int("line", 3).Msg("bad line skipped")
	if strings.Contains(b.String(), "\x1b[") || !strings.Contains(b.String(), "bad line skipped") {
		t.Errorf("log line %q", b.String())
	}
}

// TestCLIProcess is not a test: the tests below run the cordon command
// line in a child process (the test binary itself) through it, since chDB
// holds one data path per process and a replay directory has its own.
func TestCLIProcess(t *testing.T) {
	if os.Getenv("CORDON_CLI_PROCESS") != "1" {
		t.Skip("the child process of the tests that need a process of their own")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	pipelineBackend = nil // the real thing: chDB in the replay directory
	code := Main(context.Background(), args, os.Stdout, os.Stderr)
	os.RemoveAll(chdbPath)
	os.Exit(code)
}

// cordonProcess runs cordon with args in a child process, stdin from in.
func cordonProcess(t *testing.T, in []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestCLIProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "CORDON_CLI_PROCESS=1")
	if in != nil {
		cmd.Stdin = bytes.NewReader(in) // a pipe, as in `cat FILE | cordon replay -`
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// TestSQLReplayDir: `cordon sql --replay-dir DIR` reads what a replay kept,
// from another process, through the same read-only gate as the analyst
// API: reads work, writes and file access are refused and change nothing.
// The replay reads its events from a pipe on stdin, which chDB must not
// take for its own.
func TestSQLReplayDir(t *testing.T) {
	path, lines := simulated(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	usage := strings.Count(string(data), `"type":"usage.decided"`)
	dir := filepath.Join(t.TempDir(), "replay")
	code, out, errs := cordonProcess(t, data, "replay", "-", "--dir", dir, "--no-progress")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("events published:  %d", len(lines))) {
		t.Fatalf("replay from a pipe: exit %d\n%s\n%s", code, out, errs)
	}
	count := func() string {
		t.Helper()
		code, out, errs := cordonProcess(t, nil, "sql", "--replay-dir", dir, "-o", "csv", "SELECT count() AS n FROM usage_events")
		if code != 0 {
			t.Fatalf("sql: exit %d\n%s\n%s", code, out, errs)
		}
		return out
	}
	if got, want := count(), fmt.Sprintf("n\n%d\n", usage); got != want {
		t.Fatalf("count = %q, want %q", got, want)
	}
	code, out, errs = cordonProcess(t, nil, "sql", "--replay-dir", dir, "-o", "csv",
		"SELECT detector, count() AS n FROM anomalies GROUP BY detector ORDER BY detector")
	if code != 0 || !strings.HasPrefix(out, "detector,n\n") || strings.Count(out, "\n") < 2 {
		t.Errorf("anomalies by detector: exit %d\n%s\n%s", code, out, errs)
	}
	for _, q := range []string{
		"DROP TABLE usage_events_raw",
		"TRUNCATE TABLE usage_events_raw",
		"INSERT INTO usage_events_raw SELECT * FROM usage_events_raw",
		"SELECT * FROM file('/etc/passwd', 'LineAsString')",
		"SELECT count() FROM system.tables",
	} {
		code, out, errs := cordonProcess(t, nil, "sql", "--replay-dir", dir, q)
		if code == 0 || !strings.Contains(errs, "not allowed") && !strings.Contains(errs, "only read-only") {
			t.Errorf("%q: exit %d, want refused\n%s\n%s", q, code, out, errs)
		}
	}
	if got, want := count(), fmt.Sprintf("n\n%d\n", usage); got != want {
		t.Fatalf("after the refused statements: count = %q, want %q", got, want)
	}

	code, _, errs = cordonProcess(t, nil, "sql", "--replay-dir", t.TempDir(), "SELECT 1")
	if code != 1 || !strings.Contains(errs, "not a replay directory") {
		t.Errorf("sql on a directory that is not a replay's: %d %s", code, errs)
	}
	code, _, errs = cordonProcess(t, nil, "sql", "--replay-dir", dir, "--nats", "nats://127.0.0.1:1", "SELECT 1")
	if code != 2 || !strings.Contains(errs, "choose one") {
		t.Errorf("--replay-dir with --nats: %d %s", code, errs)
	}
}
