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

// Victims of NodeLoss: which node of the three is killed.
const (
	// VictimMetaLeader kills the JetStream meta leader.
	VictimMetaLeader = "meta-leader"
	// VictimTokensLeader kills the node leading the TOKENS stream (the
	// ledger).
	VictimTokensLeader = "tokens-leader"
	// VictimDenylistLeader kills the node leading KV_denylist (the
	// durable denylist).
	VictimDenylistLeader = "denylist-leader"
	// VictimUsageLeader kills the node leading USAGE.
	VictimUsageLeader = "usage-leader"
	// VictimEnforcerNode kills the node both enforcers are connected to
	// (they are given its URL first, without randomizing).
	VictimEnforcerNode = "enforcer-node"
	// VictimAllLeaders kills the node hosting the enforcers' denylist
	// watches after making it the JetStream meta leader and the leader of
	// TOKENS, KV_denylist and USAGE: the worst single node to lose.
	VictimAllLeaders = "all-leaders"
)

// Victims lists every victim NodeLoss knows, in the order the node-loss
// test runs them.
func Victims() []string {
	return []string{VictimMetaLeader, VictimTokensLeader, VictimDenylistLeader, VictimUsageLeader, VictimEnforcerNode, VictimAllLeaders}
}

// victimStream is the stream whose leader each stream-leader victim is.
var victimStream = map[string]string{
	VictimTokensLeader:   events.StreamTokens,
	VictimDenylistLeader: "KV_" + events.BucketDenylist,
	VictimUsageLeader:    events.StreamUsage,
}

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

// DefaultMaxStaleness is the enforcers' staleness bound in NodeLoss, as
// shipped with --fail-closed: no decision may allow a token more than this
// after its revocation was acknowledged.
const DefaultMaxStaleness = 2 * time.Second

// slowCheck is a decision slow enough to mean Check waited on the network
// (a leader election or a reconnect lasts seconds); decisions take
// microseconds, so counting those over a second never fails on a loaded
// machine's scheduling.
const slowCheck = time.Second

// enforcerNode is the index of the node both enforcers connect to.
const enforcerNode = 0

