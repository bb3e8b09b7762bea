package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cordonhq/cordon/pkg/privdir"
)

// A replay directory (PipelineOptions.Dir) keeps a private pipeline's data
// — JetStream, the detectors' state, the chDB store — and a record of the
// replays into it (RecordFile), so that a second replay into it is refused,
// started afresh or continued, as the caller chose (DirMode), and so that
// another process can find the store to query it (Dir.Store). A directory
// that is not empty and holds no record is never used: it may be anything,
// the data of a running system among them.

// RecordFile is the file in a replay directory that records its replays.
const RecordFile = "cordon-replay.json"

// lockFile is locked (flock) while a process uses the directory.
const lockFile = "cordon-replay.lock"

// Subdirectories of a replay directory, removed by DirFresh.
const (
	natsSubdir  = "nats"
	stateSubdir = "state"
	chdbSubdir  = "chdb"
	// chdbDatabase is the database of the store of a replay directory.
	chdbDatabase = "replay"
)

// recordFormat is the version of RecordFile's format.
const recordFormat = 1

// DirMode says what Start does with a Dir that holds a previous replay.
type DirMode uint8

const (
	// DirRefuse refuses a Dir that holds a previous replay's events
	// (ErrDirInUse).
	DirRefuse DirMode = iota
	// DirFresh removes the previous replay's data first: the streams, the
	// detectors' state and the store when it is in the directory.
	DirFresh
	// DirContinue replays on top of the previous replay: the detectors
	// resume from what they learnt, the store keeps its rows, and only the
	// new run's anomalies are reported. Its events must not be earlier
	// than the previous replay's last one (Pipeline.NotBefore).
	DirContinue
)

// Errors about a replay directory.
var (
	// ErrNotReplayDir: the directory is not empty but holds no replay
	// record, or (for reading) holds none at all.
	ErrNotReplayDir = errors.New("not a replay directory")
	// ErrDirInUse: the directory holds a previous replay (DirRefuse).
	ErrDirInUse = errors.New("the directory holds a previous replay")
	// ErrDirBusy: another process is using the directory.
	ErrDirBusy = errors.New("the directory is in use by another process")
	// ErrDirUnfinished: the previous replay into the directory did not
	// finish (interrupted or failed), so it cannot be continued.
	ErrDirUnfinished = errors.New("the previous replay into the directory did not finish")
)

// DirStore is where a replay directory's store is.
type DirStore struct {
	// CHDB is the chDB data path, relative to the directory.
	CHDB string `json:"chdb"`
	// Database is the store's database in it.
	Database string `json:"database"`
}

// RunRecord is one replay into a directory.
type RunRecord struct {
	// Input names what was replayed (a file name, "-" for stdin).
	Input string `json:"input,omitempty"`
	// Started and Finished are wall times; Finished is zero while the
	// replay runs or when it was interrupted.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Usage and Ledger events published, Anomalies reported.
	Usage     int `json:"usage"`
	Ledger    int `json:"ledger"`
	Anomalies int `json:"anomalies"`
	// FirstEvent and LastEvent are the event times published.
	FirstEvent time.Time `json:"first_event,omitzero"`
	LastEvent  time.Time `json:"last_event,omitzero"`
	// Error is why the replay failed; empty when it succeeded.
	Error string `json:"error,omitempty"`
}

// Events is the number of events the run published.
func (r RunRecord) Events() int { return r.Usage + r.Ledger }

// DirRecord is what RecordFile holds.
type DirRecord struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// Store is nil when the pipeline's store was outside the directory.
	Store *DirStore   `json:"store,omitempty"`
	Runs  []RunRecord `json:"runs"`
}

// Events is the number of events every run published.
func (d *DirRecord) Events() int {
	n := 0
	for _, r := range d.Runs {
		n += r.Events()
	}
	return n
}

// LastEvent is the latest event time published into the directory.
func (d *DirRecord) LastEvent() time.Time {
	var t time.Time
	for _, r := range d.Runs {
		if r.LastEvent.After(t) {
			t = r.LastEvent
		}
	}
	return t
}

