package auditor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
)

// Checkpoints.
//
// Version 2 (one per partition): magic "CORDONDS2", then uvarints:
// partition, partition count, USAGE and TOKENS sequences covered, the
// number of seen batch ids, each as 16 bytes and a varint base time (unix
// µs); then the detector snapshot (empty without a detector).
//
// Version 1 ("CORDONDS1", the single-process auditor's detectors.state:
// the two sequences as big-endian uint64, then the snapshot) is loaded as
// partition 0 of a stream without partitions, and refused when the stream
// has them: its baselines mix every partition's keys.
const (
	stateMagicV1 = "CORDONDS1"
	stateMagicV2 = "CORDONDS2"
	// stateFileV1 is the single-process auditor's checkpoint file.
	stateFileV1 = "detectors.state"
)

// seenBatch is a batch id in the checkpoint's de-duplication set.
type seenBatch struct {
	ID uuid.UUID
	At int64 // base time, unix µs
}

// checkpointV2 is what a partition checkpoint records besides the
// detector snapshot.
type checkpointV2 struct {
	Partition, Partitions int
	UsageSeq, LedgerSeq   uint64
	Batches               []seenBatch
}

// errOlderCheckpoint: the detector state was written by an older build
// whose layout this one does not read; the partition resumes at the
// checkpoint's sequences with empty detector state.
var errOlderCheckpoint = errors.New("checkpoint from an older build, starting fresh")

// errCheckpointMismatch: a checkpoint of another partition layout.
var errCheckpointMismatch = errors.New("checkpoint of another partition layout")

