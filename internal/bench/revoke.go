package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// RevocationSuite measures revocation propagation (revoke request → every
// enforcer denies) with 1, 10 and 100 enforcers, and detection to denial
// (first out-of-context request → the token denied by every enforcer) on
// the whole embedded system.
func RevocationSuite() Suite {
	return Suite{Name: "revocation", Summary: "revocation to denial on 1, 10 and 100 enforcers; detection to denial", Run: runRevocationSuite}
}

func runRevocationSuite(ctx context.Context, env Env) ([]Figure, error) {
	progress := env.Progress
	var figs []Figure
	trials := env.size(1000, 20)
	for _, n := range []int{1, 10, 100} {
		if env.Smoke && n == 100 {
			n = 3
		}
		fmt.Fprintf(progress, "   propagation to %d enforcer(s) over TCP to a nats-server process, %d revocations…\n", n, trials)
		samples, err := propagation(ctx, progress, n, trials)
		if err != nil {
			return nil, err
		}
		q := Percentiles(samples, 50, 99)
		how := fmt.Sprintf("timer from the Revoke call (revoker service) to the last enforcer's first 'revoked' decision, enforcers polling every 50 µs; n=%d; one nats-server process over loopback TCP, every client on its own connection", len(samples))
		p99 := Figure{Name: fmt.Sprintf("revoke → denied by all %d enforcers, %s", n, q[1].Label), Value: Millis(q[1].Value), Unit: "ms", OK: true, How: how}
		if n == 10 {
			p99.Target, p99.OK = "≤ 10 ms", !q[1].Max && q[1].Value <= 10*time.Millisecond
		}
		figs = append(figs,
			Figure{Name: fmt.Sprintf("revoke → denied by all %d enforcers, %s", n, q[0].Label), Value: Millis(q[0].Value), Unit: "ms", OK: true, How: how},
			p99)
	}
	// The graduated response's restrictions ride the same broadcast.
	rn := 10
	if env.Smoke {
		rn = 3
	}
	for _, step := range []string{events.StepNarrow, events.StepStepUp} {
		fmt.Fprintf(progress, "   %s propagation to %d enforcers over TCP to a nats-server process, %d restrictions…\n", step, rn, trials)
		samples, err := propagationStep(ctx, rn, trials, step)
		if err != nil {
			return nil, fmt.Errorf("%s propagation: %w", step, err)
		}
		q := Percentiles(samples, 50, 99)
		want := restrictedReason(step)
		how := fmt.Sprintf("timer from the Restrict call (revoker service, step %s) to the last enforcer's first '%s' decision, enforcers polling every 50 µs; n=%d; one nats-server process over loopback TCP, every client on its own connection; the same set-up as the revocation figures", step, want, len(samples))
		figs = append(figs,
			Figure{Name: fmt.Sprintf("%s → denied (%s) by all %d enforcers, %s", step, want, rn, q[0].Label), Value: Millis(q[0].Value), Unit: "ms", OK: true, How: how},
			Figure{Name: fmt.Sprintf("%s → denied (%s) by all %d enforcers, %s", step, want, rn, q[1].Label), Value: Millis(q[1].Value), Unit: "ms",
				Target: "≤ 10 ms", OK: !q[1].Max && q[1].Value <= 10*time.Millisecond, How: how})
	}
	dtrials, denf := env.size(40, 2), env.size(10, 2)
	fmt.Fprintf(progress, "   detection to denial on the whole embedded system (cordon up, demo thresholds), %d enforcers, %d leaks…\n", denf, dtrials)
	samples, err := detectionToDenial(ctx, denf, dtrials, false)
	if err != nil {
		return nil, err
	}
	q := Percentiles(samples, 50, 99)
	how := fmt.Sprintf("timer from the attacker's first Check to the last enforcer's 'revoked' decision; n=%d leaks, each after 25 uses from the holder's address; detectors at the demo policy's thresholds (learning: 20 events, no minimum age)", len(samples))
	figs = append(figs,
		Figure{Name: "first out-of-context request → denied everywhere (demo thresholds), " + q[0].Label, Value: Millis(q[0].Value), Unit: "ms", OK: true, How: how},
		Figure{Name: "first out-of-context request → denied everywhere (demo thresholds), " + q[1].Label, Value: Millis(q[1].Value), Unit: "ms", Target: "≤ 100 ms", OK: q[1].Value <= 100*time.Millisecond, How: how})

	fmt.Fprintf(progress, "   the same at the default thresholds, the holder learnt first (%d tokens × %d uses over %d days of event time), %d enforcers, %d leaks…\n",
		learnTokens, learnUses, learnDays, denf, dtrials)
	samples, err = detectionToDenial(ctx, denf, dtrials, true)
	if err != nil {
		return nil, fmt.Errorf("default thresholds: %w", err)
	}
	q = Percentiles(samples, 50, 99)
	how = fmt.Sprintf("timer from the attacker's first Check (a fresh token of the learnt holder, after 25 uses from the holder's address, attacked from a network of its own) to the last enforcer's 'revoked' decision; n=%d leaks; detectors at detect.DefaultConfig, holder past holder_learning (%d events over %d days)",
		len(samples), learnTokens*learnUses, learnDays)
	figs = append(figs,
		Figure{Name: "first out-of-context request → denied everywhere (default thresholds, learnt holder), " + q[0].Label, Value: Millis(q[0].Value), Unit: "ms", OK: true, How: how},
		Figure{Name: "first out-of-context request → denied everywhere (default thresholds, learnt holder), " + q[1].Label, Value: Millis(q[1].Value), Unit: "ms", Target: "≤ 100 ms", OK: q[1].Value <= 100*time.Millisecond, How: how})
	return figs, nil
}