// Last is the latest run, or nil.
func (d *DirRecord) Last() *RunRecord {
	if len(d.Runs) == 0 {
		return nil
	}
	return &d.Runs[len(d.Runs)-1]
}

// Dir is a replay directory opened by one process: it holds the
// directory's lock until Close.
type Dir struct {
	// Path is the directory.
	Path string
	// Record is its record; nil for a directory without one (new).
	Record *DirRecord
	unlock func()
}

// OpenDir locks the directory at path and reads its record. It fails with
// ErrDirBusy when another process holds the lock, and with ErrNotReplayDir
// when the directory is missing or holds something other than a replay.
// Close releases the lock.
func OpenDir(path string) (*Dir, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNotReplayDir, path)
		}
		return nil, fmt.Errorf("replay directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrNotReplayDir, path)
	}
	d, err := openDir(path)
	if err != nil {
		return nil, err
	}
	if d.Record == nil {
		d.Close()
		return nil, fmt.Errorf("%w: %s holds no %s (it is not the --dir of a replay)", ErrNotReplayDir, path, RecordFile)
	}
	return d, nil
}

// ReadRecord reads the record of the replay directory at path without
// locking it: nil and no error when the directory or its record does not
// exist.
func ReadRecord(path string) (*DirRecord, error) {
	b, err := os.ReadFile(filepath.Join(path, RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replay directory: %w", err)
	}
	return parseRecord(filepath.Join(path, RecordFile), b)
}

func parseRecord(name string, b []byte) (*DirRecord, error) {
	var rec DirRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotReplayDir, name, err)
	}
	if rec.Format != recordFormat {
		return nil, fmt.Errorf("%w: %s: format %d, this build reads %d", ErrNotReplayDir, name, rec.Format, recordFormat)
	}
	return &rec, nil
}

// openDir locks an existing directory and reads its record, if any; a
// directory without one must be empty.
func openDir(path string) (*Dir, error) {
	unlock, err := privdir.Lock(filepath.Join(path, lockFile))
	if err != nil {
		if errors.Is(err, privdir.ErrLocked) {
			return nil, fmt.Errorf("%s: %w (a replay or a query runs in it)", path, ErrDirBusy)
		}
		return nil, fmt.Errorf("replay directory %s: %w", path, err)
	}
	d := &Dir{Path: path, unlock: unlock}
	b, err := os.ReadFile(filepath.Join(path, RecordFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		entries, err := os.ReadDir(path)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("replay directory: %w", err)
		}
		for _, e := range entries {
			if e.Name() != lockFile {
				d.Close()
				return nil, fmt.Errorf("%w: %s is not empty (it holds %s) and holds no %s: replay into a new or empty directory",
					ErrNotReplayDir, path, e.Name(), RecordFile)
			}
		}
		return d, nil
	case err != nil:
		d.Close()
		return nil, fmt.Errorf("replay directory: %w", err)
	}
	rec, err := parseRecord(filepath.Join(path, RecordFile), b)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.Record = rec
	return d, nil
}

// Store returns the path and database of the directory's chDB store, or
// false when its store is not in the directory.
func (d *Dir) Store() (path, database string, ok bool) {
	if d.Record == nil || d.Record.Store == nil {
		return "", "", false
	}
	return filepath.Join(d.Path, d.Record.Store.CHDB), d.Record.Store.Database, true
}

// Describe summarises the directory's replays for a message: "3 replays,
// 15,515 events from … to …; the last of FILE, finished at …".
func (d *Dir) Describe() string {
	r := d.Record
	if r == nil || len(r.Runs) == 0 {
		return "no replay"
	}
	last := r.Last()
	s := fmt.Sprintf("%d replay(s), %d events", len(r.Runs), r.Events())
	if !r.LastEvent().IsZero() {
		s += " up to event time " + r.LastEvent().UTC().Format(time.RFC3339)
	}
	in := last.Input
	if in == "" {
		in = "an input"
	}
	switch {
	case last.Finished.IsZero():
		s += fmt.Sprintf("; the last, of %s, started %s and did not finish", in, last.Started.Local().Format(time.DateTime))
	case last.Error != "":
		s += fmt.Sprintf("; the last, of %s, failed at %s: %s", in, last.Finished.Local().Format(time.DateTime), last.Error)
	default:
		s += fmt.Sprintf("; the last, of %s, finished %s with %d anomalies", in, last.Finished.Local().Format(time.DateTime), last.Anomalies)
	}
	return s
}

