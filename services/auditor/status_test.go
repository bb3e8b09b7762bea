package auditor_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestStatusAllGathersEveryInstance: the status request reaches every
// auditor instance (no queue group), and StatusAll returns each one's
// reply, named; a refused token, a reply from nobody and a single-reply
// Status still behave.
func TestStatusAllGathersEveryInstance(t *testing.T) {
	at := time.Date(2026, 12, 3, 21, 0, 0, 0, time.UTC)
	q := startQueryEnv(t, "status_all", auditor.QueryOptions{
		Instance: auditor.InstanceInfo{Name: "aud-b", Source: "auditor/b"},
		Status: func() auditor.Stats {
			return auditor.Stats{PartitionCount: 4, Partitions: []auditor.PartitionStats{{Partition: 2, Lag: 5, Events: 70}, {Partition: 3}}}
		},
		Checkpoints: func() map[int]time.Time { return map[int]time.Time{2: at} },
	})
	// A second instance, on its own connection, as another process is.
	nc2, err := nats.Connect(q.env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc2.Close)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	auth, err := auditor.StartAdminAuth(sctx, q.env.JS, q.env.Anchors(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	srv2, err := auditor.NewQueryServer(auditor.QueryOptions{NC: nc2, Store: q.store, Auth: auth, Log: zerolog.Nop(),
		Instance: auditor.InstanceInfo{Name: "aud-a", Lease: true},
		Status: func() auditor.Stats {
			return auditor.Stats{PartitionCount: 4, Partitions: []auditor.PartitionStats{{Partition: 0, Events: 9}, {Partition: 3, Events: 1}}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close() })

	ctx := context.Background()
	admin := q.client(q.admin(t))
	// Poll: the second instance's subscription reaches the server's
	// interest graph at its own pace.
	var replies []auditor.StatusReply
	natstest.WaitFor(t, 20*time.Second, func() error {
		var err error
		if replies, err = admin.StatusAll(ctx, time.Second); err != nil {
			return err
		}
		if len(replies) != 2 {
			return errors.New("not every instance answered yet")
		}
		return nil
	})
	if replies[0].Instance.Name != "aud-a" || !replies[0].Instance.Lease || replies[1].Instance.Name != "aud-b" || replies[1].Instance.Source != "auditor/b" {
		t.Fatalf("instances %+v, %+v", replies[0].Instance, replies[1].Instance)
	}
	if !replies[1].Checkpoints[2].Equal(at) || len(replies[0].Checkpoints) != 0 {
		t.Errorf("checkpoints %v, %v", replies[0].Checkpoints, replies[1].Checkpoints)
	}
	f := auditor.NewFleet(replies, 0)
	if f.PartitionCount != 4 || len(f.Partitions) != 4 {
		t.Fatalf("fleet of %d partitions: %+v", f.PartitionCount, f)
	}
	owners := [][]string{}
	for _, p := range f.Partitions {
		owners = append(owners, p.Owners)
	}
	if want := [][]string{{"aud-a"}, {}, {"aud-b"}, {"aud-a", "aud-b"}}; !reflect.DeepEqual(owners, want) {
		t.Errorf("owners %v, want %v", owners, want)
	}
	if p := f.Partitions[2]; p.Lag != 5 || p.Events != 70 || !p.Checkpoint.Equal(at) || p.Problem != "" {
		t.Errorf("partition 2: %+v", p)
	}
	err = f.Err()
	if !errors.Is(err, auditor.ErrFleet) || !strings.Contains(err.Error(), "partitions without an owner: 1 ") ||
		!strings.Contains(err.Error(), "partitions run by more than one instance: 3 ") {
		t.Errorf("fleet error %v", err)
	}

	// A reply that is not a status is an error that says so.
	liar, err := q.env.NC.Subscribe(auditor.SubjectCmdStatus, func(m *nats.Msg) { _ = m.Respond([]byte("not json")) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.StatusAll(ctx, time.Second); err == nil || !strings.Contains(err.Error(), "malformed reply") {
		t.Errorf("a malformed reply: %v", err)
	}
	if err := liar.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	// A single-reply Status still gets one instance's counters.
	if st, err := admin.Status(ctx); err != nil || st.PartitionCount != 4 {
		t.Errorf("status %+v, %v", st, err)
	}
	// Every instance refuses a token it does not know.
	if _, err := q.client("not-a-token").StatusAll(ctx, time.Second); !errors.Is(err, auditor.ErrUnauthenticated) {
		t.Errorf("a bad token: %v, want unauthenticated", err)
	}
	// Nobody answers once both stopped: the server says there are no
	// responders, and StatusAll says so without waiting out its wait.
	q.srv.Close()
	srv2.Close()
	// Their unsubscriptions reach the server before the next request
	// (a request sent while a closing subscription is still known to the
	// server gets neither a reply nor a no-responders status).
	for _, nc := range []*nats.Conn{q.env.NC, nc2} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitFor(t, 20*time.Second, func() error {
		start := time.Now()
		_, err := admin.StatusAll(ctx, time.Minute)
		if took := time.Since(start); took > 30*time.Second {
			t.Fatalf("no responders: waited %v", took)
		}
		if !errors.Is(err, auditor.ErrNoAuditor) {
			return err
		}
		return nil
	})
}

// TestFleet: the view by partition of the instances' replies — its count
// is the stream's when given, else the largest reported, and a partition
// with no owner or two is flagged; instances that run nothing are listed.
func TestFleet(t *testing.T) {
	rep := func(name string, count int, parts ...int) auditor.StatusReply {
		r := auditor.StatusReply{Instance: auditor.InstanceInfo{Name: name}}
		r.Stats.PartitionCount = count
		for _, p := range parts {
			r.Stats.Partitions = append(r.Stats.Partitions, auditor.PartitionStats{Partition: p})
		}
		return r
	}
	const noOwner = "no owner: nothing reads this partition"
	for _, tc := range []struct {
		name    string
		replies []auditor.StatusReply
		parts   int
		count   int
		problem map[int]string
		idle    int
		err     string
	}{
		{name: "covered", replies: []auditor.StatusReply{rep("a", 4, 0, 1), rep("b", 4, 2, 3)}, count: 4},
		{name: "the stream's count shows unread partitions", replies: []auditor.StatusReply{rep("a", 0, 0, 1)}, parts: 3, count: 3,
			problem: map[int]string{2: noOwner}, err: "partitions without an owner: 2 "},
		{name: "an idle instance", replies: []auditor.StatusReply{rep("a", 2, 0, 1), rep("b", 2)}, count: 2, idle: 1},
		{name: "overlap", replies: []auditor.StatusReply{rep("a", 2, 0, 1), rep("b", 2, 1)}, count: 2,
			problem: map[int]string{1: "2 owners"}, err: "more than one instance: 1 "},
		{name: "count from the partitions run", replies: []auditor.StatusReply{rep("a", 0, 5)}, count: 6,
			problem: map[int]string{0: noOwner, 1: noOwner, 2: noOwner, 3: noOwner, 4: noOwner}, err: "0, 1, 2, 3, 4 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := auditor.NewFleet(tc.replies, tc.parts)
			if f.PartitionCount != tc.count || len(f.Partitions) != tc.count || len(f.Idle) != tc.idle {
				t.Fatalf("fleet %+v", f)
			}
			for _, p := range f.Partitions {
				if want := tc.problem[p.Partition]; p.Problem != want {
					t.Errorf("partition %d: problem %q, want %q", p.Partition, p.Problem, want)
				}
			}
			err := f.Err()
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			var b strings.Builder
			if err := f.WriteText(&b, time.Now()); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(b.String(), "\n"); n < tc.count+2 {
				t.Errorf("%d lines for %d partitions:\n%s", n, tc.count, b.String())
			}
			if tc.idle > 0 && !strings.Contains(b.String(), "instances without a partition: b") {
				t.Errorf("the idle instance is not listed:\n%s", b.String())
			}
		})
	}
}
