package revoker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
	cpolicy "github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

const replicasPolicy = `version: 1
holders:
  - tenant: acme
    holder: billing-api
    scopes: [invoices:read]
    audiences: [invoices]
    max_ttl: 24h
`

// TestReplicaKilledMidBurst runs what a deployment runs: a NATS server
// that knows only Cordon's role identities, the issuer, two `cordon
// revoker` processes with the same role credentials (and so the same
// durable consumers) and two enforcers. An automation client sends 1,000
// revocations over cordon.cmd.revoke from several workers, each request
// retried with its idempotency key after a timeout or an internal error,
// and one revoker process is killed with SIGKILL once 300 were
// acknowledged. Every one of the 1,000 tokens must end with exactly one
// TokenRevoked on the ledger, be in the denylist bucket when its
// revocation is acknowledged, and be denied by both enforcers; the
// surviving replica alone then revokes another token.
func TestReplicaKilledMidBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cordon and runs two revoker processes; skipped with -short")
	}
	const (
		n      = 1000
		killAt = 300
		// workers are the client's concurrent requests: enough that the
		// killed replica is in the middle of some when it dies.
		workers = 8
	)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildCordon(t)
	d := startDeployment(t, ctx, []string{"edge-1", "edge-2"})

	// The tokens, minted by the issuer; one more for after the kill.
	tokens := make([]issuedToken, n+1)
	for i := range tokens {
		res, err := d.iss.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = issuedToken{id: res.ID, token: res.Token}
	}
	enfs := make([]*enforce.Enforcer, 2)
	for i, id := range []string{"edge-1", "edge-2"} {
		_, js := d.connect(t, id, natsauth.EnforcerSeedFile(d.creds, id))
		e, err := enforce.New(enforce.Options{ID: id, Service: "invoices", TrustAnchors: d.anchors, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		if err := e.Start(ctx, js); err != nil {
			t.Fatal(err)
		}
		enfs[i] = e
	}
	check := func(e *enforce.Enforcer, tk issuedToken) enforce.Decision {
		return e.Check(&enforce.Request{Token: tk.token, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr("10.0.0.1")})
	}
	for i, e := range enfs {
		if dec := check(e, tokens[0]); !dec.Allow {
			t.Fatalf("enforcer %d denies a live token before any revocation: %s", i+1, dec.Reason)
		}
	}

	replicas := []*revokerProc{
		startRevoker(t, bin, d, "revoker/replica-1"),
		startRevoker(t, bin, d, "revoker/replica-2"),
	}
	for _, p := range replicas {
		p.waitStarted(t)
	}
	victim, survivor := replicas[0], replicas[1]

	nc, _ := d.connect(t, "automation", natsauth.SeedFile(d.creds, natsauth.RoleAdmin))
	// The denylist as an enforcer reads it, and the ledger as the issuer
	// does: identities allowed to.
	_, enfJS := d.connect(t, "reader-edge-1", natsauth.EnforcerSeedFile(d.creds, "edge-1"))
	deny, err := enfJS.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	_, js := d.connect(t, "reader-issuer", natsauth.SeedFile(d.creds, natsauth.RoleIssuer))
	var (
		acked, retries atomic.Int64
		killOnce       sync.Once
		killedAt       atomic.Int64 // acknowledged revocations when the victim died
		mu             sync.Mutex
		outcome        = map[string]string{} // token id -> revoked | already
		midway         string                // a token the victim had put on the ledger but not acknowledged when killed
		failures       []string
	)
	kill := func(token string) {
		killOnce.Do(func() {
			mu.Lock()
			if _, ok := outcome[token]; token != "" && !ok {
				midway = token
			}
			mu.Unlock()
			killedAt.Store(acked.Load())
			victim.kill(t)
		})
	}
	// Once killAt revocations are acknowledged, the victim dies as soon as
	// it has put a revocation on the ledger: between its publish and its
	// reply, if the kill is quicker than its denylist write.
	sub, err := nc.Subscribe(events.SubjectTokenPrefix+"revoked.>", func(m *nats.Msg) {
		if acked.Load() < killAt {
			return
		}
		env, p, err := events.DecodeAs[*events.TokenRevoked](m.Data)
		if err == nil && env.Source == victim.source {
			kill(p.TokenID)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// revoke is the automation client: one request per token, sent again
	// with the same idempotency key until a replica answers it.
	revoke := func(i int) {
		tk := tokens[i]
		req := revoker.CommandRequest{Auth: d.admin, IdempotencyKey: fmt.Sprintf("burst-%d", i), Kind: events.RevokeToken,
			TokenID: tk.id, Reason: "replica drill"}
		for attempt := 1; ; attempt++ {
			if ctx.Err() != nil {
				fail("token %d: no answer before the test's deadline", i)
				return
			}
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			rep, err := revoker.Call(rctx, nc, req)
			rcancel()
			switch {
			case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)):
				retries.Add(1)
				continue
			case err != nil:
				fail("token %d: %v", i, err)
				return
			case !rep.OK && rep.Code == revoker.CodeInternal:
				retries.Add(1)
				continue
			case !rep.OK:
				fail("token %d: %s: %s", i, rep.Code, rep.Error)
				return
			}
			what := ""
			switch {
			case slices.Equal(rep.Revoked, []string{tk.id}) && len(rep.Already) == 0:
				what = "revoked"
			case slices.Equal(rep.Already, []string{tk.id}) && len(rep.Revoked) == 0:
				what = "already"
			default:
				fail("token %d: reply revoked %v already %v, want the token in one of them", i, rep.Revoked, rep.Already)
				return
			}
			// Acknowledged: the durable denylist holds it now.
			gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = deny.Get(gctx, events.DenyKeyToken(tk.id))
			gcancel()
			if err != nil {
				fail("token %d acknowledged as %s (attempt %d) without its denylist entry: %v", i, what, attempt, err)
			}
			mu.Lock()
			outcome[tk.id] = what
			mu.Unlock()
			if acked.Add(1) >= killAt+workers*10 {
				kill("") // the victim published nothing for a while: kill it anyway
			}
			return
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				revoke(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		t.FailNow()
	}
	if k := killedAt.Load(); k == 0 || k >= n {
		t.Fatalf("the victim was killed after %d of %d acknowledgements, not mid-burst", k, n)
	}
	served := victim.count("revoke request done")
	if served == 0 {
		t.Fatalf("the killed replica served no request before dying: the drill proved nothing\n%s", victim.tail())
	}
	counts := map[string]int{}
	for _, what := range outcome {
		counts[what]++
	}
	t.Logf("killed %s after %d acknowledgements (it had served %d); %d retries; replies: %d revoked, %d already",
		victim.source, killedAt.Load(), served, retries.Load(), counts["revoked"], counts["already"])
	if midway != "" {
		// Its ledger event is the victim's; the survivor answered the retry.
		t.Logf("killed between the ledger write and the reply of token %s: the retry was answered %q", midway, outcome[midway])
	}

	// The survivor alone keeps the loop working.
	if !survivor.alive() {
		t.Fatalf("the surviving replica exited\n%s", survivor.tail())
	}
	last := tokens[n]
	rep, err := revoker.Call(ctx, nc, revoker.CommandRequest{Auth: d.admin, IdempotencyKey: "after-the-kill", Kind: events.RevokeToken,
		TokenID: last.id, Reason: "replica drill, after the kill"})
	if err != nil || !rep.OK || !slices.Equal(rep.Revoked, []string{last.id}) {
		t.Fatalf("revocation after the kill: %+v, %v", rep, err)
	}
	if got := survivor.count("revoke request done"); got == 0 {
		t.Fatal("the survivor logged no served request")
	}

	// Exactly once in the ledger, for every token.
	led := ledgerRevocations(t, ctx, js)
	for i, tk := range tokens {
		if got := led[tk.id]; got != 1 {
			t.Errorf("token %d (%s): %d TokenRevoked events on the ledger, want 1", i, tk.id, got)
		}
	}
	if len(led) != len(tokens) {
		t.Errorf("the ledger revokes %d tokens, want %d", len(led), len(tokens))
	}
	// Both enforcers deny every one.
	for i, e := range enfs {
		natstest.WaitFor(t, 2*time.Minute, func() error {
			allowed := 0
			for _, tk := range tokens {
				if dec := check(e, tk); dec.Reason != enforce.ReasonRevoked {
					allowed++
				}
			}
			if allowed > 0 {
				return fmt.Errorf("enforcer %d does not deny %d of the %d revoked tokens as revoked", i+1, allowed, len(tokens))
			}
			return nil
		})
	}
	if v := d.violations(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}

type issuedToken struct{ id, token string }

// deployment is a NATS server with Cordon's role identities and the
// issuer, in-process.
type deployment struct {
	srv     *natsrun.Server
	creds   string // natsauth seed files
	iss     *issuer.Issuer
	admin   string // the bootstrap admin token
	anchor  string // trust-anchor.pub
	policy  string // policy file
	anchors token.Anchors

	mu   sync.Mutex
	viol []string
}

func startDeployment(t *testing.T, ctx context.Context, enforcers []string) *deployment {
	t.Helper()
	d := &deployment{creds: t.TempDir()}
	if _, err := natsauth.Generate(d.creds, natsauth.GenerateOptions{Enforcers: enforcers}); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(d.creds)
	if err != nil {
		t.Fatal(err)
	}
	if d.srv, err = natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.srv.Stop)
	if err := d.srv.Bootstrap(ctx, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d.policy = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(d.policy, []byte(replicasPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := cpolicy.Parse(d.policy, []byte(replicasPolicy))
	if err != nil {
		t.Fatal(err)
	}
	nc, js := d.connect(t, "issuer", natsauth.SeedFile(d.creds, natsauth.RoleIssuer))
	data := filepath.Join(dir, "issuer")
	d.iss, err = issuer.New(issuer.Options{NC: nc, JS: js, DataDir: data, Policy: pol, Source: "issuer/test", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.iss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.iss.Close() })
	b, err := os.ReadFile(d.iss.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	d.admin = strings.TrimSpace(string(b))
	d.anchor = filepath.Join(data, issuer.TrustAnchorFile)
	d.anchors = token.Anchors{d.iss.TrustAnchor()}
	return d
}

// connect connects as the identity in seed, recording permission
// violations.
func (d *deployment) connect(t *testing.T, name, seed string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(d.srv.ClientURL(), natsauth.ConnectOption(seed), nats.Name(name), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				d.mu.Lock()
				d.viol = append(d.viol, name+": "+err.Error())
				d.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func (d *deployment) violations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.viol)
}

// buildCordon builds the server binary (-tags nochdb, as the compose
// image does) into a temporary directory.
func buildCordon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cordon")
	out, err := exec.Command("go", "build", "-tags", "nochdb", "-o", bin, "github.com/cordonhq/cordon/cmd/cordon").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cordon: %v\n%s", err, out)
	}
	return bin
}

// revokerProc is a `cordon revoker` process.
type revokerProc struct {
	source string
	cmd    *exec.Cmd
	exited chan struct{}

	mu    sync.Mutex
	lines []string
}

// startRevoker starts `cordon revoker` as a deployment does (its role's
// credentials, the policy, the trust anchor, JSON logs); it is killed
// when the test ends.
func startRevoker(t *testing.T, bin string, d *deployment, source string) *revokerProc {
	t.Helper()
	p := &revokerProc{source: source, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "revoker", "--nats="+d.srv.ClientURL(), "--nats-creds="+natsauth.SeedFile(d.creds, natsauth.RoleRevoker),
		"--policy="+d.policy, "--trust-anchor="+d.anchor, "--source="+source)
	p.cmd.Env = append(os.Environ(), "CORDON_LOG_FORMAT=json")
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", source, p.tail())
		}
	})
	return p
}

func (p *revokerProc) waitStarted(t *testing.T) {
	t.Helper()
	natstest.WaitFor(t, time.Minute, func() error {
		if !p.alive() {
			t.Fatalf("%s exited\n%s", p.source, p.tail())
		}
		if p.count("revoker started") == 0 {
			return fmt.Errorf("%s has not started", p.source)
		}
		return nil
	})
}

// kill sends SIGKILL and waits for the process to end.
func (p *revokerProc) kill(t *testing.T) {
	if err := p.cmd.Process.Kill(); err != nil {
		t.Errorf("kill %s: %v", p.source, err)
	}
	<-p.exited
}

func (p *revokerProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// count is the number of log lines containing s.
func (p *revokerProc) count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for _, l := range p.lines {
		if strings.Contains(l, s) {
			c++
		}
	}
	return c
}

func (p *revokerProc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-30):], "\n")
}

// ledgerRevocations counts the TokenRevoked events on the ledger by token
// id, reading TOKENS to its end.
func ledgerRevocations(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]int {
	t.Helper()
	s, err := js.Stream(ctx, events.StreamTokens)
	if err != nil {
		t.Fatal(err)
	}
	lastMsg, err := s.GetLastMsgForSubject(ctx, events.SubjectTokenPrefix+"revoked.>")
	if err != nil {
		t.Fatal(err)
	}
	end := lastMsg.Sequence
	cons, err := js.OrderedConsumer(ctx, events.StreamTokens, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectTokenPrefix + "revoked.>"}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			_, p, err := events.DecodeAs[*events.TokenRevoked](m.Data())
			if err != nil {
				t.Fatalf("ledger holds a bad revocation: %v", err)
			}
			out[p.TokenID]++
			if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream >= end {
				return out
			}
		}
		if got == 0 {
			t.Fatalf("the ledger read stopped before its last revocation (sequence %d)", end)
		}
	}
}