// write saves the record (atomically: a crash leaves the old or the new).
func (d *Dir) write() error {
	b, err := json.MarshalIndent(d.Record, "", "  ")
	if err != nil {
		return fmt.Errorf("replay directory record: %w", err)
	}
	tmp := filepath.Join(d.Path, RecordFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("replay directory record: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(d.Path, RecordFile)); err != nil {
		return fmt.Errorf("replay directory record: %w", err)
	}
	return nil
}

// prepare makes the directory ready for a new run under mode, and records
// the run as started.
func (d *Dir) prepare(mode DirMode, input string, store *DirStore) error {
	if rec := d.Record; rec != nil && len(rec.Runs) > 0 {
		last := rec.Last()
		switch {
		case mode == DirFresh || rec.Events() == 0 && !last.Finished.IsZero():
			// The caller asked, or nothing was published: start over.
			if err := d.clear(); err != nil {
				return err
			}
		case mode == DirContinue && (last.Finished.IsZero() || last.Error != ""):
			return fmt.Errorf("%s: %w, so it cannot be continued (%s)", d.Path, ErrDirUnfinished, d.Describe())
		case mode == DirContinue:
			if (rec.Store == nil) != (store == nil) || rec.Store != nil && *rec.Store != *store {
				return fmt.Errorf("%s: the previous replay kept its store elsewhere; it cannot be continued with this one", d.Path)
			}
		default:
			return fmt.Errorf("%s: %w (%s)", d.Path, ErrDirInUse, d.Describe())
		}
	}
	if d.Record == nil || len(d.Record.Runs) == 0 {
		d.Record = &DirRecord{Format: recordFormat, Created: time.Now().UTC(), Store: store}
	}
	d.Record.Runs = append(d.Record.Runs, RunRecord{Input: input, Started: time.Now().UTC()})
	return d.write()
}

// clear removes a previous replay's data: the streams, the detectors'
// state, the store in the directory and the record.
func (d *Dir) clear() error {
	subdirs := []string{natsSubdir, stateSubdir}
	if d.Record != nil && d.Record.Store != nil {
		subdirs = append(subdirs, d.Record.Store.CHDB)
	}
	for _, sub := range subdirs {
		if !filepath.IsLocal(sub) {
			return fmt.Errorf("replay directory %s: %s names %q outside it", d.Path, RecordFile, sub)
		}
		if err := os.RemoveAll(filepath.Join(d.Path, sub)); err != nil {
			return fmt.Errorf("replay directory: remove the previous replay: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(d.Path, RecordFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replay directory: %w", err)
	}
	d.Record = nil
	return nil
}

// finish records the end of the current run.
func (d *Dir) finish(res *Result, runErr error) error {
	last := d.Record.Last()
	if last == nil {
		return nil
	}
	last.Finished = time.Now().UTC()
	if res != nil {
		last.Usage, last.Ledger, last.Anomalies = res.Usage, res.Ledger, len(res.Anomalies)
		last.FirstEvent, last.LastEvent = res.FirstEvent, res.LastEvent
	}
	if runErr != nil {
		last.Error = runErr.Error()
		if len(last.Error) > 500 {
			last.Error = last.Error[:500] + "…"
		}
	}
	return d.write()
}

// abandon forgets the current run: it never started.
func (d *Dir) abandon() error {
	if d.Record == nil || len(d.Record.Runs) == 0 {
		return nil
	}
	d.Record.Runs = d.Record.Runs[:len(d.Record.Runs)-1]
	return d.write()
}

// Close releases the directory's lock.
func (d *Dir) Close() {
	if d.unlock != nil {
		d.unlock()
		d.unlock = nil
	}
}
