package replay

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/services/auditor"
)

// newFlagSet returns a flag set that keeps its complaints to itself.
func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parsedJob returns a Job whose flags were registered and parsed from
// args, with Input and (when remote) Remote set as `cordon replay` sets
// them.
func parsedJob(t *testing.T, remote bool, args ...string) Job {
	t.Helper()
	j := Job{Stderr: &bytes.Buffer{}}
	fs := newFlagSet()
	j.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	if fs.NArg() == 1 {
		j.Input = fs.Arg(0)
	}
	if remote {
		j.Remote = func() (*auditor.Client, func(), error) { return nil, nil, errors.New("not connected") }
	}
	return j
}

// TestJobValidate: every combination `cordon replay` refuses is an
// ErrInvalid error naming the flag; what it accepts passes.
func TestJobValidate(t *testing.T) {
	t.Setenv("CORDON_POLICY", "from-env.yaml")
	cases := []struct {
		name   string
		args   []string
		remote bool
		want   string // "" for valid
	}{
		{"defaults", []string{"in.jsonl"}, false, ""},
		{"stdin", []string{"-"}, false, ""},
		{"no input", nil, false, "want one FILE.jsonl (or - for stdin)"},
		{"two inputs", []string{"a.jsonl", "b.jsonl"}, false, "want one FILE.jsonl"},
		{"zero wait", []string{"--wait", "0s", "in.jsonl"}, false, "--wait 0s: want a positive duration"},
		{"negative wait", []string{"--wait", "-1s", "in.jsonl"}, false, "--wait -1s"},
		{"strict order", []string{"--order-tolerance", "0", "in.jsonl"}, false, ""},
		{"negative tolerance", []string{"--order-tolerance", "-1s", "in.jsonl"}, false, "--order-tolerance -1s: want 0 (strictly in order) or more"},
		{"policy with nats", []string{"--policy", "p.yaml", "in.jsonl"}, true, "--policy applies to the private pipeline"},
		{"policy from the environment with nats", []string{"in.jsonl"}, true, ""},
		{"dir with nats", []string{"--dir", "d", "in.jsonl"}, true, "--dir applies to the private pipeline"},
		{"fresh and continue", []string{"--dir", "d", "--fresh", "--continue", "in.jsonl"}, false, "--fresh and --continue: choose one"},
		{"fresh without dir", []string{"--fresh", "in.jsonl"}, false, "add --dir DIR"},
		{"continue without dir", []string{"--continue", "in.jsonl"}, false, "add --dir DIR"},
		{"continue", []string{"--dir", "d", "--continue", "in.jsonl"}, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := parsedJob(t, c.remote, c.args...)
			err := j.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want an ErrInvalid error with %q", err, c.want)
			}
			if strings.Contains(err.Error(), ErrInvalid.Error()) {
				t.Errorf("the message repeats the mark: %q", err)
			}
		})
	}
}

