package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/enforcer"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// The tenant, holder and service of the node-loss workload.
const (
	nlTenant  = "acme"
	nlHolder  = "billing-api"
	nlService = "invoices"
	nlScope   = "invoices:read"
)

// nlPolicy is the issuer's policy in the node-loss run.
const nlPolicy = `version: 1
holders:
  - tenant: acme
    holder: billing-api
    description: the node-loss workload
    scopes: [invoices:read]
    audiences: [invoices]
    max_ttl: 24h
`

// Victims of NodeLoss.
const (
	// VictimAllLeaders kills the node hosting the enforcers' denylist
	// watches after making it the JetStream meta leader and the leader of
	// TOKENS, KV_denylist and USAGE: the worst single node to lose.
	VictimAllLeaders = "all-leaders"
	// VictimTokensLeader kills the node leading the TOKENS stream (the
	// ledger).
	VictimTokensLeader = "tokens-leader"
	// VictimMetaLeader kills the JetStream meta leader.
	VictimMetaLeader = "meta-leader"
)

// The system account user of the cluster (leadership moves need it).
const sysUser, sysPass = "sys", "sys"

// clusterConfig is natscluster's node configuration plus a system account
// user: moving the meta leader takes a request from the system account.
// Clients without credentials stay in one JetStream account, as before.
func clusterConfig(c *natscluster.Cluster, n *natscluster.Node) ([]byte, error) {
	var routes []string
	for _, o := range c.Nodes {
		if o != n {
			routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", o.ClusterPort)))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\n", n.Name)
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\n", n.Port)
	fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", n.MonitorPort)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}\n", n.DataDir)
	fmt.Fprintf(&b, "cluster {\n  name: %s\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n", c.Name, n.ClusterPort, strings.Join(routes, ", "))
	fmt.Fprintf(&b, "accounts {\n  CORDON: { jetstream: enabled, users: [ {user: cordon, password: cordon} ] }\n"+
		"  SYS: { users: [ {user: %s, password: %s} ] }\n}\nsystem_account: SYS\nno_auth_user: cordon\n", sysUser, sysPass)
	return []byte(b.String()), nil
}

// ledStreams are the streams whose leadership VictimAllLeaders gathers.
var ledStreams = []string{events.StreamTokens, "KV_" + events.BucketDenylist, events.StreamUsage}

// DefaultPropagationBound bounds how long a revocation acknowledged while a
// node is lost may take to reach every enforcer. A lost node can take a
// watch's consumer with it, and the replacement consumer needs the
// JetStream meta leader, which nats-server re-elects within its raft
// election timeout (4–9 s); enforcers re-watch as soon as a probe shows
// they fell behind (pkg/enforce), so the bound is one election plus a
// little: 10 s.
const DefaultPropagationBound = 10 * time.Second

// NodeLossOptions configures NodeLoss.
type NodeLossOptions struct {
	// Victim is VictimAllLeaders (default), VictimTokensLeader or
	// VictimMetaLeader.
	Victim string
	// Before, Outage and After are how long the workload runs before the
	// kill, while the node is down, and once it is healthy again
	// (defaults 2s, 15s, 2s). JetStream elects a new leader for a lost
	// one within 4 to 9 seconds; a longer outage shows the two survivors
	// serving alone.
	Before, Outage, After time.Duration
	// PropagationBound is how long after its revocation was acknowledged a
	// token may still be allowed (default DefaultPropagationBound).
	PropagationBound time.Duration
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
	// Log receives the services' logs (default: none).
	Log zerolog.Logger
}

// NodeReplica is what one node's own replica holds.
type NodeReplica struct {
	Node string
	// LedgerMissing are acknowledged ledger events (issued, revoked) this
	// node's TOKENS replica lacks; DenyMissing acknowledged denylist
	// entries its KV_denylist replica lacks.
	LedgerMissing, DenyMissing int
	// TokensMsgs, DenyMsgs and UsageMsgs are its stream message counts.
	TokensMsgs, DenyMsgs, UsageMsgs uint64
}

