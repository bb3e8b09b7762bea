package detect_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

// smallScenario is a week of traffic with attacks in its second half.
func smallScenario(t testing.TB) *simulate.Dataset {
	t.Helper()
	sc := simulate.DefaultScenario()
	sc.Seed = 7
	sc.Days = 8
	sc.Holders = 20
	sc.UsageEvents = 50_000
	sc.AttacksPerKind = 2
	sc.AttackAfter = 4 * 24 * time.Hour
	ds, err := simulate.Generate(sc)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func observeAll(t testing.TB, e *detect.Engine, envs []events.Envelope) []events.AnomalyDetected {
	t.Helper()
	var out []events.AnomalyDetected
	for _, env := range envs {
		out = append(out, e.Observe(env)...)
	}
	return out
}

func TestSnapshotRestoreEquivalence(t *testing.T) {
	ds := smallScenario(t)
	whole, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := observeAll(t, whole, ds.Events)
	if len(want) < 10 {
		t.Fatalf("only %d anomalies in the uninterrupted run: the test would prove nothing", len(want))
	}
	index := map[string]int{}
	for i, env := range ds.Events {
		index[env.ID.String()] = i
	}
	// Cut at half the stream, and among the anomalies: right after the
	// first one (its cooldown running) and at the median one.
	cuts := []struct {
		name  string
		at    int
		split bool
	}{
		{"half the stream", len(ds.Events) / 2, false},
		{"after the first anomaly", index[want[0].EventID] + 1, true},
		{"at the median anomaly", index[want[len(want)/2].EventID], true},
	}
	for _, c := range cuts {
		cut := c.at
		t.Run(c.name, func(t *testing.T) {
			first, _ := detect.New(detect.DefaultConfig())
			got := observeAll(t, first, ds.Events[:cut])
			var buf bytes.Buffer
			if err := first.Snapshot(&buf); err != nil {
				t.Fatal(err)
			}
			size := buf.Len()
			second, _ := detect.New(detect.DefaultConfig())
			if err := second.Restore(&buf); err != nil {
				t.Fatal(err)
			}
			if a, b := first.Stats().Tokens, second.Stats().Tokens; a != b {
				t.Fatalf("restored %d tokens, snapshot of %d", b, a)
			}
			before := len(got)
			got = append(got, observeAll(t, second, ds.Events[cut:])...)
			if c.split && (before == 0 || len(got) == before) {
				t.Fatalf("anomalies before/after the cut: %d/%d; the cut must split them", before, len(got)-before)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("interrupted run gave %d anomalies, uninterrupted %d (or they differ)", len(got), len(want))
			}
			t.Logf("cut at event %d: %d tokens in a %d-byte snapshot, %d+%d anomalies", cut, first.Stats().Tokens, size, before, len(got)-before)
		})
	}
}

func TestRestoreWithoutSnapshotReAlerts(t *testing.T) {
	// The converse: a restart without the state forgets the cooldowns and
	// baselines, which is what Snapshot/Restore is for.
	stream := concat(history(), []events.Envelope{use(at(9, 2, 0), "203.0.113.9")})
	e, _ := detect.New(detect.DefaultConfig())
	if len(observeAll(t, e, stream)) == 0 {
		t.Fatal("no anomaly to begin with")
	}
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	restored, _ := detect.New(detect.DefaultConfig())
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	again := use(at(9, 2, 10), "203.0.113.9")
	if got := restored.Observe(again); len(got) != 0 {
		t.Fatalf("restored engine re-alerted within the cooldown: %v", detectorsOf(got))
	}
	fresh, _ := detect.New(detect.DefaultConfig())
	observeAll(t, fresh, history())
	if got := fresh.Observe(again); len(got) == 0 {
		t.Fatal("an engine with the baseline but not the cooldown should alert")
	}
}

func TestRestoreRejectsBadInput(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	observeAll(t, e, history())
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	version := bytes.Clone(good)
	version[8] = 99
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, detect.ErrSnapshot},
		{"not a snapshot", []byte("hello, world, this is not it"), detect.ErrSnapshot},
		{"other version", version, detect.ErrSnapshotVersion},
		{"truncated", good[:len(good)/2], detect.ErrSnapshot},
		{"flipped bit", flip(len(good) / 2), detect.ErrSnapshot},
		{"bad checksum", flip(len(good) - 1), detect.ErrSnapshot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := detect.New(detect.DefaultConfig())
			r.Observe(use(at(0, 10, 0), "10.0.0.1", token("019cabd9-0000-7000-8000-0000000000ff")))
			err := r.Restore(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Restore: %v, want %v", err, tt.want)
			}
			if r.Stats().Tokens != 1 {
				t.Fatalf("a failed restore changed the state: %d tokens", r.Stats().Tokens)
			}
		})
	}
}

func TestRestoreKeepsMostRecentWithinBound(t *testing.T) {
	e, _ := detect.New(detect.DefaultConfig())
	observeAll(t, e, history())
	ids := []string{"019cabd9-0000-7000-8000-000000000201", "019cabd9-0000-7000-8000-000000000202"}
	for i, id := range ids {
		e.Observe(use(at(9, 10, i), "10.9.9.9", token(id), func(u *events.UsageDecided) { u.Holder = fmt.Sprint("other-", i) }))
	}
	var buf bytes.Buffer
	if err := e.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	cfg := detect.DefaultConfig()
	cfg.MaxTokens, cfg.MaxHolders = 2, 2
	small, _ := detect.New(cfg)
	if err := small.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if st := small.Stats(); st.Tokens != 2 || st.Holders != 2 {
		t.Fatalf("restored %d tokens and %d holders into tables of 2", st.Tokens, st.Holders)
	}
	// The oldest token (tok) and its holder were dropped: only the
	// tenant's address spaces judge it.
	if got := small.Observe(use(at(9, 11, 0), "203.0.113.9")); len(got) != 1 || got[0].Evidence.Details["judged_by"] != detect.LevelTenant {
		t.Fatalf("least recently seen token survived the bound: %v", got)
	}
}