// encodeCheckpoint encodes cp and d's snapshot.
func encodeCheckpoint(cp checkpointV2, d Detector) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(stateMagicV2)
	var tmp [binary.MaxVarintLen64]byte
	uv := func(v uint64) { buf.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	uv(uint64(cp.Partition))
	uv(uint64(cp.Partitions))
	uv(cp.UsageSeq)
	uv(cp.LedgerSeq)
	uv(uint64(len(cp.Batches)))
	for _, b := range cp.Batches {
		buf.Write(b.ID[:])
		buf.Write(tmp[:binary.PutVarint(tmp[:], b.At)])
	}
	if d != nil {
		if err := d.Snapshot(&buf); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// decodeCheckpoint restores d from data, a checkpoint of partition p of
// parts. A version 1 checkpoint is accepted for partition 0 of 1.
func decodeCheckpoint(data []byte, p, parts int, d Detector) (checkpointV2, error) {
	var cp checkpointV2
	r := bytes.NewReader(data)
	switch {
	case bytes.HasPrefix(data, []byte(stateMagicV1)):
		if p != 0 || parts != 1 {
			return cp, fmt.Errorf("%w: %s is a single-partition (version 1) checkpoint and USAGE has %d partitions: "+
				"move it aside to start partition %d with empty baselines (they are learnt again)", errCheckpointMismatch, stateFileV1, parts, p)
		}
		if len(data) < len(stateMagicV1)+16 {
			return cp, fmt.Errorf("%s: truncated", stateFileV1)
		}
		cp.Partitions = 1
		cp.UsageSeq = binary.BigEndian.Uint64(data[len(stateMagicV1):])
		cp.LedgerSeq = binary.BigEndian.Uint64(data[len(stateMagicV1)+8:])
		r = bytes.NewReader(data[len(stateMagicV1)+16:])
	case bytes.HasPrefix(data, []byte(stateMagicV2)):
		r.Seek(int64(len(stateMagicV2)), io.SeekStart)
		var err error
		uv := func() uint64 {
			v, e := binary.ReadUvarint(r)
			if e != nil && err == nil {
				err = fmt.Errorf("truncated checkpoint: %w", e)
			}
			return v
		}
		cp.Partition, cp.Partitions = int(uv()), int(uv())
		cp.UsageSeq, cp.LedgerSeq = uv(), uv()
		n := uv()
		if err != nil {
			return checkpointV2{}, err
		}
		if n > uint64(r.Len())/17 {
			return checkpointV2{}, fmt.Errorf("checkpoint: %d batch ids cannot fit in %d bytes", n, r.Len())
		}
		if cp.Partition != p || cp.Partitions != parts {
			return checkpointV2{}, fmt.Errorf("%w: the checkpoint is partition %d of %d, this runner partition %d of %d "+
				"(USAGE's partition count changed: repartition offline, or move the state aside to learn again)", errCheckpointMismatch, cp.Partition, cp.Partitions, p, parts)
		}
		cp.Batches = make([]seenBatch, n)
		for i := range cp.Batches {
			if _, e := io.ReadFull(r, cp.Batches[i].ID[:]); e != nil {
				return checkpointV2{}, fmt.Errorf("truncated checkpoint: %w", e)
			}
			at, e := binary.ReadVarint(r)
			if e != nil {
				return checkpointV2{}, fmt.Errorf("truncated checkpoint: %w", e)
			}
			cp.Batches[i].At = at
		}
	default:
		return cp, errors.New("not a detector checkpoint")
	}
	if d == nil {
		return cp, nil
	}
	if err := d.Restore(bufio.NewReader(r)); err != nil {
		if errors.Is(err, detect.ErrSnapshotVersion) {
			return cp, fmt.Errorf("%w (%v)", errOlderCheckpoint, err)
		}
		return checkpointV2{}, err
	}
	return cp, nil
}

// DirState is the PartitionState of one directory: the checkpoint of
// partition p in detectors.p<p>.state and its intent in rows.p<p>.intent,
// each replaced atomically (write, fsync, rename, fsync of the
// directory). Partition 0 also finds the single-process auditor's
// detectors.state when it has no checkpoint of its own.
type DirState struct {
	// Dir is the directory (created 0700 when missing).
	Dir string
}

func (s DirState) ckptPath(p int) string {
	return filepath.Join(s.Dir, "detectors.p"+strconv.Itoa(p)+".state")
}

func (s DirState) intentPath(p int) string {
	return filepath.Join(s.Dir, "rows.p"+strconv.Itoa(p)+".intent")
}

// LoadCheckpoint implements PartitionState.
func (s DirState) LoadCheckpoint(_ context.Context, p int) ([]byte, error) {
	b, err := os.ReadFile(s.ckptPath(p))
	if errors.Is(err, os.ErrNotExist) && p == 0 {
		b, err = os.ReadFile(filepath.Join(s.Dir, stateFileV1))
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// SaveCheckpoint implements PartitionState.
func (s DirState) SaveCheckpoint(_ context.Context, p int, data []byte) error {
	return s.replace(s.ckptPath(p), data)
}

const intentMagic = "CORDONRI1"

// LoadIntent implements PartitionState.
func (s DirState) LoadIntent(_ context.Context, p int) (first, last uint64, ok bool, err error) {
	b, err := os.ReadFile(s.intentPath(p))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	if len(b) != len(intentMagic)+16 || string(b[:len(intentMagic)]) != intentMagic {
		return 0, 0, false, fmt.Errorf("%s: not an insert intent", s.intentPath(p))
	}
	first = binary.BigEndian.Uint64(b[len(intentMagic):])
	last = binary.BigEndian.Uint64(b[len(intentMagic)+8:])
	if first == 0 || last < first {
		return 0, 0, false, fmt.Errorf("%s: invalid range [%d, %d]", s.intentPath(p), first, last)
	}
	return first, last, true, nil
}

// SaveIntent implements PartitionState.
func (s DirState) SaveIntent(_ context.Context, p int, first, last uint64) error {
	b := make([]byte, len(intentMagic)+16)
	copy(b, intentMagic)
	binary.BigEndian.PutUint64(b[len(intentMagic):], first)
	binary.BigEndian.PutUint64(b[len(intentMagic)+8:], last)
	return s.replace(s.intentPath(p), b)
}

// replace writes path atomically and durably.
func (s DirState) replace(path string, data []byte) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// memState is the PartitionState of an auditor without a state directory:
// progress lasts as long as the Auditor value.
type memState struct {
	mu      sync.Mutex
	ckpt    map[int][]byte
	intents map[int][2]uint64
}

func (m *memState) LoadCheckpoint(_ context.Context, p int) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ckpt[p], nil
}

func (m *memState) SaveCheckpoint(_ context.Context, p int, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ckpt == nil {
		m.ckpt = map[int][]byte{}
	}
	m.ckpt[p] = data
	return nil
}

func (m *memState) LoadIntent(_ context.Context, p int) (uint64, uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.intents[p]
	return i[0], i[1], ok, nil
}

func (m *memState) SaveIntent(_ context.Context, p int, first, last uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.intents == nil {
		m.intents = map[int][2]uint64{}
	}
	m.intents[p] = [2]uint64{first, last}
	return nil
}
