package auditor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// fixedFence holds partitions at given epochs; clearing one makes the
// instance a zombie that has not noticed (its Valid turned false).
type fixedFence struct {
	mu     sync.Mutex
	epochs map[int]uint64
}

func (f *fixedFence) set(p int, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epochs == nil {
		f.epochs = map[int]uint64{}
	}
	if epoch == 0 {
		delete(f.epochs, p)
		return
	}
	f.epochs[p] = epoch
}

func (f *fixedFence) Valid(p int) bool {
	_, ok := f.Epoch(p)
	return ok
}

func (f *fixedFence) Epoch(p int) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.epochs[p]
	return e, ok
}

func openJSState(t *testing.T, js jetstream.JetStream, f auditor.Fence) *auditor.JSState {
	t.Helper()
	s, err := auditor.OpenJSState(context.Background(), auditor.JSStateOptions{JS: js, Fence: f, Partitions: 8, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkpointObjects lists the checkpoint objects of partition p.
func checkpointObjects(t *testing.T, js jetstream.JetStream, p int) []string {
	t.Helper()
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, events.ObjectStoreAuditorCheckpoints)
	if err != nil {
		t.Fatal(err)
	}
	list, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range list {
		if strings.HasPrefix(o.Name, fmt.Sprintf("p%d.", p)) {
			out = append(out, o.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestJSStateRoundTrip: checkpoints (one of several MiB, in chunks) and
// intents come back as saved, each partition apart; a new checkpoint
// replaces the object of the former one, which is deleted.
func TestJSStateRoundTrip(t *testing.T) {
	env := natstest.Run(t)
	f := &fixedFence{}
	f.set(1, 10)
	f.set(2, 11)
	s := openJSState(t, env.JS, f)
	ctx := context.Background()
	if data, err := s.LoadCheckpoint(ctx, 1); err != nil || data != nil {
		t.Fatalf("no checkpoint yet: %q, %v", data, err)
	}
	if _, _, ok, err := s.LoadIntent(ctx, 1); err != nil || ok {
		t.Fatalf("no intent yet: ok %v, %v", ok, err)
	}
	big := make([]byte, 5<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for i, data := range [][]byte{[]byte("first"), big, []byte("third")} {
		if err := s.SaveCheckpoint(ctx, 1, data); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		got, err := s.LoadCheckpoint(ctx, 1)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load %d: %d bytes, %v; want the %d saved", i, len(got), err, len(data))
		}
		if objs := checkpointObjects(t, env.JS, 1); len(objs) != 1 || objs[0] != auditor.CheckpointObject(1, uint64(i+1), 10) {
			t.Fatalf("after save %d: objects %v, want only %s", i, objs, auditor.CheckpointObject(1, uint64(i+1), 10))
		}
	}
	if err := s.SaveCheckpoint(ctx, 2, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LoadCheckpoint(ctx, 1); string(got) != "third" {
		t.Fatalf("partition 1 after partition 2's save: %q", got)
	}
	if err := s.SaveIntent(ctx, 1, 100, 250); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveIntent(ctx, 1, 251, 400); err != nil {
		t.Fatal(err)
	}
	if first, last, ok, err := s.LoadIntent(ctx, 1); err != nil || !ok || first != 251 || last != 400 {
		t.Fatalf("intent: [%d, %d] ok %v %v, want [251, 400]", first, last, ok, err)
	}
	if _, _, ok, _ := s.LoadIntent(ctx, 2); ok {
		t.Fatal("partition 2 has partition 1's intent")
	}
	// A restarted instance (another JSState) reads the same.
	s2 := openJSState(t, env.JS, f)
	if got, err := s2.LoadCheckpoint(ctx, 2); err != nil || string(got) != "two" {
		t.Fatalf("reopened: %q, %v", got, err)
	}
}

// TestJSStateFencing: an instance whose lease is not valid writes nothing;
// a zombie (still valid by its own clock, an older epoch) can neither roll
// the checkpoint back nor replace the new owner's intent, and leaves no
// object behind.
func TestJSStateFencing(t *testing.T) {
	env := natstest.Run(t)
	ctx := context.Background()
	zombieFence, ownerFence := &fixedFence{}, &fixedFence{}
	zombie, owner := openJSState(t, env.JS, zombieFence), openJSState(t, env.JS, ownerFence)

	// Not held: refused, nothing written.
	if err := zombie.SaveCheckpoint(ctx, 3, []byte("x")); !errors.Is(err, auditor.ErrNotOwner) {
		t.Fatalf("save without the lease: %v, want ErrNotOwner", err)
	}
	if err := zombie.SaveIntent(ctx, 3, 1, 2); !errors.Is(err, auditor.ErrNotOwner) {
		t.Fatalf("intent without the lease: %v, want ErrNotOwner", err)
	}
	if objs := checkpointObjects(t, env.JS, 3); len(objs) != 0 {
		t.Fatalf("objects %v written without the lease", objs)
	}

	zombieFence.set(3, 5)
	if err := zombie.SaveCheckpoint(ctx, 3, []byte("old owner")); err != nil {
		t.Fatal(err)
	}
	if err := zombie.SaveIntent(ctx, 3, 1, 10); err != nil {
		t.Fatal(err)
	}
	// The new owner (a larger epoch) takes over and writes.
	ownerFence.set(3, 9)
	if err := owner.SaveCheckpoint(ctx, 3, []byte("new owner")); err != nil {
		t.Fatal(err)
	}
	if err := owner.SaveIntent(ctx, 3, 11, 20); err != nil {
		t.Fatal(err)
	}
	if err := zombie.SaveCheckpoint(ctx, 3, []byte("rolled back")); !errors.Is(err, auditor.ErrFenced) {
		t.Fatalf("zombie checkpoint: %v, want ErrFenced", err)
	}
	if err := zombie.SaveIntent(ctx, 3, 1, 10); !errors.Is(err, auditor.ErrFenced) {
		t.Fatalf("zombie intent: %v, want ErrFenced", err)
	}
	if got, err := owner.LoadCheckpoint(ctx, 3); err != nil || string(got) != "new owner" {
		t.Fatalf("checkpoint after the zombie's attempt: %q, %v", got, err)
	}
	if first, last, _, _ := owner.LoadIntent(ctx, 3); first != 11 || last != 20 {
		t.Fatalf("intent after the zombie's attempt: [%d, %d], want [11, 20]", first, last)
	}
	if objs := checkpointObjects(t, env.JS, 3); !slices.Equal(objs, []string{auditor.CheckpointObject(3, 2, 9)}) {
		t.Fatalf("objects %v, want only the new owner's", objs)
	}
}

// TestJSStateWithLeases: the state guarded by a real lease owner writes
// while the lease is held and refuses once the owner has left.
func TestJSStateWithLeases(t *testing.T) {
	env := natstest.Run(t)
	o, err := auditor.NewLeaseOwner(auditor.LeaseOptions{JS: env.JS, Instance: "solo", TTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	owned := make(chan []int, 4)
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, 2, owned) }()
	natstest.WaitFor(t, takeover, func() error {
		if !o.Valid(0) || !o.Valid(1) {
			return errors.New("partitions not held yet")
		}
		return nil
	})
	s := openJSState(t, env.JS, o)
	if err := s.SaveCheckpoint(context.Background(), 1, []byte("held")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCheckpoint(context.Background(), 1, []byte("after leaving")); !errors.Is(err, auditor.ErrNotOwner) {
		t.Fatalf("save after leaving: %v, want ErrNotOwner", err)
	}
	if got, _ := s.LoadCheckpoint(context.Background(), 1); string(got) != "held" {
		t.Fatalf("checkpoint %q, want the one saved while held", got)
	}
}

// TestJSStateOptions: malformed options and partitions are refused.
func TestJSStateOptions(t *testing.T) {
	env := natstest.Run(t)
	f := &fixedFence{}
	tests := []struct {
		name string
		o    auditor.JSStateOptions
		want string
	}{
		{"no JetStream", auditor.JSStateOptions{Fence: f, Partitions: 8}, "no JetStream"},
		{"no fence", auditor.JSStateOptions{JS: env.JS, Partitions: 8}, "no fence"},
		{"no partitions", auditor.JSStateOptions{JS: env.JS, Fence: f}, "0 partitions"},
		{"too many partitions", auditor.JSStateOptions{JS: env.JS, Fence: f, Partitions: 65}, "65 partitions"},
		{"replicas", auditor.JSStateOptions{JS: env.JS, Fence: f, Partitions: 8, Replicas: 9}, "replicas 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := auditor.OpenJSState(context.Background(), tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	s := openJSState(t, env.JS, f)
	f.set(8, 1)
	ctx := context.Background()
	for _, p := range []int{-1, 8} {
		if err := s.SaveCheckpoint(ctx, p, []byte("x")); err == nil || !strings.Contains(err.Error(), "want 0 to 7") {
			t.Errorf("save of partition %d: %v", p, err)
		}
		if _, err := s.LoadCheckpoint(ctx, p); err == nil {
			t.Errorf("load of partition %d: no error", p)
		}
	}
	f.set(0, 1)
	if err := s.SaveIntent(ctx, 0, 5, 4); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty intent range: %v", err)
	}
}