// TestJobFlagsApplied: Run runs a job as its flags say, including what
// has no field of its own (0 tolerance is strict, not the default;
// --fresh and --continue; the progress on Stderr unless --no-progress),
// and a job built without flags as its fields say.
func TestJobFlagsApplied(t *testing.T) {
	t.Setenv("CORDON_POLICY", "")
	j := parsedJob(t, false, "in.jsonl").withFlags()
	if o := j.Options; o.Tolerance != DefaultTolerance || o.Wait != DefaultWait || o.Progress != j.Stderr || o.Sort || o.SkipLedger ||
		j.Pipeline.Reuse != DirRefuse || j.Pipeline.Dir != "" || j.PolicyFile != "" {
		t.Errorf("defaults: options %+v, pipeline %+v, policy %q", o, j.Pipeline, j.PolicyFile)
	}
	j = parsedJob(t, false, "--order-tolerance", "0", "--wait", "5s", "--no-progress", "--sort", "--skip-ledger",
		"--dir", "d", "--continue", "--policy", "p.yaml", "in.jsonl").withFlags()
	if o := j.Options; o.Tolerance != time.Nanosecond || o.Wait != 5*time.Second || o.Progress != nil || !o.Sort || !o.SkipLedger ||
		j.Pipeline.Reuse != DirContinue || j.Pipeline.Dir != "d" || j.PolicyFile != "p.yaml" {
		t.Errorf("flags: options %+v, pipeline %+v, policy %q", o, j.Pipeline, j.PolicyFile)
	}
	if j := parsedJob(t, false, "--dir", "d", "--fresh", "in.jsonl").withFlags(); j.Pipeline.Reuse != DirFresh {
		t.Errorf("--fresh: reuse %v", j.Pipeline.Reuse)
	}

	plain := Job{Input: "in.jsonl", Stderr: &bytes.Buffer{}, Pipeline: PipelineOptions{Reuse: DirContinue}}
	if got := plain.withFlags(); got.Options.Tolerance != 0 || got.Options.Wait != 0 || got.Options.Progress != nil || got.Pipeline.Reuse != DirContinue {
		t.Errorf("a job without flags changed: options %+v, reuse %v", got.Options, got.Pipeline.Reuse)
	}
	if err := plain.Validate(); err != nil {
		t.Errorf("a job without flags: %v", err)
	}
}

// TestScenarioFlags: the sizing flags are checked before the scenario file
// is read; a file that cannot be read is not a usage mistake, a scenario
// the flags make invalid is; the flags given, and only those, are laid
// over the scenario.
func TestScenarioFlags(t *testing.T) {
	small := filepath.Join("..", "..", "testdata", "scenarios", "small.yaml")
	missing := filepath.Join(t.TempDir(), "none.yaml")
	cases := []struct {
		name    string
		args    []string
		invalid string // an ErrInvalid error, from Validate or from Run
		other   error  // an error that is not ErrInvalid, from Run
	}{
		{"one day", []string{"--days", "1"}, "--days 1: want at least 2", nil},
		{"no holders", []string{"--holders", "0"}, "--holders 0: want at least 1", nil},
		{"no events", []string{"--events", "-3"}, "--events -3: want at least 1", nil},
		{"no attacks", []string{"--attacks-per-kind", "0"}, "--attacks-per-kind 0: want at least 1", nil},
		{"flags first", []string{"--days", "1", "--scenario", missing}, "--days 1", nil},
		{"missing file", []string{"--scenario", missing}, "", fs.ErrNotExist},
		{"too many days", []string{"--days", "400"}, "days: want between 2 and 366", nil},
		{"too many holders", []string{"--scenario", small, "--holders", "20000"}, "holders", nil},
	}
	for _, c := range cases {
		for _, kind := range []string{"simulate", "eval"} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				j, apply := scenarioJob(kind)
				fs := newFlagSet()
				j.RegisterFlags(fs)
				args := c.args
				if kind == "simulate" {
					args = append(slices.Clone(args), "--out", t.TempDir())
				}
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				err := j.Validate()
				if err == nil {
					err = apply()
				}
				switch {
				case c.other != nil:
					if !errors.Is(err, c.other) || errors.Is(err, ErrInvalid) {
						t.Errorf("%v, want %v and not ErrInvalid", err, c.other)
					}
				case !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.invalid):
					t.Errorf("%v, want an ErrInvalid error with %q", err, c.invalid)
				}
			})
		}
	}
}

// flaggedJob is a job whose flags are declared and checked by itself.
type flaggedJob interface {
	RegisterFlags(fs *flag.FlagSet)
	Validate() error
}

// scenarioJob returns a SimulateJob or an EvalJob and a function that
// applies its flags as Run does (without generating or replaying).
func scenarioJob(kind string) (flaggedJob, func() error) {
	if kind == "simulate" {
		j := &SimulateJob{}
		return j, func() error { _, err := j.withFlags(); return err }
	}
	j := &EvalJob{}
	return j, func() error { _, err := j.withFlags(); return err }
}

