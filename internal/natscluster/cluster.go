// Package natscluster runs a real NATS JetStream cluster for tests: three
// nats-server processes on loopback ports, each with its own data
// directory, joined by cluster routes, with Cordon's streams and buckets
// replicated on all of them. Tests kill a node with SIGKILL, restart it on
// the same data directory and wait until it has caught up, to show that
// what JetStream acknowledged survives the loss of a node — the promise
// the distributed deployment (deploy/compose) relies on.
//
// Separate processes, not in-process servers, so that a kill is a real
// crash: no deferred shutdown, no flushed buffers, sockets reset.
package natscluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// ErrNotRunning is returned for an operation on a node that is down.
var ErrNotRunning = errors.New("node is not running")

// Options configures a test cluster.
type Options struct {
	// Nodes is the number of servers (default 3).
	Nodes int
	// Streams are the options for Cordon's streams and buckets; Replicas
	// defaults to the number of nodes (at most 3) and UsageMaxBytes to
	// 256 MiB so that the reservation fits a test machine.
	Streams events.StreamOptions
	// NoStreams skips creating Cordon's streams and buckets.
	NoStreams bool
	// AuthConf is a nats-server configuration include (natsauth's
	// auth.conf) copied next to every node's configuration and included
	// by it; ClientOptions must then authenticate the helper's own
	// connections (natsauth.ConnectOption of the admin seed).
	AuthConf string
	// ClientOptions are added to every connection the helper makes. When
	// set, the helper creates the streams and buckets that are missing
	// rather than create-or-update (natsauth's admin may not update).
	ClientOptions []nats.Option
	// Binary is the nats-server to run (default: Binary()).
	Binary string
	// StartTimeout bounds the start of the cluster (default 30s).
	StartTimeout time.Duration
	// Config, when set, writes node n's configuration instead of the
	// helper: it returns the file's content (written to n.Config) and may
	// prepare files next to it in n.Dir. It must keep n's ports (Port,
	// ClusterPort, MonitorPort on 127.0.0.1) and DataDir, and route to the
	// other nodes of c. deploy/compose's test runs the deployment's own
	// nats.conf this way.
	Config func(c *Cluster, n *Node) ([]byte, error)
}

// Cluster is a running test cluster.
type Cluster struct {
	// Name is the cluster name in the servers' configuration.
	Name  string
	Nodes []*Node

	t    testing.TB
	o    Options
	http *http.Client
}

// Node is one nats-server process of the cluster.
type Node struct {
	// Name is the server name (n1, n2, …).
	Name string
	// Port, ClusterPort and MonitorPort are fixed for the node's life, so
	// a restarted node is at the same address.
	Port, ClusterPort, MonitorPort int
	// Dir holds the node's configuration and log; DataDir its JetStream
	// store.
	Dir, DataDir, Config, Log string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Start starts the cluster, waits for a JetStream meta leader and every
// node healthy, creates Cordon's streams and buckets (unless NoStreams)
// and stops everything when the test ends. Node logs are printed when the
// test fails.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Streams.Replicas == 0 {
		o.Streams.Replicas = min(o.Nodes, 3)
	}
	if o.Streams.UsageMaxBytes == 0 {
		o.Streams.UsageMaxBytes = 256 << 20
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Binary == "" {
		bin, err := Binary()
		if err != nil {
			t.Fatalf("nats cluster: %v", err)
		}
		o.Binary = bin
	}
	c := &Cluster{Name: "cordon-test", t: t, o: o, http: &http.Client{Timeout: 2 * time.Second}}
	ports, err := freePorts(3 * o.Nodes)
	if err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	root := t.TempDir()
	for i := range o.Nodes {
		n := &Node{
			Name: fmt.Sprintf("n%d", i+1),
			Port: ports[3*i], ClusterPort: ports[3*i+1], MonitorPort: ports[3*i+2],
		}
		n.Dir = filepath.Join(root, n.Name)
		n.DataDir = filepath.Join(n.Dir, "data")
		n.Config = filepath.Join(n.Dir, "nats.conf")
		n.Log = filepath.Join(n.Dir, "nats.log")
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := c.writeConfig(n); err != nil {
			t.Fatalf("nats cluster: %v", err)
		}
	}
	t.Cleanup(func() {
		c.StopAll()
		if t.Failed() {
			c.dumpLogs()
		}
	})
	for _, n := range c.Nodes {
		if err := c.start(n); err != nil {
			t.Fatalf("nats cluster: %v", err)
		}
	}
	if _, err := c.WaitMetaLeader(o.StartTimeout); err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	if err := c.WaitHealthy(o.StartTimeout); err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	if !o.NoStreams {
		nc, js := c.Connect(t)
		ctx, cancel := context.WithTimeout(context.Background(), o.StartTimeout)
		defer cancel()
		if err := ensure(ctx, js, o.Streams, len(o.ClientOptions) > 0); err != nil {
			t.Fatalf("nats cluster: %v", err)
		}
		nc.Close()
		if err := c.WaitHealthy(o.StartTimeout); err != nil {
			t.Fatalf("nats cluster: %v", err)
		}
	}
	return c
}