// NodeLossReport is what NodeLoss measured.
type NodeLossReport struct {
	// Victim is the node killed with SIGKILL and restarted, Role why it
	// was chosen; NodesKilled is 1.
	Victim, Role string
	NodesKilled  int
	// Issued and Revoked were acknowledged (Issue and Revoke returned
	// success); IssueFailures and RevokeFailures are calls that failed
	// (retried: a failed revocation is retried until acknowledged).
	Issued, Revoked, IssueFailures, RevokeFailures int
	// IssueGap and RevokeGap are the longest time without an acknowledged
	// issuance or revocation: how long the ledger was unavailable to them.
	IssueGap, RevokeGap time.Duration
	// IssuedDuringOutage and RevokedDuringOutage were acknowledged while
	// the victim was down.
	IssuedDuringOutage, RevokedDuringOutage int
	// Checks are enforcement decisions (both enforcers), ChecksDuringOutage
	// those made while the victim was down; CheckP99 and CheckMax their
	// latency.
	Checks, ChecksDuringOutage uint64
	CheckP99, CheckMax         time.Duration
	// GoodDenied counts decisions that denied a live, never-revoked token
	// (must be 0). RevokedAllowed counts decisions that allowed a token
	// after that enforcer had denied it as revoked (must be 0);
	// RevokedAllowedLate those that allowed it more than PropagationBound
	// after its revocation was acknowledged.
	GoodDenied, RevokedAllowed, RevokedAllowedLate int
	// GoodDeniedReasons says why live tokens were denied ("reason=n …").
	GoodDeniedReasons string
	// PropagationP99 and PropagationMax run from a revocation's
	// acknowledgement until both enforcers deny the token;
	// PropagationOutageMax is the worst for revocations acknowledged
	// during the outage. PropagationLate counts revocations not denied by
	// both within PropagationBound, Unpropagated those not within a minute.
	PropagationP99, PropagationMax, PropagationOutageMax time.Duration
	PropagationLate, Unpropagated                        int
	// UsagePublished, UsageFailed and UsageDropped are the enforcers'
	// usage event counters; UsageInStream what USAGE holds from them.
	UsagePublished, UsageFailed, UsageDropped, UsageInStream uint64
	// Replicas is each node's own copy after the heal.
	Replicas []NodeReplica
	// AcknowledgedLost sums LedgerMissing and DenyMissing over the nodes,
	// plus usage events acknowledged beyond what USAGE holds (must be 0).
	AcknowledgedLost int
	// Heal runs from the restart until every node is healthy and every
	// replica of TOKENS, KV_denylist and USAGE is at the same sequence.
	Heal time.Duration
	// PropagationBound is the bound the run held revocations to.
	PropagationBound time.Duration
}

// String summarises the report.
func (r *NodeLossReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "victim %s (%s), nodes killed %d, healed in %v\n", r.Victim, r.Role, r.NodesKilled, r.Heal.Round(time.Millisecond))
	fmt.Fprintf(&b, "issued %d (%d during the outage, %d failed calls, longest gap %v), revoked %d (%d during the outage, %d failed calls, longest gap %v)\n",
		r.Issued, r.IssuedDuringOutage, r.IssueFailures, r.IssueGap.Round(time.Millisecond),
		r.Revoked, r.RevokedDuringOutage, r.RevokeFailures, r.RevokeGap.Round(time.Millisecond))
	fmt.Fprintf(&b, "checks %d (%d during the outage), latency p99 %v max %v; good denied %d %s, revoked allowed after a deny %d, more than %v after the revocation %d\n",
		r.Checks, r.ChecksDuringOutage, r.CheckP99, r.CheckMax, r.GoodDenied, r.GoodDeniedReasons, r.RevokedAllowed, r.PropagationBound, r.RevokedAllowedLate)
	fmt.Fprintf(&b, "revocation → denied by both: p99 %v, max %v, max during the outage %v, later than %v %d, never %d\n",
		r.PropagationP99.Round(time.Microsecond), r.PropagationMax.Round(time.Microsecond), r.PropagationOutageMax.Round(time.Microsecond),
		r.PropagationBound, r.PropagationLate, r.Unpropagated)
	fmt.Fprintf(&b, "usage: published %d, failed %d, dropped %d, in USAGE %d\n", r.UsagePublished, r.UsageFailed, r.UsageDropped, r.UsageInStream)
	for _, n := range r.Replicas {
		fmt.Fprintf(&b, "%s: TOKENS %d msgs (%d acknowledged missing), KV_denylist %d (%d missing), USAGE %d\n",
			n.Node, n.TokensMsgs, n.LedgerMissing, n.DenyMsgs, n.DenyMissing, n.UsageMsgs)
	}
	fmt.Fprintf(&b, "acknowledged lost: %d", r.AcknowledgedLost)
	return b.String()
}

