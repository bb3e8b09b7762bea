package detect_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// smallSnapshot is the snapshot of an engine that saw a little of every
// level: tokens, a holder, a tenant, a source.
func smallSnapshot(tb testing.TB) []byte {
	tb.Helper()
	e, err := detect.New(detect.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	for _, env := range officeHours(0, 1) {
		e.Observe(env)
	}
	e.Observe(use(at(1, 3, 0), "203.0.113.1", token(""), deny("malformed"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", 7 }))
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzRestore: whatever the bytes, Restore returns nil or an ErrSnapshot /
// ErrSnapshotVersion error, never panics, and leaves the engine usable;
// a snapshot it accepts round-trips.
func FuzzRestore(f *testing.F) {
	good := smallSnapshot(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("CORDONDT\x01\x10\x06\x01\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("CORDONDT\x02\x10\x0c\x20\x01\x00\x00\xff\xff\xff\xff\x0f"))
	f.Add([]byte("CORDONDT\x03\x10\x0c\x20\x01\x00\x00\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := detect.New(detect.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		err = e.Restore(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, detect.ErrSnapshot) && !errors.Is(err, detect.ErrSnapshotVersion) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		e.Observe(use(at(2, 11, 0), "10.1.2.10"))
		var buf bytes.Buffer
		if err := e.Snapshot(&buf); err != nil {
			t.Fatal(err)
		}
		if err := e.Restore(&buf); err != nil {
			t.Fatalf("an accepted snapshot does not round-trip: %v", err)
		}
	})
}
