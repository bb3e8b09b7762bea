package replay

import (
	"flag"
	"os"
	"time"

	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// The flags of `cordon replay`, `cordon eval` and `cordon simulate` are
// declared here, next to the jobs they fill: each job's RegisterFlags
// declares them, Validate checks them as given, and Run applies those that
// have no field of their own (a job built without flags is run as its
// fields say). The command keeps its arguments, the output format, the
// connection to a running system and the exit status.

// ErrInvalid marks a job's options that are wrong as given — a flag, a
// combination of flags, a scenario that the flags make invalid — rather
// than a file or a system that fails: the command's usage error (exit
// status 2). The message names the flag and says what is wanted. It is the
// services' configuration-mistake marker, so one check serves every command.
var ErrInvalid = svcconfig.ErrInvalid

// invalidf formats an error as fmt.Errorf does and marks it ErrInvalid.
func invalidf(format string, args ...any) error { return svcconfig.Invalidf(format, args...) }

// DefaultWait is the longest wait for the auditor that `cordon replay`
// allows by default (--wait).
const DefaultWait = 2 * time.Minute

// jobFlags are the flags of a Job that have no field of their own.
type jobFlags struct {
	fs                      *flag.FlagSet
	tolerance, wait         time.Duration
	fresh, cont, noProgress bool
}

// RegisterFlags declares the flags of `cordon replay` into fs, filling j:
// the private pipeline (--policy, --dir, --fresh, --continue), the input's
// order (--sort, --order-tolerance), what is replayed (--skip-ledger), the
// wait for the auditor (--wait) and the progress (--no-progress). The input
// is the command's argument (Input); a running system to replay into is
// Remote, with connection flags of the command's own.
func (j *Job) RegisterFlags(fs *flag.FlagSet) {
	f := &jobFlags{fs: fs}
	j.flags = f
	fs.StringVar(&j.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section the private pipeline uses; a file with only detectors: (and response:) will do ($CORDON_POLICY; default thresholds without)")
	fs.StringVar(&j.Pipeline.Dir, "dir", "", "keep the private pipeline's data (JetStream, chDB, state) in this directory, to query it with cordon sql --replay-dir")
	fs.BoolVar(&f.fresh, "fresh", false, "with --dir: replace the previous replay in it")
	fs.BoolVar(&f.cont, "continue", false, "with --dir: replay on top of the previous replay in it (later events; only the new anomalies are reported)")
	fs.BoolVar(&j.Options.Sort, "sort", false, "sort the input by event time in memory (about its size) instead of refusing an input out of order")
	fs.DurationVar(&f.tolerance, "order-tolerance", DefaultTolerance, "how far an event's time may lie before the latest one above it (0: strictly in order)")
	fs.BoolVar(&j.Options.SkipLedger, "skip-ledger", false, "replay usage events only (with --nats: leave the running system's token ledger alone)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress output")
	fs.DurationVar(&f.wait, "wait", DefaultWait, "longest wait for the auditor to catch up")
}

// Validate checks the job's input and flags, and their combination with
// Remote; its errors match ErrInvalid.
func (j *Job) Validate() error {
	f := j.flags
	if f == nil {
		f = &jobFlags{wait: DefaultWait}
	}
	switch {
	case j.Input == "":
		return invalidf("want one FILE.jsonl (or - for stdin)")
	case f.wait <= 0:
		return invalidf("--wait %s: want a positive duration", f.wait)
	case f.tolerance < 0:
		return invalidf("--order-tolerance %s: want 0 (strictly in order) or more", f.tolerance)
	case j.Remote != nil && isSet(f.fs, "policy"):
		return invalidf("--policy applies to the private pipeline; with --nats the running auditor's own policy is used")
	case j.Remote != nil && j.Pipeline.Dir != "":
		return invalidf("--dir applies to the private pipeline; with --nats the events go to the running system")
	case f.fresh && f.cont:
		return invalidf("--fresh and --continue: choose one")
	case (f.fresh || f.cont) && j.Pipeline.Dir == "":
		return invalidf("--fresh and --continue apply to a replay directory: add --dir DIR")
	}
	return nil
}

// withFlags returns the job with the values of its flags that have no
// field of their own applied.
func (j Job) withFlags() Job {
	f := j.flags
	if f == nil {
		return j
	}
	j.Options.Wait, j.Options.Tolerance = f.wait, f.tolerance
	if f.tolerance == 0 {
		j.Options.Tolerance = time.Nanosecond // strictly in order (0 would mean the default)
	}
	switch {
	case f.fresh:
		j.Pipeline.Reuse = DirFresh
	case f.cont:
		j.Pipeline.Reuse = DirContinue
	}
	if !f.noProgress {
		j.Options.Progress = j.Stderr
	}
	return j
}

// isSet says whether the flag name was given on the command line of fs.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	if fs != nil {
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	}
	return set
}

// scenarioFlags choose the scenario and size it; a flag not given keeps
// what the scenario says.
type scenarioFlags struct {
	fs                             *flag.FlagSet
	file                           string
	seed                           uint64
	days, holders, events, perKind int
}

func (s *scenarioFlags) register(fs *flag.FlagSet) {
	s.fs = fs
	fs.StringVar(&s.file, "scenario", "", "scenario file (YAML, see testdata/scenarios/); default: the embedded default scenario")
	fs.Uint64Var(&s.seed, "seed", 0, "random seed (default: the scenario's): the same seed gives the same events, ids and labels")
	fs.IntVar(&s.days, "days", 0, "days of simulated traffic (default: the scenario's)")
	fs.IntVar(&s.holders, "holders", 0, "scale the workloads to about this many holders (default: as the scenario says)")
	fs.IntVar(&s.events, "events", 0, "scale the rates to about this many normal usage events (default: as the scenario says)")
	fs.IntVar(&s.perKind, "attacks-per-kind", 0, "attacks of each variant (default: as the scenario says)")
}