// nlToken is a token of the workload and what is known of its revocation.
type nlToken struct {
	tok, id string
	// revoking is set once a revocation was asked for; revokedAt (Unix
	// nanoseconds) once one was acknowledged.
	revoking  atomic.Bool
	revokedAt atomic.Int64
	// denied[i] is set once enforcer i denied it as revoked.
	denied [2]atomic.Bool
}

type nodeLoss struct {
	tb     testing.TB
	o      NodeLossOptions
	c      *natscluster.Cluster
	iss    *issuer.Issuer
	issSvc *issuer.Service
	rv     *revoker.Revoker
	rvSvc  *revoker.Service
	enf    [2]*enforce.Enforcer
	enfSvc [2]*enforcer.Service

	mu       sync.Mutex
	tokens   []*nlToken
	issued   map[string]bool // acknowledged TokenIssued, by token id
	revoked  map[string]bool // acknowledged TokenRevoked, by token id
	lat      []time.Duration // Check latencies
	prop     []time.Duration
	propOut  time.Duration
	late     int
	unprop   int
	goodDeny map[string]int // reason -> count
	lastIss  time.Time
	lastRev  time.Time
	issGap   time.Duration
	revGap   time.Duration

	down       atomic.Bool // the victim is down
	checks     atomic.Uint64
	checksDown atomic.Uint64
	watchers   sync.WaitGroup
	base       context.Context // outlives the workload: propagation watches
	revAllowed atomic.Int64
	revLate    atomic.Int64
	issFail    atomic.Int64
	revFail    atomic.Int64
	issDown    atomic.Int64
	revDown    atomic.Int64
	firstErrs  sync.Map // kind -> first error, for the progress log
	began      time.Time
}

func (n *nodeLoss) logf(format string, args ...any) {
	if n.o.Progress != nil {
		fmt.Fprintf(n.o.Progress, "   %5.1fs "+format+"\n", append([]any{time.Since(n.began).Seconds()}, args...)...)
	}
}

// NodeLoss runs the issuer, the revoker and two enforcers in-process on a
// three-node cluster (every stream and bucket replicated three ways, every
// client given all three URLs) while tokens are issued, checked and
// revoked; kills one node with SIGKILL, keeps going, restarts it; and then
// checks every node's own replica for what the clients saw acknowledged.
// Fatal set-up problems fail tb; the measured outcome is in the report for
// the caller to judge.
func NodeLoss(ctx context.Context, tb testing.TB, o NodeLossOptions) (*NodeLossReport, error) {
	tb.Helper()
	if o.Victim == "" {
		o.Victim = VictimAllLeaders
	}
	if o.Before <= 0 {
		o.Before = 2 * time.Second
	}
	if o.Outage <= 0 {
		o.Outage = 15 * time.Second
	}
	if o.After <= 0 {
		o.After = 2 * time.Second
	}
	if o.PropagationBound <= 0 {
		o.PropagationBound = DefaultPropagationBound
	}
	n := &nodeLoss{tb: tb, o: o, began: time.Now(), issued: map[string]bool{}, revoked: map[string]bool{}, goodDeny: map[string]int{}}
	return n.run(ctx)
}