// benchEnforcers starts n enforcers, each on its own connection, all
// watching the keys and denylist buckets.
//
// connect opens the connection of enforcer id (on a secured server, with
// that enforcer's own identity).
func benchEnforcers(ctx context.Context, connect func(id string) (*nats.Conn, error), n int, service string, anchors token.Anchors) ([]*enforce.Enforcer, func(), error) {
	var es []*enforce.Enforcer
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	for i := 0; i < n; i++ {
		nc, err := connect(benchEnforcerID(i))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		e, err := enforce.New(enforce.Options{ID: benchEnforcerID(i), Service: service, DisableUsage: true, TrustAnchors: anchors, Log: zerolog.Nop()})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		if err := e.Start(ctx, js); err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, func() { e.Close() })
		es = append(es, e)
	}
	return es, closeAll, nil
}

// benchEnforcerID is the id of the i-th benchmark enforcer.
func benchEnforcerID(i int) string { return fmt.Sprintf("bench-%d", i) }

// untilAllDeny polls the enforcers until each denies req as revoked and
// returns when the last one did.
func untilAllDeny(ctx context.Context, es []*enforce.Enforcer, req func() *enforce.Request, timeout time.Duration) (time.Time, error) {
	return untilAllDenyAs(ctx, es, req, enforce.ReasonRevoked, timeout)
}

