package natscluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamLeader is the name of the node leading stream.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// SpareNode returns the index of a node whose loss costs only what it
// hosts besides leaderships: it is neither the JetStream meta leader nor
// node client, and the leaders of streams are moved off it (asked to step
// down). Tests kill it to lose the consumers placed there while every
// stream keeps its leader.
func (c *Cluster) SpareNode(t testing.TB, client int, streams ...string) int {
	t.Helper()
	meta, err := c.WaitMetaLeader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	spare := -1
	for i, n := range c.Nodes {
		if i != client && n.Name != meta && n.Running() {
			spare = i
			break
		}
	}
	if spare < 0 {
		t.Fatalf("no node besides the client's (%s) and the meta leader (%s)", c.Nodes[client].Name, meta)
	}
	c.MoveLeadersOff(t, spare, streams...)
	if now, err := c.WaitMetaLeader(10 * time.Second); err != nil || now != meta {
		t.Fatalf("meta leader moved from %s to %s (%v) while stream leaders moved", meta, now, err)
	}
	return spare
}

// MoveLeadersOff asks the leaders of streams to step down until node n
// leads none of them.
func (c *Cluster) MoveLeadersOff(t testing.TB, n int, streams ...string) {
	t.Helper()
	nc, js := c.Connect(t)
	defer nc.Close()
	name := c.Nodes[n].Name
	for _, stream := range streams {
		WaitFor(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			leader, err := c.StreamLeader(ctx, js, stream)
			if err != nil {
				return err
			}
			if leader != name {
				return nil
			}
			if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 2*time.Second); err != nil {
				return fmt.Errorf("step down %s: %w", stream, err)
			}
			return fmt.Errorf("%s is still led by %s", stream, name)
		})
	}
}

// Rewatcher is a reader of a stream that can re-create its ordered
// consumer (a follow.Reader).
type Rewatcher interface {
	Rewatch(ctx context.Context, why string) error
	ConsumerInfo() *jetstream.ConsumerInfo
}

// PlaceOn re-creates r's consumer until node n hosts it (JetStream places
// an ordered consumer on a random replica of its stream), as the server
// reports it.
func (c *Cluster) PlaceOn(t testing.TB, r Rewatcher, n int) {
	t.Helper()
	nc, js := c.Connect(t)
	defer nc.Close()
	name := c.Nodes[n].Name
	var hosts []string
	for range 100 {
		if info := r.ConsumerInfo(); info != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cons, err := js.Consumer(ctx, info.Stream, info.Name)
			cancel()
			if err == nil && cons.CachedInfo().Cluster != nil {
				host := cons.CachedInfo().Cluster.Leader
				if host == name {
					return
				}
				hosts = append(hosts, host)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.Rewatch(ctx, "test: place the consumer on "+name)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(hosts)
	t.Fatalf("consumer never placed on %s in 100 tries; hosts seen %v", name, slices.Compact(hosts))
}