func (n *nodeLoss) run(ctx context.Context) (*NodeLossReport, error) {
	rep := &NodeLossReport{}
	base, cancelBase := context.WithCancel(ctx)
	n.base = base
	defer n.watchers.Wait()
	defer cancelBase()
	start := time.Now()
	n.c = natscluster.Start(n.tb, natscluster.Options{Config: clusterConfig})
	n.logf("three-node cluster up with R3 streams and buckets in %v", time.Since(start).Round(time.Millisecond))
	if err := n.startServices(ctx); err != nil {
		return nil, err
	}
	defer n.stopServices()

	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){n.issueLoop, n.revokeLoop, func(c context.Context) { n.checkLoop(c, 0) }, func(c context.Context) { n.checkLoop(c, 1) }} {
		wg.Add(1)
		go func() { defer wg.Done(); f(wctx) }()
	}
	halt := sync.OnceFunc(func() { stopWork(); wg.Wait() })
	defer halt()

	if err := sleepCtx(ctx, n.o.Before); err != nil {
		return nil, err
	}
	victim, role, err := n.pickVictim(ctx)
	if err != nil {
		return nil, err
	}
	rep.Victim, rep.Role = n.c.Nodes[victim].Name, role
	n.mu.Lock()
	n.logf("killing %s (%s) with SIGKILL after %d tokens issued, %d revoked", rep.Victim, role, len(n.issued), len(n.revoked))
	n.mu.Unlock()
	n.down.Store(true)
	n.c.Kill(victim)
	rep.NodesKilled++
	if err := sleepCtx(ctx, n.o.Outage); err != nil {
		return nil, err
	}
	n.c.Restart(victim)
	restarted := time.Now()
	n.down.Store(false)
	if err := n.c.WaitHealthy(60 * time.Second); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	n.logf("%s restarted, cluster healthy after %v", rep.Victim, time.Since(restarted).Round(time.Millisecond))
	if err := sleepCtx(ctx, n.o.After); err != nil {
		return nil, err
	}
	halt()
	n.logf("workload stopped; waiting for the revocations to propagate and the replicas to converge")

	// Revocations still propagating when the workload stopped.
	if err := poll(ctx, propagationCap+5*time.Second, 20*time.Millisecond, n.allPropagated); err != nil {
		n.logf("propagation: %v", err)
	}
	n.watchers.Wait()
	n.logf("revocations propagated; flushing usage and waiting for the replicas")
	for i, e := range n.enf {
		if err := e.Flush(ctx); err != nil {
			return nil, fmt.Errorf("flush enforcer %d: %w", i, err)
		}
	}
	if err := poll(ctx, 60*time.Second, 50*time.Millisecond, n.replicasEqual); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	if err := n.c.WaitHealthy(30 * time.Second); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	rep.Heal = time.Since(restarted)
	n.logf("replicas converged %v after the restart; reading every node's copy", rep.Heal.Round(time.Millisecond))
	n.fill(rep)
	if err := n.verifyReplicas(ctx, rep); err != nil {
		return nil, err
	}
	n.logf("every node's copy read")
	return rep, nil
}

func (n *nodeLoss) startServices(ctx context.Context) error {
	pol, err := policy.Parse("node-loss.yaml", []byte(nlPolicy))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cordon-nodeloss-")
	if err != nil {
		return err
	}
	n.tb.Cleanup(func() { os.RemoveAll(dir) })
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n.issSvc, err = issuer.Start(sctx, issuer.Config{NATS: n.natsAs("faults-issuer"), Replicas: 3, DataDir: dir, Policy: pol,
		Source: "issuer/faults", Log: n.o.Log})
	if err != nil {
		return err
	}
	n.iss = n.issSvc.Issuer()
	anchors := token.Anchors{n.iss.TrustAnchor()}
	n.rvSvc, err = revoker.Start(sctx, revoker.Config{NATS: n.natsAs("faults-revoker"), Replicas: 3, TrustAnchors: anchors,
		Response: response.Default(), Source: "revoker/faults", Log: n.o.Log})
	if err != nil {
		return err
	}
	n.rv = n.rvSvc.Revoker()
	routes, err := enforce.ParseRoutes("node-loss-routes.yaml", []byte(nlRoutes))
	if err != nil {
		return err
	}
	// The enforcing proxies as deployed, each with its own connection;
	// the workload asks their enforcers directly (Check), so the upstream
	// is never reached.
	for i := range n.enf {
		id := fmt.Sprintf("edge-%d", i+1)
		svc, err := enforcer.Start(sctx, enforcer.Config{
			Options: enforce.Options{ID: id, Service: nlService, Routes: routes, TrustAnchors: anchors, Log: n.o.Log},
			NATS:    n.natsAs("faults-" + id), Upstream: "http://127.0.0.1:9", Listen: "127.0.0.1:0"})
		if err != nil {
			return err
		}
		n.enfSvc[i], n.enf[i] = svc, svc.Enforcer()
	}
	return nil
}

// nlRoutes are the node-loss enforcers' routes.
const nlRoutes = `service: invoices
routes:
  - {method: GET, path: "/invoices/{id}", scope: "invoices:read"}
`

