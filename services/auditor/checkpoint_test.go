package auditor

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
)

func newEngine(t *testing.T) *detect.Engine {
	t.Helper()
	d, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCheckpointV2 round-trips a partition checkpoint, and refuses what
// belongs to another layout or is damaged, with a clear error.
func TestCheckpointV2(t *testing.T) {
	cp := checkpointV2{Partition: 3, Partitions: 8, UsageSeq: 123456, LedgerSeq: 77,
		Batches: []seenBatch{{ID: uuid.Must(uuid.NewV7()), At: 1_700_000_000_000_000}, {ID: uuid.Must(uuid.NewV7()), At: -5}}}
	data, err := encodeCheckpoint(cp, newEngine(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCheckpoint(data, 3, 8, newEngine(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Partition != 3 || got.Partitions != 8 || got.UsageSeq != cp.UsageSeq || got.LedgerSeq != cp.LedgerSeq || !slices.Equal(got.Batches, cp.Batches) {
		t.Fatalf("round trip: %+v, want %+v", got, cp)
	}
	tests := []struct {
		name     string
		data     []byte
		p, parts int
		want     error
		say      string
	}{
		{"another partition", data, 4, 8, errCheckpointMismatch, "partition 3 of 8"},
		{"another partition count", data, 3, 16, errCheckpointMismatch, "repartition"},
		{"truncated header", data[:12], 3, 8, nil, "truncated"},
		{"batch count beyond the data", append([]byte(stateMagicV2), 3, 8, 1, 1, 0x80, 0x80, 0x04), 3, 8, nil, "cannot fit"},
		{"not a checkpoint", []byte("hello world"), 3, 8, nil, "not a detector checkpoint"},
		{"damaged snapshot", append(slices.Clone(data[:len(data)-10]), "garbage!!!"...), 3, 8, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCheckpoint(tt.data, tt.p, tt.parts, newEngine(t))
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.say) {
				t.Fatalf("%v, want %v saying %q", err, tt.want, tt.say)
			}
		})
	}
}

// TestCheckpointV1: the single-process auditor's checkpoint is loaded as
// partition 0 of 1 and refused, saying what to do, on a partitioned stream.
func TestCheckpointV1(t *testing.T) {
	d := newEngine(t)
	var snap strings.Builder
	if err := d.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	v1 := append([]byte(stateMagicV1), make([]byte, 16)...)
	binary.BigEndian.PutUint64(v1[9:], 4242)
	binary.BigEndian.PutUint64(v1[17:], 77)
	v1 = append(v1, snap.String()...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFileV1), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	st := DirState{Dir: dir}
	data, err := st.LoadCheckpoint(context.Background(), 0)
	if err != nil || data == nil {
		t.Fatalf("partition 0 does not find the version 1 checkpoint: %v", err)
	}
	if other, _ := st.LoadCheckpoint(context.Background(), 1); other != nil {
		t.Fatal("partition 1 was given the version 1 checkpoint")
	}
	cp, err := decodeCheckpoint(data, 0, 1, newEngine(t))
	if err != nil || cp.UsageSeq != 4242 || cp.LedgerSeq != 77 {
		t.Fatalf("as partition 0 of 1: %+v, %v", cp, err)
	}
	_, err = decodeCheckpoint(data, 0, 8, newEngine(t))
	if !errors.Is(err, errCheckpointMismatch) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("on 8 partitions: %v, want a refusal saying what to do", err)
	}
}

// TestDirState: checkpoints and intents are per partition, survive a new
// DirState on the same directory, and a damaged intent is an error, not
// an empty one (that would regroup rows).
func TestDirState(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s := DirState{Dir: dir}
	if _, _, ok, err := s.LoadIntent(ctx, 2); ok || err != nil {
		t.Fatalf("no intent yet: ok %v, %v", ok, err)
	}
	if err := s.SaveIntent(ctx, 2, 10, 20); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveIntent(ctx, 2, 21, 40); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(ctx, 2, []byte("p2")); err != nil {
		t.Fatal(err)
	}
	s = DirState{Dir: dir}
	if f, l, ok, err := s.LoadIntent(ctx, 2); !ok || err != nil || f != 21 || l != 40 {
		t.Fatalf("intent [%d, %d] ok %v, %v; want [21, 40]", f, l, ok, err)
	}
	if _, _, ok, _ := s.LoadIntent(ctx, 3); ok {
		t.Fatal("partition 3 has partition 2's intent")
	}
	if b, err := s.LoadCheckpoint(ctx, 2); err != nil || string(b) != "p2" {
		t.Fatalf("checkpoint %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rows.p2.intent"), []byte("CORDONRI1short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.LoadIntent(ctx, 2); err == nil || !strings.Contains(err.Error(), "not an insert intent") {
		t.Fatalf("damaged intent: %v", err)
	}
}