// untilAllDenyAs polls the enforcers until each denies req with reason
// and returns when the last one did.
func untilAllDenyAs(ctx context.Context, es []*enforce.Enforcer, req func() *enforce.Request, reason enforce.Reason, timeout time.Duration) (time.Time, error) {
	pending := append([]*enforce.Enforcer(nil), es...)
	deadline := time.Now().Add(timeout)
	var last time.Time
	for len(pending) > 0 {
		rest := pending[:0]
		for _, e := range pending {
			if d := e.Check(req()); d.Reason == reason {
				last = time.Now()
				continue
			}
			rest = append(rest, e)
		}
		pending = rest
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return last, fmt.Errorf("%d of %d enforcers still do not deny the token as %s after %v", len(pending), len(es), reason, timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
	return last, nil
}

// propagation starts one nats-server process (natscluster.Binary, the
// version go.mod pins) with Cordon's streams and buckets, the revoker
// service and n enforcers, each on its own TCP connection, and times
// trials revocations from the Revoke call until every enforcer denies the
// token as revoked.
func propagation(ctx context.Context, progress io.Writer, n, trials int) ([]time.Duration, error) {
	return propagationStep(ctx, n, trials, events.StepRevoke)
}

// propagationStep is propagation for one step of the graduated response:
// revoke, narrow (timed until every enforcer denies a write as
// quarantined) or step_up (until every enforcer denies as
// step_up_required).
func propagationStep(ctx context.Context, n, trials int, step string) ([]time.Duration, error) {
	srv, err := startNATSProcess(ctx)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	return propagationOn(ctx, srv.url, n, trials, step)
}

// restrictedReason is the deny reason of a step.
func restrictedReason(step string) enforce.Reason {
	switch step {
	case events.StepNarrow:
		return enforce.Reason(events.ReasonQuarantined)
	case events.StepStepUp:
		return enforce.Reason(events.ReasonStepUpRequired)
	}
	return enforce.ReasonRevoked
}

// natsProcess is a nats-server process with JetStream on a loopback port.
type natsProcess struct {
	url  string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startNATSProcess starts nats-server (natscluster.Binary) alone, with
// JetStream in a temporary directory, waits until it accepts a connection
// and creates Cordon's streams and buckets.
func startNATSProcess(ctx context.Context) (*natsProcess, error) {
	bin, err := natscluster.Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cordon-bench-nats-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "nats.conf")
	cfg := fmt.Sprintf("server_name: bench\nlisten: \"127.0.0.1:%d\"\njetstream {\n  store_dir: %s\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}\n",
		port, strconv.Quote(filepath.Join(dir, "data")))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "nats.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	p := &natsProcess{url: fmt.Sprintf("nats://127.0.0.1:%d", port), dir: dir, cmd: exec.Command(bin, "-c", conf), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := natsconn.Dial(natsconn.Config{URL: p.url, Name: "bench-setup"})
		if err == nil {
			js, jerr := jetstream.New(nc)
			if jerr == nil {
				jerr = natsconn.Ensure(ctx, js, events.StreamOptions{UsageMaxBytes: 256 << 20})
			}
			nc.Close()
			if jerr != nil {
				p.stop()
				return nil, jerr
			}
			return p, nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(filepath.Join(dir, "nats.log"))
			p.stop()
			return nil, fmt.Errorf("nats-server exited at start: %s", log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("nats-server at %s: %w", p.url, err)
		}
	}
}

// stop ends the process and removes its directory.
func (p *natsProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	os.RemoveAll(p.dir)
}

func propagationOn(ctx context.Context, url string, n, trials int, step string) ([]time.Duration, error) {
	nc, err := natsconn.Dial(natsconn.Config{URL: url, Name: "bench-keys"})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	signer, anchor, err := newSigning()
	if err != nil {
		return nil, err
	}
	anchors := token.Anchors{anchor.Public()}
	if err := trustSigner(ctx, js, signer, anchor); err != nil {
		return nil, err
	}
	svc, err := revoker.Start(ctx, revoker.Config{NATS: natsconn.Config{URL: url, Name: "bench-revoker"},
		TrustAnchors: anchors, Response: response.Default(), Source: "bench", Log: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	rv := svc.Revoker()
	es, closeAll, err := benchEnforcers(ctx, func(id string) (*nats.Conn, error) {
		return natsconn.Dial(natsconn.Config{URL: url, Name: "bench-enforcer-" + id})
	}, n, "bench", anchors)
	if err != nil {
		return nil, err
	}
	defer closeAll()

	samples := make([]time.Duration, 0, trials)
	for i := 0; i < trials; i++ {
		now := time.Now()
		c := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "bench", Holder: "svc", Scopes: []string{"x:read", "x:write"},
			Audience: []string{"bench"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
		tok, err := signer.Mint(c)
		if err != nil {
			return nil, err
		}
		// A quarantine is timed on a write, which it denies.
		req := func() *enforce.Request {
			return &enforce.Request{Token: tok, Method: "PUT", Route: "/x", Scope: "x:write", RemoteAddr: netip.MustParseAddr("127.0.0.1")}
		}
		if step != events.StepRevoke {
			// Restrictions act on tokens the ledger knows.
			if err := publishIssued(ctx, js, c, signer.KeyID); err != nil {
				return nil, err
			}
		}
		// Every enforcer has the token cached as good before it is revoked.
		for _, e := range es {
			if d := e.Check(req()); !d.Allow {
				return nil, fmt.Errorf("warm-up denied: %s", d.Reason)
			}
		}
		start := time.Now()
		if step == events.StepRevoke {
			if _, err := rv.Revoke(ctx, revoker.Request{Kind: events.RevokeToken, TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder, Actor: "bench", Reason: "bench"}); err != nil {
				return nil, err
			}
		} else {
			q := revoker.RestrictRequest{TokenID: c.ID, Step: step, For: time.Hour, Actor: "bench", Reason: "bench"}
			if step == events.StepNarrow {
				q.Networks = []string{"10.0.0.0/8"}
			}
			if _, err := rv.Restrict(ctx, q); err != nil {
				return nil, err
			}
		}
		last, err := untilAllDenyAs(ctx, es, req, restrictedReason(step), 10*time.Second)
		if err != nil {
			return nil, err
		}
		samples = append(samples, last.Sub(start))
	}
	return samples, nil
}

// publishIssued records a minted token on the ledger, as the issuer does.
func publishIssued(ctx context.Context, js jetstream.JetStream, c token.Claims, kid string) error {
	ev, err := events.New("bench", time.Unix(c.IssuedAt, 0), &events.TokenIssued{TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder, KeyID: kid,
		Actor: "bench", Claims: events.TokenClaims{Scopes: c.Scopes, Audience: c.Audience, NotBefore: time.Unix(c.NotBefore, 0).UTC(),
			Expiry: time.Unix(c.Expiry, 0).UTC()}})
	if err != nil {
		return err
	}
	b, err := events.Encode(ev)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, events.Subject(ev), b, jetstream.WithMsgID(ev.MsgID())); err != nil {
		return fmt.Errorf("publish issued token: %w", err)
	}
	return nil
}

// defaultsPolicy is the demo policy's holders and response rules with no
// detectors section: the detectors run at detect.DefaultConfig.
const defaultsPolicy = `version: 1
holders:
  - tenant: acme
    holder: billing-api
    scopes: [invoices:list, invoices:read, invoices:write, customers:read]
    networks: [127.0.0.0/8, "::1/128"]
    audiences: [invoices]
    environments: [demo]
    max_ttl: 24h
response:
  rules:
    - name: leaked-token
      detectors: [new_network, scope_probing, use_after_revoke, multi_network]
      min_severity: medium
      action: revoke
    - name: everything-else
      action: alert
`

// Sizes of the holder learning phase of detectionToDenial at default
// thresholds: learnTokens tokens of the holder, each used learnUses times
// spread over learnDays of event time ending an hour ago — past detect's
// default holder learning (200 events over 72 h).
const (
	learnTokens = 4
	learnUses   = 60
	learnDays   = 4
)

// detectionToDenial runs the leak on the whole embedded system (issuer,
// auditor with detectors, revoker, enforcers) trials times: a token is
// used from its holder's address, then from another; the time is from
// that first out-of-context request until every enforcer denies it.
//
// With defaults false the detectors run at the demo policy's thresholds
// (a token's baseline is learnt after 20 uses, at once). With defaults
// true they run at detect.DefaultConfig, and the holder is learnt first:
// a learning enforcer (Leeway covering the past) decides learnTokens
// tokens' requests with event times over the last learnDays days; each
// trial then attacks from a network of its own, so that no attacker
// network joins the holder's baseline as a rollout.
func detectionToDenial(ctx context.Context, enforcers, trials int, defaults bool) (samples []time.Duration, err error) {
	dir, err := os.MkdirTemp("", "cordon-bench-loop-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	extra := make([]string, max(enforcers-1, 0))
	for i := range extra {
		extra[i] = benchEnforcerID(i)
	}
	opts := up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: sharedChDBPath(), Database: "bench_loop", Log: zerolog.Nop(), ExtraEnforcers: extra}
	if defaults {
		opts.Database = "bench_loop_defaults"
		opts.PolicyFile = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(opts.PolicyFile, []byte(defaultsPolicy), 0o600); err != nil {
			return nil, err
		}
		opts.ExtraEnforcers = append(opts.ExtraEnforcers, "bench-learn")
	}
	defer dropBenchDatabase(opts.Database)
	sys, err := up.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	others, closeAll, err := benchEnforcers(ctx, func(id string) (*nats.Conn, error) {
		return sys.Connect("bench-enforcer-"+id, sys.EnforcerCredsFile(id))
	}, enforcers-1, "invoices", token.Anchors{sys.Issuer.TrustAnchor()})
	if err != nil {
		return nil, err
	}
	defer closeAll()
	all := append([]*enforce.Enforcer{sys.Enforcer}, others...)
	holderIP := netip.MustParseAddr("127.0.0.1")
	attackerIP := func(i int) netip.Addr {
		if defaults {
			return netip.AddrFrom4([4]byte{127, byte(66 + i%150), byte(i / 150), 9})
		}
		return netip.MustParseAddr("127.66.0.9")
	}
	if defaults {
		if err := learnHolder(ctx, sys); err != nil {
			return nil, fmt.Errorf("holder learning: %w", err)
		}
	}

	samples = make([]time.Duration, 0, trials)
	for i := 0; i < trials; i++ {
		res, err := sys.Issuer.Issue(ctx, "bench", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
		if err != nil {
			return nil, err
		}
		req := func(ip netip.Addr) *enforce.Request {
			return &enforce.Request{Token: res.Token, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: ip, UserAgent: "bench"}
		}
		before := sys.Auditor.Stats().Usage
		const learn = 25
		for k := 0; k < learn; k++ {
			if d := sys.Enforcer.Check(req(holderIP)); !d.Allow {
				return nil, fmt.Errorf("legitimate use denied: %s", d.Reason)
			}
		}
		if err := sys.Enforcer.Flush(ctx); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(20 * time.Second)
		for sys.Auditor.Stats().Usage < before+learn {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("auditor did not catch up")
			}
			time.Sleep(time.Millisecond)
		}
		// The leak: the first request from elsewhere is still allowed.
		start := time.Now()
		if d := sys.Enforcer.Check(req(attackerIP(i))); !d.Allow {
			return nil, fmt.Errorf("first attacker request denied early: %s", d.Reason)
		}
		last, err := untilAllDeny(ctx, all, func() *enforce.Request { return req(attackerIP(i)) }, 10*time.Second)
		if err != nil {
			return nil, err
		}
		samples = append(samples, last.Sub(start))
	}
	return samples, nil
}

// learnHolder makes the demo holder acme/billing-api learnt at the default
// thresholds: learnTokens tokens issued to it are used learnUses times
// each from its address, with event times spread over the last learnDays
// days, through an enforcer of its own whose Leeway accepts those times;
// it returns once the auditor has consumed them.
func learnHolder(ctx context.Context, sys *up.System) error {
	nc, err := sys.Connect("bench-enforcer-learn", sys.EnforcerCredsFile("bench-learn"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	e, err := enforce.New(enforce.Options{ID: "bench-learn", Service: "invoices", Environment: "demo", Leeway: time.Duration(learnDays+1) * 24 * time.Hour,
		TrustAnchors: token.Anchors{sys.Issuer.TrustAnchor()}, Log: zerolog.Nop()})
	if err != nil {
		return err
	}
	defer e.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = e.Start(sctx, js)
	cancel()
	if err != nil {
		return err
	}
	var toks []string
	for range learnTokens {
		res, err := sys.Issuer.Issue(ctx, "bench", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "24h"})
		if err != nil {
			return err
		}
		toks = append(toks, res.Token)
	}
	before := sys.Auditor.Stats().Usage
	day0 := time.Now().Add(-time.Duration(learnDays)*24*time.Hour - time.Hour)
	step := time.Duration(learnDays) * 24 * time.Hour / learnUses
	for k := range learnUses {
		for i, tok := range toks {
			r := &enforce.Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Resource: strconv.Itoa(k), Scope: "invoices:read",
				RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench", Time: day0.Add(time.Duration(k)*step + time.Duration(i)*time.Second)}
			if d := e.Check(r); !d.Allow {
				return fmt.Errorf("learning request denied: %s", d.Reason)
			}
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	err = e.Flush(fctx)
	fcancel()
	if err != nil {
		return err
	}
	want := before + uint64(learnTokens*learnUses)
	deadline := time.Now().Add(time.Minute)
	for sys.Auditor.Stats().Usage < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("auditor consumed %d of %d learning events", sys.Auditor.Stats().Usage-before, learnTokens*learnUses)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
