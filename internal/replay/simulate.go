package replay

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/simulate"
)

// Files a simulation writes: its events, a replay's input, and their
// labels, which an evaluation scores the anomalies against.
const (
	EventsFile = "usage.jsonl"
	LabelsFile = "labels.json"
)

// SimulateJob is a simulation as `cordon simulate` runs it once its flags
// are parsed: it generates the scenario's events and labels into a
// directory, to replay and score later, and says what it wrote.
type SimulateJob struct {
	// Scenario is generated; ScenarioFile names where it comes from ("":
	// the default scenario).
	Scenario     simulate.Scenario
	ScenarioFile string
	// Out is the directory EventsFile and LabelsFile are written to
	// (created when missing; files there are replaced).
	Out string
	// Stdout receives what was written.
	Stdout io.Writer

	flags *scenarioFlags // RegisterFlags
}

// Run generates the data set and writes it. A job whose flags were
// registered (RegisterFlags) first loads and sizes the scenario they name:
// a scenario they make invalid is an ErrInvalid error.
func (j SimulateJob) Run() (*simulate.Dataset, error) {
	j, err := j.withFlags()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ds, err := simulate.Generate(j.Scenario)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(j.Out, 0o755); err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	events, labels := filepath.Join(j.Out, EventsFile), filepath.Join(j.Out, LabelsFile)
	if err := writeFile(events, ds.WriteJSONL); err != nil {
		return nil, err
	}
	if err := writeFile(labels, ds.WriteLabels); err != nil {
		return nil, err
	}
	variants := map[string]int{}
	for _, a := range ds.Attacks {
		variants[a.Variant]++
	}
	source, sc := j.ScenarioFile, j.Scenario
	if source == "" {
		source = "the default scenario"
	}
	fmt.Fprintf(j.Stdout, "scenario %s (%s), seed %d: %d days, %d holders, %d tokens\n", sc.Name, source, sc.Seed, sc.Days, ds.Holders, ds.Tokens)
	fmt.Fprintf(j.Stdout, "wrote %d events (%d usage, %d ledger) to %s\n", len(ds.Events), ds.UsageEvents, ds.LedgerEvents, events)
	fmt.Fprintf(j.Stdout, "wrote %d labelled attacks (%s; %d attack events) and %d benign exposures to %s\n", len(ds.Attacks), countsText(variants),
		ds.AttackEvents, len(ds.Exposures), labels)
	_, err = fmt.Fprintf(j.Stdout, "(%v)  replay it with: cordon replay %s\n", time.Since(start).Round(time.Millisecond), events)
	return ds, err
}

// writeFile writes a file with fn.
func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("simulate: write %s: %w", path, err)
	}
	return f.Close()
}

// countsText reads "2 leaked_replay, 1 scope_probe", by key.
func countsText(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}