// validate checks the sizing flags given.
func (s *scenarioFlags) validate() error {
	if isSet(s.fs, "days") && s.days < 2 {
		return invalidf("--days %d: want at least 2", s.days)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"holders", s.holders}, {"events", s.events}, {"attacks-per-kind", s.perKind}} {
		if isSet(s.fs, c.name) && c.v < 1 {
			return invalidf("--%s %d: want at least 1", c.name, c.v)
		}
	}
	return nil
}

// scenario loads the scenario (--scenario, else the default one) and lays
// the flags given over it; clamped says the attacks' start was moved up
// into a shortened scenario. A scenario the flags make invalid is an
// ErrInvalid error.
func (s *scenarioFlags) scenario() (sc simulate.Scenario, clamped bool, err error) {
	if err := s.validate(); err != nil {
		return sc, false, err
	}
	if s.file == "" {
		sc = simulate.DefaultScenario()
	} else if sc, err = simulate.LoadScenario(s.file); err != nil {
		return sc, false, err
	}
	if isSet(s.fs, "seed") {
		sc.Seed = s.seed
	}
	if isSet(s.fs, "days") {
		sc.Days = s.days
		// Attacks on learnt holders start after AttackAfter: keep it inside
		// a shortened scenario.
		if limit := time.Duration(sc.Days-2) * 24 * time.Hour; sc.AttackAfter > limit {
			sc.AttackAfter, clamped = limit, true
		}
	}
	if isSet(s.fs, "holders") {
		sc.Holders = s.holders
	}
	if isSet(s.fs, "events") {
		sc.UsageEvents = s.events
	}
	if isSet(s.fs, "attacks-per-kind") {
		sc.AttacksPerKind = s.perKind
	}
	if err := sc.Validate(); err != nil {
		return sc, false, svcconfig.Invalid(err)
	}
	return sc, clamped, nil
}

// evalFlags are the flags of an EvalJob that have no field of their own.
type evalFlags struct {
	scenario   scenarioFlags
	noProgress bool
}

// RegisterFlags declares the flags of `cordon eval` into fs, filling j: the
// scenario and its size (--scenario, --seed, --days, --holders, --events,
// --attacks-per-kind), the detectors' policy (--policy: PolicyFile, which
// the caller loads into Eval.Pipeline), the quality bar (--min-recall,
// --max-false-alarms) and the progress (--no-progress).
func (j *EvalJob) RegisterFlags(fs *flag.FlagSet) {
	f := &evalFlags{}
	j.flags = f
	f.scenario.register(fs)
	fs.StringVar(&j.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section is evaluated ($CORDON_POLICY; default thresholds without)")
	fs.Float64Var(&j.Gate.MinRecall, "min-recall", DefaultGate.MinRecall, "fail (exit status 1) when any attack variant's recall is below this")
	fs.Float64Var(&j.Gate.MaxFalseAlarms, "max-false-alarms", DefaultGate.MaxFalseAlarms, "fail (exit status 1) when any benign variant has more false alarms than this per 1,000 benign tokens per day")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress bar")
}

// Validate checks the gate and the sizing flags; its errors match
// ErrInvalid. The scenario file is read by Run.
func (j *EvalJob) Validate() error {
	switch {
	case j.Gate.MinRecall < 0 || j.Gate.MinRecall > 1:
		return invalidf("--min-recall %v: want a value in [0, 1]", j.Gate.MinRecall)
	case j.Gate.MaxFalseAlarms < 0:
		return invalidf("--max-false-alarms %v: want a value of at least 0", j.Gate.MaxFalseAlarms)
	}
	if j.flags != nil {
		return j.flags.scenario.validate()
	}
	return nil
}

// withFlags returns the job with its scenario loaded and sized as its
// flags say, and its progress shown on Stderr unless --no-progress.
func (j EvalJob) withFlags() (EvalJob, error) {
	f := j.flags
	if f == nil {
		return j, nil
	}
	sc, clamped, err := f.scenario.scenario()
	if err != nil {
		return j, err
	}
	j.Eval.Scenario, j.ScenarioFile, j.AttackAfterClamped = sc, f.scenario.file, clamped
	if !f.noProgress {
		j.Eval.Progress = j.Stderr
	}
	return j, nil
}

// RegisterFlags declares the flags of `cordon simulate` into fs, filling
// j: the output directory (--out) and the scenario and its size
// (--scenario, --seed, --days, --holders, --events, --attacks-per-kind).
func (j *SimulateJob) RegisterFlags(fs *flag.FlagSet) {
	j.flags = &scenarioFlags{}
	fs.StringVar(&j.Out, "out", "", "directory to write "+EventsFile+" and "+LabelsFile+" to (created; required)")
	j.flags.register(fs)
}

// Validate checks the output directory and the sizing flags; its errors
// match ErrInvalid. The scenario file is read by Run.
func (j *SimulateJob) Validate() error {
	if j.Out == "" {
		return invalidf("--out DIR is required")
	}
	if j.flags != nil {
		return j.flags.validate()
	}
	return nil
}

// withFlags returns the job with its scenario loaded and sized as its
// flags say.
func (j SimulateJob) withFlags() (SimulateJob, error) {
	if j.flags == nil {
		return j, nil
	}
	sc, _, err := j.flags.scenario()
	if err != nil {
		return j, err
	}
	j.Scenario, j.ScenarioFile = sc, j.flags.file
	return j, nil
}
