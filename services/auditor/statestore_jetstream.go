package auditor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Partition state in JetStream (lease mode).
//
// A partition's checkpoint is an object of the object store
// events.ObjectStoreAuditorCheckpoints named p<n>.<generation>.<epoch>;
// the KV bucket events.BucketAuditorState points at the current one
// (ckpt.p<n>) and holds the partition's insert intent (intent.p<n>). Both
// keys carry the lease epoch of the instance that wrote them and are
// written by compare-and-set on the revision just read, and a write is
// refused when this instance's lease is not Valid or when the key was
// written under a newer epoch: a zombie (an instance that lost the
// partition and has not noticed) can neither roll the checkpoint back nor
// replace the new owner's intent. The object a pointer leaves is deleted
// once the pointer moved.

// Sentinel errors of the JetStream partition state.
var (
	// ErrNotOwner is returned for a write to a partition this instance
	// does not hold a valid lease of.
	ErrNotOwner = errors.New("partition not owned by this instance")
	// ErrFenced is returned for a write to a partition whose state a newer
	// owner (a larger lease epoch) has written.
	ErrFenced = errors.New("partition state written by a newer owner")
)

// Fence is what the JetStream partition state asks before each write:
// whether this instance still holds p, and the epoch of its lease (which
// grows with every new owner). LeaseOwner implements it.
type Fence interface {
	Valid(p int) bool
	Epoch(p int) (epoch uint64, ok bool)
}

// JSStateOptions configure a JSState.
type JSStateOptions struct {
	// JS reaches the state bucket and the checkpoint object store (both
	// created when missing).
	JS jetstream.JetStream
	// Fence guards every write.
	Fence Fence
	// Partitions is the stream's partition count (1 to MaxPartitions).
	Partitions int
	// Replicas of the bucket and the object store when created (default 1).
	Replicas int
	// Log receives what could not be cleaned up.
	Log zerolog.Logger
}

// JSState is the PartitionState of lease mode, in JetStream.
type JSState struct {
	o   JSStateOptions
	kv  jetstream.KeyValue
	obs jetstream.ObjectStore
}

var _ PartitionState = (*JSState)(nil)

// checkpointPointer is the value of ckpt.p<n>.
type checkpointPointer struct {
	Object string `json:"object"`
	Gen    uint64 `json:"gen"`
	Epoch  uint64 `json:"epoch"`
	Size   int    `json:"size"`
	At     string `json:"at"`
}

// intentRecord is the value of intent.p<n>.
type intentRecord struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	Epoch uint64 `json:"epoch"`
}

// StateBucketConfig is the state bucket's configuration.
func StateBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      events.BucketAuditorState,
		Description: "Cordon auditor partition insert intents and checkpoint pointers",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// CheckpointStoreConfig is the checkpoint object store's configuration.
func CheckpointStoreConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      events.ObjectStoreAuditorCheckpoints,
		Description: "Cordon auditor partition checkpoints",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// OpenJSState opens (creating when missing) the state bucket and the