// natsAs is how a service named name reaches the cluster: every node's
// URL, reconnecting quickly.
func (n *nodeLoss) natsAs(name string) natsconn.Config {
	return natsconn.Config{URL: strings.Join(n.c.URLs(), ","), Name: name,
		Options: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)}}
}

func (n *nodeLoss) stopServices() {
	for _, svc := range n.enfSvc {
		if svc != nil {
			svc.Close()
		}
	}
	if n.rvSvc != nil {
		n.rvSvc.Close()
	}
	if n.issSvc != nil {
		n.issSvc.Close()
	}
}

// pickVictim returns the node to kill and why. For VictimAllLeaders it
// is the node hosting the enforcers' denylist watches (the most of them),
// made meta leader and leader of ledStreams.
func (n *nodeLoss) pickVictim(ctx context.Context) (int, string, error) {
	meta, err := n.c.WaitMetaLeader(10 * time.Second)
	if err != nil {
		return 0, "", err
	}
	nc, js := n.c.Connect(n.tb)
	name, role := meta, "meta leader"
	switch n.o.Victim {
	case VictimTokensLeader:
		if name, err = streamLeader(ctx, js, events.StreamTokens); err != nil {
			return 0, "", err
		}
		role = "TOKENS leader"
	case VictimAllLeaders:
		host, watches, err := watchHost(ctx, js)
		if err != nil {
			return 0, "", err
		}
		name = host
		role = fmt.Sprintf("host of %d enforcer denylist watch(es), meta leader, leader of %s", watches, strings.Join(ledStreams, ", "))
		if meta != host {
			sys, err := natsconn.Dial(natsconn.Config{URL: strings.Join(n.c.URLs(), ","), Name: "faults-system",
				Options: []nats.Option{nats.UserInfo(sysUser, sysPass)}})
			if err != nil {
				return 0, "", fmt.Errorf("connect as system: %w", err)
			}
			defer sys.Close()
			if err := n.moveMeta(ctx, sys, host); err != nil {
				return 0, "", err
			}
		}
		for _, stream := range ledStreams {
			if err := moveLeader(ctx, nc, js, stream, host); err != nil {
				return 0, "", err
			}
		}
		if now, err := n.c.WaitMetaLeader(10 * time.Second); err != nil || now != host {
			return 0, "", fmt.Errorf("meta leader moved from %s to %s while gathering stream leaders (%v)", host, now, err)
		}
	}
	i := n.c.NodeIndex(name)
	if i < 0 {
		return 0, "", fmt.Errorf("victim %q is not a node", name)
	}
	return i, role, nil
}

// watchHost returns the node hosting the most consumers of KV_denylist —
// the enforcers' watches — and how many it hosts.
func watchHost(ctx context.Context, js jetstream.JetStream) (string, int, error) {
	s, err := js.Stream(ctx, "KV_"+events.BucketDenylist)
	if err != nil {
		return "", 0, err
	}
	hosts := map[string]int{}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Cluster != nil && ci.Cluster.Leader != "" {
			hosts[ci.Cluster.Leader]++
		}
	}
	if err := l.Err(); err != nil {
		return "", 0, fmt.Errorf("list denylist watches: %w", err)
	}
	best, most := "", 0
	for h, c := range hosts {
		if c > most || c == most && h < best {
			best, most = h, c
		}
	}
	if best == "" {
		return "", 0, errors.New("no denylist watch found")
	}
	return best, most, nil
}

// moveMeta makes node the JetStream meta leader.
func (n *nodeLoss) moveMeta(ctx context.Context, sys *nats.Conn, node string) error {
	req := []byte(`{"placement":{"preferred":"` + node + `"}}`)
	return poll(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		leader, err := n.c.WaitMetaLeader(10 * time.Second)
		if err != nil {
			return err
		}
		if leader == node {
			return nil
		}
		if _, err := sys.Request("$JS.API.META.LEADER.STEPDOWN", req, 2*time.Second); err != nil {
			return fmt.Errorf("meta leader step down: %w", err)
		}
		return fmt.Errorf("meta leader is %s, want %s", leader, node)
	})
}