// TestScenarioFlagsLaidOver: the flags given, and only those, are laid
// over the scenario; a shortened scenario keeps its attacks inside it and
// says so; --no-progress and -o stay the caller's choice.
func TestScenarioFlagsLaidOver(t *testing.T) {
	small := filepath.Join("..", "..", "testdata", "scenarios", "small.yaml")
	file, err := simulate.LoadScenario(small)
	if err != nil {
		t.Fatal(err)
	}
	def := simulate.DefaultScenario()
	if def.Seed == 0 || def.Days < 4 || def.AttackAfter <= 24*time.Hour {
		t.Fatalf("the default scenario no longer shows what this test needs: seed %d, %d days, attacks after %s", def.Seed, def.Days, def.AttackAfter)
	}

	var e EvalJob
	fs := newFlagSet()
	e.RegisterFlags(fs)
	if e.Gate != DefaultGate {
		t.Errorf("gate before parsing: %+v, want %+v", e.Gate, DefaultGate)
	}
	e.Stderr = &bytes.Buffer{}
	if err := fs.Parse([]string{"--seed", "0", "--days", "3", "--holders", "7", "--min-recall", "0.5"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := e.withFlags()
	if err != nil {
		t.Fatal(err)
	}
	sc := got.Eval.Scenario
	if sc.Name != def.Name || sc.Seed != 0 || sc.Days != 3 || sc.Holders != 7 || sc.UsageEvents != def.UsageEvents ||
		sc.AttackAfter != 24*time.Hour || !got.AttackAfterClamped || got.ScenarioFile != "" || got.Gate.MinRecall != 0.5 || got.Eval.Progress != e.Stderr {
		t.Errorf("eval: scenario %s seed %d, %d days, %d holders, %d events, attacks after %s (clamped %v), file %q, gate %+v, progress %v",
			sc.Name, sc.Seed, sc.Days, sc.Holders, sc.UsageEvents, sc.AttackAfter, got.AttackAfterClamped, got.ScenarioFile, got.Gate, got.Eval.Progress)
	}

	var s SimulateJob
	fs = newFlagSet()
	s.RegisterFlags(fs)
	if err := fs.Parse([]string{"--out", "o", "--scenario", small, "--attacks-per-kind", "2"}); err != nil {
		t.Fatal(err)
	}
	sj, err := s.withFlags()
	if err != nil {
		t.Fatal(err)
	}
	sc = sj.Scenario
	if sj.Out != "o" || sj.ScenarioFile != small || sc.Name != file.Name || sc.Seed != file.Seed || sc.Days != file.Days || sc.AttacksPerKind != 2 {
		t.Errorf("simulate: out %q, file %q, scenario %s seed %d, %d days, %d attacks per kind", sj.Out, sj.ScenarioFile, sc.Name, sc.Seed, sc.Days, sc.AttacksPerKind)
	}

	fs = newFlagSet()
	e = EvalJob{Stderr: &bytes.Buffer{}}
	e.RegisterFlags(fs)
	if err := fs.Parse([]string{"--no-progress"}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.withFlags(); err != nil || got.Eval.Progress != nil || got.AttackAfterClamped {
		t.Errorf("--no-progress: progress %v, clamped %v, %v", got.Eval.Progress, got.AttackAfterClamped, err)
	}
}

// TestEvalGateFlags: a quality bar outside its range is an ErrInvalid
// error naming the flag.
func TestEvalGateFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--min-recall", "1.5"}, "--min-recall 1.5: want a value in [0, 1]"},
		{[]string{"--min-recall", "-0.1"}, "--min-recall -0.1"},
		{[]string{"--max-false-alarms", "-1"}, "--max-false-alarms -1: want a value of at least 0"},
		{[]string{"--min-recall", "0", "--max-false-alarms", "0"}, ""},
	} {
		var j EvalJob
		fs := newFlagSet()
		j.RegisterFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := j.Validate()
		if c.want == "" && err != nil || c.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