// NodeLossOptions configures NodeLoss.
type NodeLossOptions struct {
	// Victim is one of Victims() (default VictimAllLeaders).
	Victim string
	// Before, Outage and After are how long the workload runs before the
	// kill, while the node is down, and once it is healthy again
	// (defaults 1s, 10s, 2s). JetStream elects a new leader for a lost
	// one within 4 to 9 seconds, so the outage outlasts an election and
	// shows the two survivors serving alone.
	Before, Outage, After time.Duration
	// MaxStaleness is the enforcers' staleness bound; they fail closed
	// (default DefaultMaxStaleness).
	MaxStaleness time.Duration
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

// Distribution summarises durations: how many, the median, the 99th
// percentile (nearest rank) and the largest.
type Distribution struct {
	N             int
	P50, P99, Max time.Duration
}

func distribution(d []time.Duration) Distribution {
	if len(d) == 0 {
		return Distribution{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p int) time.Duration { return s[max(0, (len(s)*p+99)/100-1)] }
	return Distribution{N: len(s), P50: rank(50), P99: rank(99), Max: s[len(s)-1]}
}

func (d Distribution) String() string {
	if d.N == 0 {
		return "none"
	}
	r := func(v time.Duration) time.Duration { return v.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v p99 %v max %v (n=%d)", r(d.P50), r(d.P99), r(d.Max), d.N)
}

// FailClosedWindow is how long one enforcer denied every request with
// denylist_stale, from the start times of its decisions: a stretch runs
// from its first denylist_stale decision to the first decision after it
// that was not (or to its last one, at the end of the run).
type FailClosedWindow struct {
	// Total sums the stretches, Longest is the longest, Stretches counts
	// them; Decisions are the denylist_stale decisions.
	Total, Longest time.Duration
	Stretches      int
	Decisions      uint64
}

// EnforcerUsage compares one enforcer's decisions with its usage events.
type EnforcerUsage struct {
	ID string
	// Decisions counts its Check calls (each one a usage event: every
	// token of the workload verifies, so none is folded); InStream the
	// usage events USAGE holds from it (single events, and the records of
	// its batches). JetStream de-duplicates by message id (an event's, or
	// a batch's), so InStream = Decisions is every event exactly once.
	Decisions, InStream uint64
	// Published, Failed and Dropped are its publisher's counters;
	// Spooled, SpoolDropped and SpoolPending its spool's (zero without
	// one).
	Published, Failed, Dropped          uint64
	Spooled, SpoolDropped, SpoolPending uint64
}

// NodeLossReport is what NodeLoss measured.
type NodeLossReport struct {
	// Victim is the node killed with SIGKILL and restarted, Role every
	// part it played when it was killed; NodesKilled is 1. EnforcerNode
	// is the node both enforcers were connected to before the kill
	// (checked with ConnectedServerName), EnforcersAfter where they were
	// connected at the end.
	Victim, Role   string
	NodesKilled    int
	EnforcerNode   string
	EnforcersAfter [2]string
	// Issued and Revoked were acknowledged (Issue and Revoke returned
	// success); IssueFailures and RevokeFailures are calls that failed
	// (retried: a failed revocation is retried until acknowledged).
	// RevokedPending were acknowledged as broadcast only (the revoker's
	// Result.Ledger "pending"), RevokedRecorded as written to the ledger;
	// both are 0 when the revoker does not say.
	Issued, Revoked, IssueFailures, RevokeFailures int
	RevokedPending, RevokedRecorded                int
	// IssueGap and RevokeGap are the longest time without an acknowledged
	// issuance or revocation.
	IssueGap, RevokeGap time.Duration
	// TokensLeaderBack runs from the kill until TOKENS answered with a
	// leader other than the victim (polled every 25ms), IssueResume from
	// then until the first issuance acknowledged after it; -1 when not
	// seen.
	TokensLeaderBack, IssueResume time.Duration
	// IssuedDuringOutage and RevokedDuringOutage were acknowledged while
	// the victim was down.
	IssuedDuringOutage, RevokedDuringOutage int
	// Checks are enforcement decisions (both enforcers), ChecksDuringOutage
	// those made while the victim was down; CheckP99 and CheckMax their
	// latency; SlowChecks those that took over a second (Check waited on
	// the network).
	Checks, ChecksDuringOutage uint64
	CheckP99, CheckMax         time.Duration
	SlowChecks                 int
	// LiveDeniedStale counts decisions that denied a live, never-revoked
	// token with denylist_stale (failing closed, allowed);
	// LiveDeniedOther those that denied one for any other reason (must
	// be 0), LiveDeniedReasons says which ("reason=n …").
	LiveDeniedStale, LiveDeniedOther int
	LiveDeniedReasons                string
	// FailClosed is each enforcer's fail-closed window.
	FailClosed [2]FailClosedWindow
	// RevokedAllowed counts decisions that allowed a token after that
	// enforcer had denied it as revoked (must be 0); RevokedAllowedLate
	// those that allowed it more than MaxStaleness after its revocation
	// was acknowledged (must be 0). Both judge from the decision's start,
	// so a decision racing the revocation is never counted.
	RevokedAllowed, RevokedAllowedLate int
	// Propagation runs until both enforcers denied the token as revoked
	// (the end of the first such decision of each), from the request
	// (the start of the first Revoke call for the token) and from the
	// acknowledgement (Revoke returned); Outage* for the revocations
	// requested while the victim was down. From the acknowledgement it
	// is 0 when both denied the token before Revoke returned (the
	// broadcast outran the reply). Unpropagated were not denied as
	// revoked by both within a minute.
	PropFromRequest, PropFromAck             Distribution
	OutagePropFromRequest, OutagePropFromAck Distribution
	Unpropagated                             int
	// Usage compares each enforcer's decisions with USAGE; UsageLost and
	// UsageDuplicated sum the decisions without their event and the
	// events beyond the decisions (both must be 0). SpoolEnabled reports
	// whether the enforcers had a usage spool (a build with
	// enforce.Options.SpoolDir).
	Usage                      [2]EnforcerUsage
	UsageLost, UsageDuplicated uint64
	SpoolEnabled               bool
	// Replicas is each node's own copy after the heal.
	Replicas []NodeReplica
	// AcknowledgedLost sums LedgerMissing and DenyMissing over the nodes
	// (must be 0).
	AcknowledgedLost int
	// Heal runs from the restart until every node is healthy and every
	// replica of TOKENS, KV_denylist and USAGE is at the same sequence.
	Heal time.Duration
	// MaxStaleness is the enforcers' bound.
	MaxStaleness time.Duration
}

// String summarises the report.
func (r *NodeLossReport) String() string {
	var b strings.Builder
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	fmt.Fprintf(&b, "victim %s (%s), nodes killed %d, healed in %v; enforcers on %s before, on %s and %s after\n",
		r.Victim, r.Role, r.NodesKilled, ms(r.Heal), r.EnforcerNode, r.EnforcersAfter[0], r.EnforcersAfter[1])
	fmt.Fprintf(&b, "issued %d (%d during the outage, %d failed calls, longest gap %v; TOKENS led again %v after the kill, first issuance %v after that)\n",
		r.Issued, r.IssuedDuringOutage, r.IssueFailures, ms(r.IssueGap), ms(r.TokensLeaderBack), ms(r.IssueResume))
	fmt.Fprintf(&b, "revoked %d (%d during the outage; %d pending, %d recorded; %d failed calls, longest gap %v)\n",
		r.Revoked, r.RevokedDuringOutage, r.RevokedPending, r.RevokedRecorded, r.RevokeFailures, ms(r.RevokeGap))
	fmt.Fprintf(&b, "checks %d (%d during the outage), latency p99 %v max %v, over %v: %d\n",
		r.Checks, r.ChecksDuringOutage, r.CheckP99, r.CheckMax, slowCheck, r.SlowChecks)
	fmt.Fprintf(&b, "live tokens denied: denylist_stale %d, other %d %s; revoked allowed after a deny %d, more than %v after the acknowledgement %d\n",
		r.LiveDeniedStale, r.LiveDeniedOther, r.LiveDeniedReasons, r.RevokedAllowed, r.MaxStaleness, r.RevokedAllowedLate)
	for i, w := range r.FailClosed {
		fmt.Fprintf(&b, "edge-%d failed closed %v in all (%d stretches, longest %v, %d decisions)\n", i+1, ms(w.Total), w.Stretches, ms(w.Longest), w.Decisions)
	}
	fmt.Fprintf(&b, "revocation → denied as revoked by both: from request %s, from ack %s; requested during the outage: from request %s, from ack %s; never %d\n",
		r.PropFromRequest, r.PropFromAck, r.OutagePropFromRequest, r.OutagePropFromAck, r.Unpropagated)
	for _, u := range r.Usage {
		fmt.Fprintf(&b, "%s usage: decisions %d, in USAGE %d; published %d, failed %d, dropped %d; spooled %d, spool dropped %d, spool pending %d\n",
			u.ID, u.Decisions, u.InStream, u.Published, u.Failed, u.Dropped, u.Spooled, u.SpoolDropped, u.SpoolPending)
	}
	fmt.Fprintf(&b, "usage lost %d, duplicated %d (spool: %v)\n", r.UsageLost, r.UsageDuplicated, r.SpoolEnabled)
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
	// revoking is set once a revocation was asked for; requestedAt (Unix
	// nanoseconds) is when the first Revoke call for it started and
	// requestedDown whether the victim was down then; revokedAt when a
	// Revoke call returned success (acknowledged).
	revoking      atomic.Bool
	requestedAt   int64 // written before revoking is set
	requestedDown bool
	revokedAt     atomic.Int64
	// abandoned is set when the workload stopped before a revocation of
	// it was acknowledged.
	abandoned atomic.Bool
	// deniedAt[i] is when the first decision of enforcer i that denied it
	// as revoked ended (Unix nanoseconds).
	deniedAt [2]atomic.Int64
}

// decision is one decision of an enforcer, for its fail-closed window.
type decision struct {
	start int64 // Unix nanoseconds
	stale bool
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
	enfNC  [2]atomic.Pointer[nats.Conn] // captured by the connect handlers
	spool  bool

	mu        sync.Mutex
	tokens    []*nlToken
	issued    map[string]bool // acknowledged TokenIssued, by token id
	revoked   map[string]bool // acknowledged TokenRevoked, by token id
	lat       []time.Duration // Check latencies
	decisions [2][]decision
	propReq   []time.Duration
	propAck   []time.Duration
	outReq    []time.Duration
	outAck    []time.Duration
	unprop    int
	liveDeny  map[string]int // reason -> count
	issAcks   []time.Time
	lastIss   time.Time
	lastRev   time.Time
	issGap    time.Duration
	revGap    time.Duration

	down        atomic.Bool // the victim is down
	checks      atomic.Uint64
	checksDown  atomic.Uint64
	slow        atomic.Int64
	watchers    sync.WaitGroup
	base        context.Context // outlives the workload: propagation watches
	revAllowed  atomic.Int64
	revLate     atomic.Int64
	issFail     atomic.Int64
	revFail     atomic.Int64
	issDown     atomic.Int64
	revDown     atomic.Int64
	revPending  atomic.Int64
	revRecorded atomic.Int64
	tokensBack  atomic.Int64 // Unix nanoseconds: TOKENS led again after the kill
	firstErrs   sync.Map     // kind -> first error, for the progress log
	began       time.Time
}

func (n *nodeLoss) logf(format string, args ...any) {
	if n.o.Progress != nil {
		fmt.Fprintf(n.o.Progress, "   %5.1fs "+format+"\n", append([]any{time.Since(n.began).Seconds()}, args...)...)
	}
}

// NodeLoss runs the issuer, the revoker and two enforcers (fail-closed,
// MaxStaleness, a usage spool when the build has one) in-process on a
// three-node cluster of nats-server processes reached over TCP (every
// stream and bucket replicated three ways; the enforcers connected to one
// node first, the other clients to any) while tokens are issued, checked
// and revoked; kills the victim node with SIGKILL, keeps going, restarts
// it; and then checks every node's own replica for what the clients saw
// acknowledged, and USAGE for every decision's event. Fatal set-up
// problems fail tb or return an error; the measured outcome is in the
// report for the caller to judge.
func NodeLoss(ctx context.Context, tb testing.TB, o NodeLossOptions) (*NodeLossReport, error) {
	tb.Helper()
	if o.Victim == "" {
		o.Victim = VictimAllLeaders
	}
	known := false
	for _, v := range Victims() {
		known = known || v == o.Victim
	}
	if !known {
		return nil, fmt.Errorf("node loss: unknown victim %q (want one of %s)", o.Victim, strings.Join(Victims(), ", "))
	}
	if o.Before <= 0 {
		o.Before = time.Second
	}
	if o.Outage <= 0 {
		o.Outage = 10 * time.Second
	}
	if o.After <= 0 {
		o.After = 2 * time.Second
	}
	if o.MaxStaleness <= 0 {
		o.MaxStaleness = DefaultMaxStaleness
	}
	n := &nodeLoss{tb: tb, o: o, began: time.Now(), issued: map[string]bool{}, revoked: map[string]bool{}, liveDeny: map[string]int{}}
	return n.run(ctx)
}

func (n *nodeLoss) run(ctx context.Context) (*NodeLossReport, error) {
	rep := &NodeLossReport{MaxStaleness: n.o.MaxStaleness, TokensLeaderBack: -1, IssueResume: -1}
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
	if err := n.enforcersOn(ctx, n.c.Nodes[enforcerNode].Name); err != nil {
		return nil, err
	}
	rep.EnforcerNode, rep.SpoolEnabled = n.c.Nodes[enforcerNode].Name, n.spool
	n.logf("both enforcers connected to %s (usage spool: %v)", rep.EnforcerNode, n.spool)

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
	if n.o.Victim == VictimEnforcerNode || rep.Victim == rep.EnforcerNode {
		// The enforcers must still be on the node about to die.
		if err := n.enforcersOn(ctx, rep.EnforcerNode); err != nil {
			return nil, err
		}
	}
	// TOKENS' leader is watched from a survivor.
	_, ljs := n.c.ConnectTo(n.tb, (victim+1)%len(n.c.Nodes))
	n.mu.Lock()
	n.logf("killing %s (%s) with SIGKILL after %d tokens issued, %d revoked", rep.Victim, role, len(n.issued), len(n.revoked))
	n.mu.Unlock()
	n.down.Store(true)
	n.c.Kill(victim)
	killed := time.Now()
	rep.NodesKilled++
	n.watchers.Add(1)
	go func() { defer n.watchers.Done(); n.watchTokensLeader(base, ljs, rep.Victim) }()
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
	n.logf("workload stopped; waiting for the revocations to propagate, the ledger, usage and the replicas")

	// Revocations still propagating when the workload stopped.
	if err := poll(ctx, propagationCap+5*time.Second, 20*time.Millisecond, n.allPropagated); err != nil {
		n.logf("propagation: %v", err)
	}
	cancelBase() // the TOKENS leader watch, if it never saw one
	n.watchers.Wait()
	for i, e := range n.enf {
		if err := e.Flush(ctx); err != nil {
			return nil, fmt.Errorf("flush enforcer %d: %w", i, err)
		}
	}
	_, js := n.c.Connect(n.tb)
	if err := poll(ctx, 30*time.Second, 100*time.Millisecond, func() error { return n.usageSettled(ctx, js) }); err != nil {
		n.logf("usage: %v", err)
	}
	if err := poll(ctx, 60*time.Second, 100*time.Millisecond, func() error { return n.ledgerHasAll(ctx, js) }); err != nil {
		n.logf("ledger: %v", err)
	}
	if err := poll(ctx, 60*time.Second, 50*time.Millisecond, n.replicasEqual); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	if err := n.c.WaitHealthy(30 * time.Second); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	rep.Heal = time.Since(restarted)
	n.logf("replicas converged %v after the restart; reading every node's copy", rep.Heal.Round(time.Millisecond))
	if back := n.tokensBack.Load(); back != 0 {
		rep.TokensLeaderBack = time.Unix(0, back).Sub(killed)
	}
	n.fill(rep)
	if err := n.fillUsage(ctx, js, rep); err != nil {
		return nil, err
	}
	if err := n.verifyReplicas(ctx, js, rep); err != nil {
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
	// The revoker with its default heartbeat.
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
	// The enforcing proxies as shipped for this property — fail-closed
	// with a staleness bound and a usage spool — each with its own
	// connection, both to the same node first; the workload asks their
	// enforcers directly (Check), so the upstream is never reached.
	for i := range n.enf {
		id := fmt.Sprintf("edge-%d", i+1)
		o := enforce.Options{ID: id, Service: nlService, Routes: routes, TrustAnchors: anchors, Log: n.o.Log,
			FailClosed: true, MaxStaleness: n.o.MaxStaleness}
		spool, err := os.MkdirTemp(dir, "spool-"+id+"-")
		if err != nil {
			return err
		}
		o.SpoolDir, n.spool = spool, true
		capture := func(nc *nats.Conn) { n.enfNC[i].Store(nc) }
		nc := natsconn.Config{URL: strings.Join(n.c.URLsFrom(enforcerNode), ","), Name: "faults-" + id,
			Options: []nats.Option{nats.ReconnectWait(50 * time.Millisecond), nats.DontRandomize(),
				nats.ConnectHandler(capture), nats.ReconnectHandler(capture)}}
		svc, err := enforcer.Start(sctx, enforcer.Config{Options: o, NATS: nc, Upstream: "http://127.0.0.1:9", Listen: "127.0.0.1:0"})
		if err != nil {
			return err
		}
		n.enfSvc[i], n.enf[i] = svc, svc.Enforcer()
	}
	return nil
}

// enforcersOn waits until both enforcers' connections report node as
// their server.
func (n *nodeLoss) enforcersOn(ctx context.Context, node string) error {
	return poll(ctx, 10*time.Second, 20*time.Millisecond, func() error {
		for i := range n.enfNC {
			nc := n.enfNC[i].Load()
			if nc == nil {
				return fmt.Errorf("enforcer edge-%d: no connection seen yet", i+1)
			}
			if got := nc.ConnectedServerName(); got != node {
				return fmt.Errorf("enforcer edge-%d connected to %q, want %s", i+1, got, node)
			}
		}
		return nil
	})
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

// pickVictim returns the node to kill and every part it plays. For
// VictimAllLeaders it is the node hosting the enforcers' denylist watches
// (the most of them), made meta leader and leader of ledStreams; the
// other victims are kept apart from the enforcers' node.
func (n *nodeLoss) pickVictim(ctx context.Context) (int, string, error) {
	meta, err := n.c.WaitMetaLeader(10 * time.Second)
	if err != nil {
		return 0, "", err
	}
	nc, js := n.c.Connect(n.tb)
	enfName := n.c.Nodes[enforcerNode].Name
	other := n.c.Nodes[(enforcerNode+1)%len(n.c.Nodes)].Name
	var sys *nats.Conn
	defer func() {
		if sys != nil {
			sys.Close()
		}
	}()
	moveMetaTo := func(node string) error {
		if sys == nil {
			var err error
			sys, err = natsconn.Dial(natsconn.Config{URL: strings.Join(n.c.URLs(), ","), Name: "faults-system",
				Options: []nats.Option{nats.UserInfo(sysUser, sysPass)}})
			if err != nil {
				return fmt.Errorf("connect as system: %w", err)
			}
		}
		return n.moveMeta(ctx, sys, node)
	}
	// Every victim but all-leaders loses one part only: a leader is moved
	// off the enforcers' node, and the leaders off it for enforcer-node.
	name := meta
	switch n.o.Victim {
	case VictimMetaLeader:
		if meta == enfName {
			if err := moveMetaTo(other); err != nil {
				return 0, "", err
			}
			name = other
		}
	case VictimTokensLeader, VictimDenylistLeader, VictimUsageLeader:
		stream := victimStream[n.o.Victim]
		if name, err = streamLeader(ctx, js, stream); err != nil {
			return 0, "", err
		}
		if name == enfName {
			if err := moveLeader(ctx, nc, js, stream, other); err != nil {
				return 0, "", err
			}
			name = other
		}
	case VictimEnforcerNode:
		if meta == enfName {
			if err := moveMetaTo(other); err != nil {
				return 0, "", err
			}
		}
		for _, stream := range ledStreams {
			l, err := streamLeader(ctx, js, stream)
			if err != nil {
				return 0, "", err
			}
			if l == enfName {
				if err := moveLeader(ctx, nc, js, stream, other); err != nil {
					return 0, "", err
				}
			}
		}
		name = enfName
	case VictimAllLeaders:
		host, _, err := watchHost(ctx, js)
		if err != nil {
			return 0, "", err
		}
		name = host
		if meta != host {
			if err := moveMetaTo(host); err != nil {
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
	role, err := n.roles(ctx, js, name)
	if err != nil {
		return 0, "", err
	}
	return i, n.o.Victim + ": " + role, nil
}

// roles says every part node plays now: meta leader, stream leader,
// enforcers' node, host of denylist watches.
func (n *nodeLoss) roles(ctx context.Context, js jetstream.JetStream, node string) (string, error) {
	var parts []string
	meta, err := n.c.WaitMetaLeader(10 * time.Second)
	if err != nil {
		return "", err
	}
	if meta == node {
		parts = append(parts, "meta leader")
	}
	var led []string
	for _, stream := range ledStreams {
		l, err := streamLeader(ctx, js, stream)
		if err != nil {
			return "", err
		}
		if l == node {
			led = append(led, stream)
		}
	}
	if len(led) > 0 {
		parts = append(parts, "leader of "+strings.Join(led, ", "))
	}
	if n.c.Nodes[enforcerNode].Name == node {
		parts = append(parts, "both enforcers' node")
	}
	if host, watches, err := watchHost(ctx, js); err == nil && host == node {
		parts = append(parts, fmt.Sprintf("host of %d denylist watch(es)", watches))
	}
	if len(parts) == 0 {
		return "no leader, no enforcer", nil
	}
	return strings.Join(parts, ", "), nil
}

func (n *nodeLoss) firstErr(kind string, err error) {
	if _, loaded := n.firstErrs.LoadOrStore(kind, err); !loaded {
		n.logf("first %s failure: %v", kind, err)
	}
}

// watchTokensLeader polls TOKENS' leader through js (a survivor's
// connection) every 25ms until one other than victim answers.
func (n *nodeLoss) watchTokensLeader(ctx context.Context, js jetstream.JetStream, victim string) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		leader, err := streamLeader(cctx, js, events.StreamTokens)
		cancel()
		if err == nil && leader != victim {
			n.tokensBack.Store(time.Now().UnixNano())
			n.logf("TOKENS led by %s", leader)
			return
		}
		_ = sleepCtx(ctx, 25*time.Millisecond)
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
			n.issAcks = append(n.issAcks, now)
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
	defer func() {
		if t != nil { // stopped while retrying: never acknowledged
			t.abandoned.Store(true)
		}
	}()
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
			t.requestedAt, t.requestedDown = time.Now().UnixNano(), n.down.Load()
			t.revoking.Store(true)
			// Both enforcers are asked about it from the request on: the
			// broadcast may reach them before Revoke returns.
			n.watchers.Add(1)
			go func(t *nlToken) { defer n.watchers.Done(); n.watchPropagation(n.base, t) }(t)
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
			t.abandoned.Store(true)
			t = nil
			continue
		}
		acked := time.Now()
		t.revokedAt.Store(acked.UnixNano())
		switch res.Ledger {
		case "pending":
			n.revPending.Add(1)
		case "recorded":
			n.revRecorded.Add(1)
		}
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
		t = nil
		_ = sleepCtx(ctx, 80*time.Millisecond)
	}
}

// propagationCap bounds how long a revocation's propagation is watched.
const propagationCap = time.Minute

// watchPropagation asks both enforcers about t, from its revocation's
// request on, until both denied it as revoked, and records how long that
// took from the request and from the acknowledgement (0 when the
// broadcast outran the reply).
func (n *nodeLoss) watchPropagation(ctx context.Context, t *nlToken) {
	deadline := time.Unix(0, t.requestedAt).Add(propagationCap)
	// settled records the propagation once both enforcers denied t and
	// its revocation was acknowledged. Either enforcer's denial may come
	// from another goroutine's decision (checkLoop), so it is judged on
	// deniedAt, never on what this watcher saw.
	settled := func() bool {
		a, b, acked := t.deniedAt[0].Load(), t.deniedAt[1].Load(), t.revokedAt.Load()
		if a == 0 || b == 0 || acked == 0 {
			return false
		}
		both := time.Unix(0, max(a, b))
		fromReq, fromAck := both.Sub(time.Unix(0, t.requestedAt)), max(0, both.Sub(time.Unix(0, acked)))
		n.mu.Lock()
		n.propReq = append(n.propReq, fromReq)
		n.propAck = append(n.propAck, fromAck)
		if t.requestedDown {
			n.outReq = append(n.outReq, fromReq)
			n.outAck = append(n.outAck, fromAck)
		}
		n.mu.Unlock()
		return true
	}
	for time.Now().Before(deadline) && ctx.Err() == nil && !t.abandoned.Load() {
		for i := range n.enf {
			if t.deniedAt[i].Load() == 0 {
				n.check(i, t)
			}
		}
		if settled() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Stopped (the run's end, the cap): a denial another decision saw
	// since the last round still counts.
	if !settled() && t.revokedAt.Load() != 0 {
		n.mu.Lock()
		n.unprop++
		n.mu.Unlock()
	}
}

func (n *nodeLoss) allPropagated() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pending := 0
	for _, t := range n.tokens {
		if t.revokedAt.Load() != 0 && (t.deniedAt[0].Load() == 0 || t.deniedAt[1].Load() == 0) {
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

// check asks enforcer i about t and judges the answer. What was known of
// t's revocation is read before the decision starts, so a decision racing
// an acknowledgement or another decision is judged by what it could know.
func (n *nodeLoss) check(i int, t *nlToken) {
	revokedAt, deniedAt := t.revokedAt.Load(), t.deniedAt[i].Load()
	start := time.Now()
	d := n.enf[i].Check(&enforce.Request{Token: t.tok, Method: "GET", Route: "/invoices/{id}", Scope: nlScope, RemoteAddr: nlAddr, UserAgent: "faults"})
	end := time.Now()
	lat := end.Sub(start)
	n.checks.Add(1)
	if n.down.Load() {
		n.checksDown.Add(1)
	}
	if lat > slowCheck {
		n.slow.Add(1)
	}
	stale := d.Reason == enforce.ReasonDenylistStale
	live := !t.revoking.Load() // no revocation asked for, even now
	n.mu.Lock()
	n.lat = append(n.lat, lat)
	n.decisions[i] = append(n.decisions[i], decision{start: start.UnixNano(), stale: stale})
	if live && !d.Allow {
		n.liveDeny[string(d.Reason)]++
	}
	n.mu.Unlock()
	switch {
	case live:
	case d.Reason == enforce.ReasonRevoked:
		t.deniedAt[i].CompareAndSwap(0, end.UnixNano())
	case d.Allow:
		if deniedAt != 0 {
			n.revAllowed.Add(1)
		}
		if revokedAt != 0 && start.Sub(time.Unix(0, revokedAt)) > n.o.MaxStaleness {
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

// subjectCounts is how many messages stream holds on each subject
// matching filter.
func subjectCounts(ctx context.Context, js jetstream.JetStream, stream, filter string) (map[string]uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(cctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(cctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("stream %s subjects %s: %w", stream, filter, err)
	}
	return info.State.Subjects, nil
}

// usageInStream is how many usage events USAGE holds from enforcer id:
// its single events, and the records of its batches (read and decoded).
func usageInStream(ctx context.Context, js jetstream.JetStream, id string) (uint64, error) {
	var sum, batches uint64
	for _, filter := range []string{events.SubjectUsagePrefix + "*." + id, events.SubjectUsagePartPrefix + "*.*." + id + ".*"} {
		subjects, err := subjectCounts(ctx, js, events.StreamUsage, filter)
		if err != nil {
			return 0, err
		}
		for _, c := range subjects {
			if filter == events.SubjectUsagePrefix+"*."+id {
				sum += c
			} else {
				batches += c
			}
		}
	}
	if batches == 0 {
		return sum, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(cctx, events.StreamUsage, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectUsagePartPrefix + "*.*." + id + ".*"}})
	if err != nil {
		return 0, fmt.Errorf("read usage batches of %s: %w", id, err)
	}
	var ub events.UsageBatch
	// A fetch may come back empty while the cluster still settles after
	// the node loss (the ordered consumer then resets itself from the
	// last message it delivered): fetch again until every batch is read
	// or the deadline passes.
	for read := uint64(0); read < batches; {
		msgs, err := cons.Fetch(int(min(batches-read, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if cctx.Err() != nil {
				return 0, fmt.Errorf("read %d of the %d usage batches of %s: %w", read, batches, id, err)
			}
			continue
		}
		n := 0
		for m := range msgs.Messages() {
			if err := events.DecodeUsageBatch(m.Subject(), m.Data(), &ub); err != nil {
				return 0, fmt.Errorf("usage batch of %s: %w", id, err)
			}
			sum += uint64(ub.Len())
			n++
		}
		if n == 0 && cctx.Err() != nil {
			return 0, fmt.Errorf("read %d of the %d usage batches of %s (%v)", read, batches, id, msgs.Error())
		}
		read += uint64(n)
	}
	return sum, nil
}

// usageSettled is nil once USAGE holds an event for every decision of
// both enforcers, or once nothing is left to publish (queue and spool
// empty): what is missing then is lost.
func (n *nodeLoss) usageSettled(ctx context.Context, js jetstream.JetStream) error {
	for i, e := range n.enf {
		st := e.Stats()
		id := fmt.Sprintf("edge-%d", i+1)
		in, err := usageInStream(ctx, js, id)
		if err != nil {
			return err
		}
		if in < st.Decisions && (st.UsageQueued > 0 || st.UsageSpoolPending > 0) {
			return fmt.Errorf("%s: %d of %d usage events in USAGE, %d queued, %d spooled", id, in, st.Decisions, st.UsageQueued, st.UsageSpoolPending)
		}
	}
	return nil
}

// ledgerHasAll is nil once TOKENS holds every acknowledged issuance and
// revocation: a revocation acknowledged as pending is written when
// JetStream accepts it.
func (n *nodeLoss) ledgerHasAll(ctx context.Context, js jetstream.JetStream) error {
	subjects, err := subjectCounts(ctx, js, events.StreamTokens, events.SubjectTokenPrefix+">")
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	missing := 0
	for id := range n.issued {
		if subjects[events.SubjectTokenPrefix+"issued."+nlTenant+"."+id] == 0 {
			missing++
		}
	}
	for id := range n.revoked {
		if subjects[events.SubjectTokenPrefix+"revoked."+nlTenant+"."+id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d acknowledged ledger events not in TOKENS yet", missing)
	}
	return nil
}

// failClosedWindow computes an enforcer's fail-closed window from its
// decisions.
func failClosedWindow(ds []decision) FailClosedWindow {
	sort.Slice(ds, func(i, j int) bool { return ds[i].start < ds[j].start })
	var w FailClosedWindow
	in := false
	var from, last int64
	end := func(at int64) {
		d := time.Duration(at - from)
		w.Total += d
		w.Longest = max(w.Longest, d)
		w.Stretches++
		in = false
	}
	for _, d := range ds {
		switch {
		case d.stale:
			w.Decisions++
			if !in {
				in, from = true, d.start
			}
			last = d.start
		case in:
			end(d.start)
		}
	}
	if in {
		end(last)
	}
	return w
}

func (n *nodeLoss) fill(rep *NodeLossReport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rep.Issued, rep.Revoked = len(n.issued), len(n.revoked)
	rep.IssueFailures, rep.RevokeFailures = int(n.issFail.Load()), int(n.revFail.Load())
	rep.RevokedPending, rep.RevokedRecorded = int(n.revPending.Load()), int(n.revRecorded.Load())
	rep.IssuedDuringOutage, rep.RevokedDuringOutage = int(n.issDown.Load()), int(n.revDown.Load())
	rep.Checks, rep.ChecksDuringOutage = n.checks.Load(), n.checksDown.Load()
	rep.SlowChecks = int(n.slow.Load())
	sort.Slice(n.lat, func(i, j int) bool { return n.lat[i] < n.lat[j] })
	if len(n.lat) > 0 {
		rep.CheckP99, rep.CheckMax = n.lat[(len(n.lat)*99)/100], n.lat[len(n.lat)-1]
	}
	var parts []string
	for r, c := range n.liveDeny {
		if r == string(enforce.ReasonDenylistStale) {
			rep.LiveDeniedStale += c
			continue
		}
		rep.LiveDeniedOther += c
		parts = append(parts, fmt.Sprintf("%s=%d", r, c))
	}
	sort.Strings(parts)
	rep.LiveDeniedReasons = strings.Join(parts, " ")
	for i := range n.decisions {
		rep.FailClosed[i] = failClosedWindow(n.decisions[i])
	}
	rep.RevokedAllowed, rep.RevokedAllowedLate = int(n.revAllowed.Load()), int(n.revLate.Load())
	rep.IssueGap, rep.RevokeGap = n.issGap, n.revGap
	if back := n.tokensBack.Load(); back != 0 {
		for _, at := range n.issAcks {
			if at.UnixNano() >= back {
				rep.IssueResume = at.Sub(time.Unix(0, back))
				break
			}
		}
	}
	rep.PropFromRequest, rep.PropFromAck = distribution(n.propReq), distribution(n.propAck)
	rep.OutagePropFromRequest, rep.OutagePropFromAck = distribution(n.outReq), distribution(n.outAck)
	rep.Unpropagated = n.unprop
}

// fillUsage compares each enforcer's decisions with what USAGE holds.
func (n *nodeLoss) fillUsage(ctx context.Context, js jetstream.JetStream, rep *NodeLossReport) error {
	for i, e := range n.enf {
		st := e.Stats()
		u := EnforcerUsage{ID: fmt.Sprintf("edge-%d", i+1), Decisions: st.Decisions,
			Published: st.UsagePublished, Failed: st.UsageFailed, Dropped: st.UsageDropped,
			Spooled: st.UsageSpooled, SpoolDropped: st.UsageSpoolDropped,
			SpoolPending: uint64(st.UsageSpoolPending)}
		var err error
		if u.InStream, err = usageInStream(ctx, js, u.ID); err != nil {
			return err
		}
		if u.InStream < u.Decisions {
			rep.UsageLost += u.Decisions - u.InStream
		} else {
			rep.UsageDuplicated += u.InStream - u.Decisions
		}
		rep.Usage[i] = u
		if nc := n.enfNC[i].Load(); nc != nil {
			rep.EnforcersAfter[i] = nc.ConnectedServerName()
		}
	}
	return nil
}

// verifyReplicas reads TOKENS and KV_denylist from each node's own replica
// and looks for every acknowledged event and entry.
func (n *nodeLoss) verifyReplicas(ctx context.Context, js jetstream.JetStream, rep *NodeLossReport) error {
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
	return nil
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