func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// moveLeader asks stream's leader to step down in favour of node and
// waits until node leads it.
func moveLeader(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream, node string) error {
	req := []byte(`{"placement":{"preferred":"` + node + `"}}`)
	return poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		leader, err := streamLeader(ctx, js, stream)
		if err != nil {
			return err
		}
		if leader == node {
			return nil
		}
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second); err != nil {
			return fmt.Errorf("step down %s: %w", stream, err)
		}
		return fmt.Errorf("%s led by %s, want %s", stream, leader, node)
	})
}

func (n *nodeLoss) firstErr(kind string, err error) {
	if _, loaded := n.firstErrs.LoadOrStore(kind, err); !loaded {
		n.logf("first %s failure: %v", kind, err)
	}
}

// issueLoop issues a token every 20ms.
func (n *nodeLoss) issueLoop(ctx context.Context) {
	for ctx.Err() == nil {
		down := n.down.Load()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := n.iss.Issue(cctx, "faults", issuer.IssueRequest{Tenant: nlTenant, Holder: nlHolder, Scopes: []string{nlScope}, TTL: "2h"})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.issFail.Add(1)
				n.firstErr("issue", err)
			}
		} else {
			now := time.Now()
			n.mu.Lock()
			n.tokens = append(n.tokens, &nlToken{tok: res.Token, id: res.ID})
			n.issued[res.ID] = true
			if !n.lastIss.IsZero() {
				n.issGap = max(n.issGap, now.Sub(n.lastIss))
			}
			n.lastIss = now
			n.mu.Unlock()
			if down && n.down.Load() {
				n.issDown.Add(1)
			}
		}
		_ = sleepCtx(ctx, 20*time.Millisecond)
	}
}

// revokeLoop revokes a random live token every 80ms, retrying a failed
// revocation of the same token until it is acknowledged.
func (n *nodeLoss) revokeLoop(ctx context.Context) {
	rng := rand.New(rand.NewPCG(7, 11))
	var t *nlToken
	for ctx.Err() == nil {
		if t == nil {
			n.mu.Lock()
			if len(n.tokens) > 4 {
				for range 8 {
					c := n.tokens[rng.IntN(len(n.tokens))]
					if !c.revoking.Load() {
						t = c
						break
					}
				}
			}
			n.mu.Unlock()
			if t == nil {
				_ = sleepCtx(ctx, 20*time.Millisecond)
				continue
			}
			t.revoking.Store(true)
		}
		down := n.down.Load()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := n.rv.Revoke(cctx, revoker.Request{Kind: events.RevokeToken, TokenID: t.id, Actor: "faults", Reason: "node-loss drill"})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.revFail.Add(1)
				n.firstErr("revoke", err)
			}
			_ = sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		if len(res.Revoked)+len(res.Already) == 0 {
			n.firstErr("revoke", fmt.Errorf("token %s neither revoked nor already revoked: %+v", t.id, res))
			t = nil
			continue
		}
		acked := time.Now()
		t.revokedAt.Store(acked.UnixNano())
		n.mu.Lock()
		n.revoked[t.id] = true
		if !n.lastRev.IsZero() {
			n.revGap = max(n.revGap, acked.Sub(n.lastRev))
		}
		n.lastRev = acked
		n.mu.Unlock()
		if down && n.down.Load() {
			n.revDown.Add(1)
		}
		n.watchers.Add(1)
		go func(t *nlToken) { defer n.watchers.Done(); n.watchPropagation(n.base, t, acked, down) }(t)
		t = nil
		_ = sleepCtx(ctx, 80*time.Millisecond)
	}
}

// propagationCap bounds how long a revocation's propagation is watched.
const propagationCap = time.Minute

// watchPropagation measures how long both enforcers take to deny t.
func (n *nodeLoss) watchPropagation(ctx context.Context, t *nlToken, acked time.Time, down bool) {
	deadline := acked.Add(propagationCap)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for i := range n.enf {
			if !t.denied[i].Load() {
				n.check(i, t)
			}
		}
		if t.denied[0].Load() && t.denied[1].Load() {
			d := time.Since(acked)
			n.mu.Lock()
			n.prop = append(n.prop, d)
			if down {
				n.propOut = max(n.propOut, d)
			}
			if d > n.o.PropagationBound {
				n.late++
			}
			n.mu.Unlock()
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	n.mu.Lock()
	n.late++
	n.unprop++
	n.mu.Unlock()
}

func (n *nodeLoss) allPropagated() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pending := 0
	for _, t := range n.tokens {
		if t.revokedAt.Load() != 0 && !(t.denied[0].Load() && t.denied[1].Load()) {
			pending++
		}
	}
	if pending > n.unprop {
		return fmt.Errorf("%d revocations not yet denied by both enforcers", pending-n.unprop)
	}
	return nil
}

