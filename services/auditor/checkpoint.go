package auditor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cordonhq/cordon/pkg/detect"
)

// checkpoint records which stream sequences the detector state reflects.
type checkpoint struct {
	UsageSeq  uint64
	LedgerSeq uint64
}

// stateFile holds a magic, the covered sequences and the detector
// snapshot, in one file replaced atomically (write, fsync, rename).
const (
	stateFile  = "detectors.state"
	stateMagic = "CORDONDS1"
)

// errOlderCheckpoint is what loadCheckpoint reports (with the covered
// sequences) when the detector state was written by an older build whose
// layout this one does not read: the auditor starts from empty detector
// state at those sequences.
var errOlderCheckpoint = errors.New("checkpoint from an older build, starting fresh")

// loadCheckpoint reads the checkpoint in dir into d. A checkpoint whose
// detector state an older build wrote gives its sequences and
// errOlderCheckpoint, d left empty: the baselines are learnt again, and
// the streams are not replayed (that would alert again on old events).
func loadCheckpoint(dir string, d Detector) (checkpoint, error) {
	var cp checkpoint
	f, err := os.Open(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return cp, nil
	}
	if err != nil {
		return cp, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr [len(stateMagic) + 16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[:len(stateMagic)]) != stateMagic {
		return cp, fmt.Errorf("%s: not a detector checkpoint", stateFile)
	}
	cp.UsageSeq = binary.BigEndian.Uint64(hdr[len(stateMagic):])
	cp.LedgerSeq = binary.BigEndian.Uint64(hdr[len(stateMagic)+8:])
	if err := d.Restore(r); err != nil {
		if errors.Is(err, detect.ErrSnapshotVersion) {
			return cp, fmt.Errorf("%s: %w (%v)", stateFile, errOlderCheckpoint, err)
		}
		return checkpoint{}, fmt.Errorf("%s: %w", stateFile, err)
	}
	return cp, nil
}

// errUnsettled: anomalies the detectors raised are not all durable yet.
var errUnsettled = errors.New("checkpoint: raised anomalies are not all durable yet; keeping the previous checkpoint")

// Checkpoint writes the detector state and the stream sequences it covers.
// It never covers an event whose anomalies are not yet durable (acknowledged
// by JetStream and written): it fails while such anomalies exist (Run
// checkpoints at moments when none do, every CheckpointEvery and when it
// stops). Rows need not be: they come from the durable consumer, which
// redelivers what it did not acknowledge.
func (a *Auditor) Checkpoint() error {
	if a.o.Detector == nil || a.o.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(a.o.StateDir, 0o700); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	a.detMu.Lock()
	defer a.detMu.Unlock()
	if !a.settled {
		return errUnsettled
	}
	if a.saved && a.covered == a.savedCP {
		return nil // the file on disk already holds this state
	}
	tmp := filepath.Join(a.o.StateDir, stateFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var hdr [len(stateMagic) + 16]byte
	copy(hdr[:], stateMagic)
	binary.BigEndian.PutUint64(hdr[len(stateMagic):], a.covered.UsageSeq)
	binary.BigEndian.PutUint64(hdr[len(stateMagic)+8:], a.covered.LedgerSeq)
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := a.o.Detector.Snapshot(w); err != nil {
		return fmt.Errorf("checkpoint: snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(a.o.StateDir, stateFile)); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	a.saved, a.savedCP = true, a.covered
	return nil
}