// ensure creates Cordon's streams and buckets with natsconn.Ensure,
// retrying while the new cluster settles (a create can briefly fail with
// "no suitable peers"). With createOnly — the helper connects with an
// identity such as natsauth's admin, which may create streams but not
// update them — it creates what is missing, as the services' bootstrap
// does.
func ensure(ctx context.Context, js jetstream.JetStream, o events.StreamOptions, createOnly bool) error {
	var err error
	for {
		if createOnly {
			err = natsconn.EnsureMissing(ctx, js, o, zerolog.Nop())
		} else {
			err = natsconn.Ensure(ctx, js, o)
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create streams: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) writeConfig(n *Node) error {
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if c.o.Config != nil {
		b, err := c.o.Config(c, n)
		if err != nil {
			return fmt.Errorf("node %s: config: %w", n.Name, err)
		}
		if err := os.WriteFile(n.Config, b, 0o600); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		return nil
	}
	var routes []string
	for _, o := range c.Nodes {
		if o != n {
			routes = append(routes, strconv.Quote(fmt.Sprintf("nats-route://127.0.0.1:%d", o.ClusterPort)))
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "server_name: %s\n", n.Name)
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\n", n.Port)
	fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", n.MonitorPort)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %s\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}\n", strconv.Quote(n.DataDir))
	fmt.Fprintf(&b, "cluster {\n  name: %s\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n", c.Name, n.ClusterPort, strings.Join(routes, ", "))
	if c.o.AuthConf != "" {
		auth, err := os.ReadFile(c.o.AuthConf)
		if err != nil {
			return fmt.Errorf("node %s: auth include: %w", n.Name, err)
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "auth.conf"), auth, 0o600); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		b.WriteString("include \"auth.conf\"\n")
	}
	if err := os.WriteFile(n.Config, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// start runs the node's process and waits until it accepts connections.
func (c *Cluster) start(n *Node) error {
	n.mu.Lock()
	if n.cmd != nil {
		select {
		case <-n.exited:
		default:
			n.mu.Unlock()
			return fmt.Errorf("node %s: already running", n.Name)
		}
	}
	f, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	cmd := exec.Command(c.o.Binary, "-c", n.Config)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a ^C to the test reaches the test
	// first and StopAll decides; killed with the test process if that
	// dies without cleaning up (a test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		n.mu.Unlock()
		return fmt.Errorf("node %s: start %s: %w", n.Name, c.o.Binary, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()

	deadline := time.Now().Add(c.o.StartTimeout)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("node %s exited at start: %s", n.Name, tail(n.Log, 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: not accepting connections after %v", n.Name, c.o.StartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill crashes node i with SIGKILL and waits for the process to be gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		c.t.Fatalf("kill %s: %v", n.Name, ErrNotRunning)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("kill %s: process still running after 10s", n.Name)
	}
}

// Restart starts node i again with the same configuration, ports and
// data directory. It returns once the node accepts connections; call
// WaitHealthy to wait until it has caught up.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(c.Nodes[i]); err != nil {
		c.t.Fatalf("restart: %v", err)
	}
}

// StopAll kills every node that still runs; safe to call twice.
func (c *Cluster) StopAll() {
	for _, n := range c.Nodes {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		select {
		case <-exited:
			continue
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
	}
}

// URLs are the client URLs of every node, running or not.
func (c *Cluster) URLs() []string {
	u := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		u[i] = n.URL()
	}
	return u
}

// URLsFrom are the client URLs of every node with node i's first: a
// client given them in this order with nats.DontRandomize connects to
// node i, and to the others when node i goes away.
func (c *Cluster) URLsFrom(i int) []string {
	urls := []string{c.Nodes[i].URL()}
	for j, n := range c.Nodes {
		if j != i {
			urls = append(urls, n.URL())
		}
	}
	return urls
}

// Connect returns a client connected to the cluster (any node, reconnecting
// to the others forever) and its JetStream context; both close when the
// test ends. opts come after the cluster's ClientOptions.
func (c *Cluster) Connect(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	all := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, c.o.ClientOptions...)
	all = append(all, opts...)
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), all...)
	if err != nil {
		t.Fatalf("connect to nats cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// ConnectTo is Connect with node i tried first (no randomizing), the
// others being where the client reconnects when node i goes away.
func (c *Cluster) ConnectTo(t testing.TB, i int, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	all := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.DontRandomize()}, c.o.ClientOptions...)
	all = append(all, opts...)
	nc, err := nats.Connect(strings.Join(c.URLsFrom(i), ","), all...)
	if err != nil {
		t.Fatalf("connect to nats node %s: %v", c.Nodes[i].Name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if got := nc.ConnectedServerName(); got != c.Nodes[i].Name {
		t.Fatalf("connected to %s, want %s", got, c.Nodes[i].Name)
	}
	return nc, js
}

// Jsz is node n's JetStream report with stream details (GET /jsz).
func (c *Cluster) Jsz(n *Node) (*server.JSInfo, error) {
	var info server.JSInfo
	url := fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true", n.MonitorPort)
	resp, err := c.http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("%s jsz: %w", n.Name, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("%s jsz: %w", n.Name, err)
	}
	return &info, nil
}

// Healthy returns nil when node n answers /healthz with 200: JetStream is
// enabled, current with the meta leader, and its streams and consumers
// are current.
func (c *Cluster) Healthy(n *Node) error {
	if !n.Running() {
		return fmt.Errorf("%s: %w", n.Name, ErrNotRunning)
	}
	resp, err := c.http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.MonitorPort))
	if err != nil {
		return fmt.Errorf("%s healthz: %w", n.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s healthz: %d %s", n.Name, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// WaitHealthy waits until every running node is healthy.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return poll(timeout, 50*time.Millisecond, func() error {
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			if err := c.Healthy(n); err != nil {
				return err
			}
		}
		return nil
	})
}