// checkpoint object store.
func OpenJSState(ctx context.Context, o JSStateOptions) (*JSState, error) {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	switch {
	case o.JS == nil:
		return nil, errors.New("partition state: no JetStream")
	case o.Fence == nil:
		return nil, errors.New("partition state: no fence (the lease owner)")
	case o.Partitions < 1 || o.Partitions > MaxPartitions:
		return nil, fmt.Errorf("partition state: %d partitions: want 1 to %d", o.Partitions, MaxPartitions)
	case o.Replicas < 1 || o.Replicas > 5:
		return nil, fmt.Errorf("partition state: replicas %d: want 1 to 5", o.Replicas)
	}
	s := &JSState{o: o}
	var err error
	rctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	err = natsconn.Retry(rctx, o.Log, "bucket "+events.BucketAuditorState, func(ctx context.Context) (err error) {
		s.kv, err = openKV(ctx, o.JS, StateBucketConfig(o.Replicas))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open state bucket %s: %w", events.BucketAuditorState, err)
	}
	err = natsconn.Retry(rctx, o.Log, "object store "+events.ObjectStoreAuditorCheckpoints, func(ctx context.Context) (err error) {
		s.obs, err = o.JS.ObjectStore(ctx, events.ObjectStoreAuditorCheckpoints)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			s.obs, err = o.JS.CreateObjectStore(ctx, CheckpointStoreConfig(o.Replicas))
			if errors.Is(err, jetstream.ErrBucketExists) {
				s.obs, err = o.JS.ObjectStore(ctx, events.ObjectStoreAuditorCheckpoints)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open checkpoint store %s: %w", events.ObjectStoreAuditorCheckpoints, err)
	}
	return s, nil
}

// CheckpointKey and IntentKey are partition p's keys in the state bucket.
func CheckpointKey(p int) string { return "ckpt.p" + strconv.Itoa(p) }

// IntentKey is partition p's insert intent key in the state bucket.
func IntentKey(p int) string { return "intent.p" + strconv.Itoa(p) }

// CheckpointObject names a checkpoint object: partition, generation (one
// more than the pointer's it replaces) and the writer's lease epoch, so
// that two writers never write one object.
func CheckpointObject(p int, gen, epoch uint64) string {
	return fmt.Sprintf("p%d.%d.%d", p, gen, epoch)
}

func (s *JSState) checkPartition(p int) error {
	if p < 0 || p >= s.o.Partitions {
		return fmt.Errorf("partition %d: want 0 to %d", p, s.o.Partitions-1)
	}
	return nil
}

// fence returns this instance's epoch of p, or ErrNotOwner.
func (s *JSState) fence(p int) (uint64, error) {
	epoch, ok := s.o.Fence.Epoch(p)
	if !ok || !s.o.Fence.Valid(p) {
		return 0, fmt.Errorf("partition %d: %w", p, ErrNotOwner)
	}
	return epoch, nil
}

// getJSON reads key into v; rev is 0 when the key is missing or deleted.
func (s *JSState) getJSON(ctx context.Context, key string, v any) (rev uint64, err error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	return e.Revision(), nil
}

// casJSON writes v to key on revision rev (0: the key must not exist).
func (s *JSState) casJSON(ctx context.Context, key string, v any, rev uint64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, key, b)
	} else {
		_, err = s.kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// conflict reports whether err is a lost compare-and-set.
func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// casTries bounds the compare-and-set retries of one write: a conflict
// with this instance's own earlier write (a reply lost) settles on the
// next read; one with another writer ends in ErrFenced or ErrNotOwner.
const casTries = 3

// LoadCheckpoint implements PartitionState.
func (s *JSState) LoadCheckpoint(ctx context.Context, p int) ([]byte, error) {
	if err := s.checkPartition(p); err != nil {
		return nil, err
	}
	var ptr checkpointPointer
	rev, err := s.getJSON(ctx, CheckpointKey(p), &ptr)
	if err != nil || rev == 0 {
		return nil, err
	}
	data, err := s.obs.GetBytes(ctx, ptr.Object)
	if err != nil {
		return nil, fmt.Errorf("partition %d checkpoint %s: %w", p, ptr.Object, err)
	}
	if len(data) != ptr.Size {
		return nil, fmt.Errorf("partition %d checkpoint %s: %d bytes, the pointer says %d", p, ptr.Object, len(data), ptr.Size)
	}
	return data, nil
}

// SaveCheckpoint implements PartitionState: the object first, then the
// pointer by compare-and-set, then the former object is deleted.
func (s *JSState) SaveCheckpoint(ctx context.Context, p int, data []byte) error {
	if err := s.checkPartition(p); err != nil {
		return err
	}
	for try := 0; ; try++ {
		epoch, err := s.fence(p)
		if err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		var old checkpointPointer
		rev, err := s.getJSON(ctx, CheckpointKey(p), &old)
		if err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		if rev != 0 && old.Epoch > epoch {
			return fmt.Errorf("save checkpoint of partition %d (epoch %d): %w (epoch %d)", p, epoch, ErrFenced, old.Epoch)
		}
		ptr := checkpointPointer{Gen: old.Gen + 1, Epoch: epoch, Size: len(data), At: time.Now().UTC().Format(time.RFC3339Nano)}
		ptr.Object = CheckpointObject(p, ptr.Gen, epoch)
		if _, err := s.obs.PutBytes(ctx, ptr.Object, data); err != nil {
			return fmt.Errorf("save checkpoint of partition %d: %w", p, err)
		}
		// The upload may have outlived the lease.
		if _, err := s.fence(p); err != nil {
			s.deleteObject(p, ptr.Object)
			return fmt.Errorf("save checkpoint: %w", err)
		}
		err = s.casJSON(ctx, CheckpointKey(p), ptr, rev)
		if err == nil {
			if rev != 0 && old.Object != ptr.Object {
				s.deleteObject(p, old.Object)
			}
			return nil
		}
		s.deleteObject(p, ptr.Object)
		if !conflict(err) || try+1 >= casTries {
			return fmt.Errorf("save checkpoint of partition %d: %w", p, err)
		}
	}
}

// deleteObject removes a checkpoint object no pointer names (any more).
func (s *JSState) deleteObject(p int, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.o.Log.Warn().Err(err).Int("partition", p).Str("object", name).Msg("checkpoint object left behind")
	}
}

// LoadIntent implements PartitionState.
func (s *JSState) LoadIntent(ctx context.Context, p int) (first, last uint64, ok bool, err error) {
	if err := s.checkPartition(p); err != nil {
		return 0, 0, false, err
	}
	var in intentRecord
	rev, err := s.getJSON(ctx, IntentKey(p), &in)
	if err != nil || rev == 0 {
		return 0, 0, false, err
	}
	return in.First, in.Last, true, nil
}

// SaveIntent implements PartitionState.
func (s *JSState) SaveIntent(ctx context.Context, p int, first, last uint64) error {
	if err := s.checkPartition(p); err != nil {
		return err
	}
	if first > last {
		return fmt.Errorf("save intent of partition %d: range [%d, %d] is empty", p, first, last)
	}
	for try := 0; ; try++ {
		epoch, err := s.fence(p)
		if err != nil {
			return fmt.Errorf("save intent: %w", err)
		}
		var old intentRecord
		rev, err := s.getJSON(ctx, IntentKey(p), &old)
		if err != nil {
			return fmt.Errorf("save intent: %w", err)
		}
		if rev != 0 && old.Epoch > epoch {
			return fmt.Errorf("save intent of partition %d (epoch %d): %w (epoch %d)", p, epoch, ErrFenced, old.Epoch)
		}
		err = s.casJSON(ctx, IntentKey(p), intentRecord{First: first, Last: last, Epoch: epoch}, rev)
		if err == nil {
			return nil
		}
		if !conflict(err) || try+1 >= casTries {
			return fmt.Errorf("save intent of partition %d: %w", p, err)
		}
	}
}