// checkLoop asks enforcer i about random tokens.
func (n *nodeLoss) checkLoop(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 3))
	for ctx.Err() == nil {
		n.mu.Lock()
		var t *nlToken
		if len(n.tokens) > 0 {
			t = n.tokens[rng.IntN(len(n.tokens))]
		}
		n.mu.Unlock()
		if t != nil {
			n.check(i, t)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var nlAddr = netip.MustParseAddr("10.20.0.7")

// check asks enforcer i about t and judges the answer.
func (n *nodeLoss) check(i int, t *nlToken) {
	revokedAt := t.revokedAt.Load() // acknowledged before the decision
	start := time.Now()
	d := n.enf[i].Check(&enforce.Request{Token: t.tok, Method: "GET", Route: "/invoices/{id}", Scope: nlScope, RemoteAddr: nlAddr, UserAgent: "faults"})
	lat := time.Since(start)
	n.checks.Add(1)
	if n.down.Load() {
		n.checksDown.Add(1)
	}
	n.mu.Lock()
	n.lat = append(n.lat, lat)
	n.mu.Unlock()
	switch {
	case !t.revoking.Load(): // no revocation asked for, even now
		if !d.Allow {
			n.mu.Lock()
			n.goodDeny[string(d.Reason)]++
			n.mu.Unlock()
		}
	case revokedAt != 0:
		if d.Reason == enforce.ReasonRevoked {
			t.denied[i].Store(true)
			return
		}
		switch {
		case d.Allow && t.denied[i].Load():
			n.revAllowed.Add(1)
		case d.Allow && time.Since(time.Unix(0, revokedAt)) > n.o.PropagationBound:
			n.revLate.Add(1)
		}
	}
}

// replicasEqual reports whether every node's replica of TOKENS,
// KV_denylist and USAGE is at the same last sequence with the same count.
func (n *nodeLoss) replicasEqual() error {
	for _, stream := range []string{events.StreamTokens, "KV_" + events.BucketDenylist, events.StreamUsage} {
		var first string
		for _, node := range n.c.Nodes {
			st, err := n.c.StreamState(node, stream)
			if err != nil {
				return err
			}
			s := fmt.Sprintf("%d msgs, last %d", st.Msgs, st.LastSeq)
			if first == "" {
				first = s
			} else if s != first {
				return fmt.Errorf("%s: %s has %s, %s has %s", stream, n.c.Nodes[0].Name, first, node.Name, s)
			}
		}
	}
	return nil
}

func (n *nodeLoss) fill(rep *NodeLossReport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rep.Issued, rep.Revoked = len(n.issued), len(n.revoked)
	rep.IssueFailures, rep.RevokeFailures = int(n.issFail.Load()), int(n.revFail.Load())
	rep.IssuedDuringOutage, rep.RevokedDuringOutage = int(n.issDown.Load()), int(n.revDown.Load())
	rep.Checks, rep.ChecksDuringOutage = n.checks.Load(), n.checksDown.Load()
	sort.Slice(n.lat, func(i, j int) bool { return n.lat[i] < n.lat[j] })
	if len(n.lat) > 0 {
		rep.CheckP99, rep.CheckMax = n.lat[(len(n.lat)*99)/100], n.lat[len(n.lat)-1]
	}
	for _, c := range n.goodDeny {
		rep.GoodDenied += c
	}
	rep.GoodDeniedReasons = n.goodDeniedReasons()
	rep.RevokedAllowed, rep.RevokedAllowedLate = int(n.revAllowed.Load()), int(n.revLate.Load())
	rep.IssueGap, rep.RevokeGap = n.issGap, n.revGap
	sort.Slice(n.prop, func(i, j int) bool { return n.prop[i] < n.prop[j] })
	if len(n.prop) > 0 {
		rep.PropagationP99, rep.PropagationMax = n.prop[(len(n.prop)*99)/100], n.prop[len(n.prop)-1]
	}
	rep.PropagationOutageMax, rep.PropagationLate, rep.Unpropagated = n.propOut, n.late, n.unprop
	rep.PropagationBound = n.o.PropagationBound
	for _, e := range n.enf {
		st := e.Stats()
		rep.UsagePublished += st.UsagePublished
		rep.UsageFailed += st.UsageFailed
		rep.UsageDropped += st.UsageDropped
	}
}

// goodDeniedReasons says why live tokens were denied; callers hold mu.
func (n *nodeLoss) goodDeniedReasons() string {
	var parts []string
	for r, c := range n.goodDeny {
		parts = append(parts, fmt.Sprintf("%s=%d", r, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// verifyReplicas reads TOKENS and KV_denylist from each node's own replica
// and looks for every acknowledged event and entry.
func (n *nodeLoss) verifyReplicas(ctx context.Context, rep *NodeLossReport) error {
	_, js := n.c.Connect(n.tb)
	n.mu.Lock()
	issued, revoked := n.issued, n.revoked
	n.mu.Unlock()
	for _, node := range n.c.Nodes {
		r := NodeReplica{Node: node.Name}
		ledger, err := readOnNode(ctx, js, events.StreamTokens, node.Name)
		if err != nil {
			return err
		}
		deny, err := readOnNode(ctx, js, "KV_"+events.BucketDenylist, node.Name)
		if err != nil {
			return err
		}
		for id := range issued {
			if !ledger[events.SubjectTokenPrefix+"issued."+nlTenant+"."+id] {
				r.LedgerMissing++
			}
		}
		for id := range revoked {
			if !ledger[events.SubjectTokenPrefix+"revoked."+nlTenant+"."+id] {
				r.LedgerMissing++
			}
			if !deny["$KV."+events.BucketDenylist+"."+events.DenyKeyToken(id)] {
				r.DenyMissing++
			}
		}
		for _, s := range []struct {
			stream string
			into   *uint64
		}{{events.StreamTokens, &r.TokensMsgs}, {"KV_" + events.BucketDenylist, &r.DenyMsgs}, {events.StreamUsage, &r.UsageMsgs}} {
			st, err := n.c.StreamState(node, s.stream)
			if err != nil {
				return err
			}
			*s.into = st.Msgs
		}
		rep.Replicas = append(rep.Replicas, r)
		rep.AcknowledgedLost += r.LedgerMissing + r.DenyMissing
	}
	s, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectUsagePrefix+">"))
	if err != nil {
		return err
	}
	for subj, c := range info.State.Subjects {
		if strings.HasSuffix(subj, ".edge-1") || strings.HasSuffix(subj, ".edge-2") {
			rep.UsageInStream += c
		}
	}
	if rep.UsageInStream < rep.UsagePublished {
		rep.AcknowledgedLost += int(rep.UsagePublished - rep.UsageInStream)
	}
	return nil
}

// readOnNode reads every message of stream from node's own replica: an
// ephemeral R1 consumer lives on one server and reads that server's copy,
// and the cluster places it at random, so consumers are created until one
// lands on node. Transient errors (a cluster just healed) are retried for
// up to 30 seconds. It returns the subjects seen.
func readOnNode(ctx context.Context, js jetstream.JetStream, stream, node string) (map[string]bool, error) {
	var seen map[string]bool
	attempts := 0
	err := poll(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		attempts++
		var err error
		seen, err = readOnce(ctx, js, stream, node)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s on %s (%d attempts): %w", stream, node, attempts, err)
	}
	return seen, nil
}

// errElsewhere: the consumer was placed on another node.
var errElsewhere = errors.New("consumer placed on another node")

func readOnce(ctx context.Context, js jetstream.JetStream, stream, node string) (map[string]bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := js.CreateConsumer(cctx, stream, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas: 1, MemoryStorage: true, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	info := c.CachedInfo()
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), stream, info.Name) }()
	if info.Cluster == nil || info.Cluster.Leader != node {
		return nil, errElsewhere
	}
	seen := map[string]bool{}
	for got := uint64(0); got < info.NumPending; {
		// Exactly what is left: a pull for more waits out its expiry.
		batch, err := c.Fetch(int(min(1000, info.NumPending-got)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			seen[m.Subject()] = true
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("%d of %d messages, then nothing", got, info.NumPending)
		}
		got += uint64(n)
	}
	return seen, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