// WaitMetaLeader waits until every running node sees the same JetStream
// meta leader, and returns its name.
func (c *Cluster) WaitMetaLeader(timeout time.Duration) (string, error) {
	var leader string
	err := poll(timeout, 50*time.Millisecond, func() error {
		leader = ""
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			info, err := c.Jsz(n)
			if err != nil {
				return err
			}
			if info.Meta == nil || info.Meta.Leader == "" {
				return fmt.Errorf("%s: no meta leader yet", n.Name)
			}
			if leader != "" && info.Meta.Leader != leader {
				return fmt.Errorf("meta leader: %s sees %s, others %s", n.Name, info.Meta.Leader, leader)
			}
			leader = info.Meta.Leader
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("wait for meta leader: %w", err)
	}
	return leader, nil
}

// StreamState is node n's own copy of stream: what its replica stores.
func (c *Cluster) StreamState(n *Node, stream string) (server.StreamState, error) {
	info, err := c.Jsz(n)
	if err != nil {
		return server.StreamState{}, err
	}
	for _, a := range info.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State, nil
			}
		}
	}
	return server.StreamState{}, fmt.Errorf("%s has no replica of %s", n.Name, stream)
}

// NodeIndex returns the index of the node named name, or -1.
func (c *Cluster) NodeIndex(name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// WaitFor polls fn every 20ms until it returns nil or timeout passes, then
// fails the test with fn's last error.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := poll(timeout, 20*time.Millisecond, fn); err != nil {
		t.Fatal(err)
	}
}

func poll(timeout, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(every)
	}
}

// freePorts reserves n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) dumpLogs() {
	for _, n := range c.Nodes {
		c.t.Logf("--- %s log (last 40 lines) ---\n%s", n.Name, tail(n.Log, 40))
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
