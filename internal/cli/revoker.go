package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/services/revoker"
)

// revokerFlags are the options of `cordon revoker`.
type revokerFlags struct {
	policy, source, metrics                   string
	webhook, slack, pdKey, pdURL, externalURL string
	maxTTL                                    time.Duration
	replicas                                  int
	dryRun, check                             bool
}

// runRevoker is `cordon revoker`: the revocation service on its own.
func runRevoker(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "revoker", "revoker --nats URL --policy FILE [--alert-webhook URL] [--slack-webhook URL] [--pagerduty-key KEY] [--check-config]")
	var f revokerFlags
	nf := addNATSFlags(fs, revokerIdentity)
	anchor := addTrustAnchorFlag(fs)
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file; its response: section is the response policy ($CORDON_POLICY)")
	fs.StringVar(&f.webhook, "alert-webhook", os.Getenv("CORDON_ALERT_WEBHOOK"), "Alertmanager-format webhook receiver URL ($CORDON_ALERT_WEBHOOK)")
	fs.StringVar(&f.slack, "slack-webhook", os.Getenv("CORDON_SLACK_WEBHOOK"), "Slack incoming webhook URL ($CORDON_SLACK_WEBHOOK)")
	fs.StringVar(&f.pdKey, "pagerduty-key", os.Getenv("CORDON_PAGERDUTY_KEY"), "PagerDuty Events API v2 routing key ($CORDON_PAGERDUTY_KEY)")
	fs.StringVar(&f.pdURL, "pagerduty-url", getenvDefault("CORDON_PAGERDUTY_URL", alert.PagerDutyURL), "PagerDuty events endpoint")
	fs.StringVar(&f.externalURL, "external-url", "", "link back to Cordon shown in alerts")
	fs.DurationVar(&f.maxTTL, "max-token-ttl", 0, "longest token life (default: the policy's largest max_ttl, at least 24h)")
	fs.StringVar(&f.source, "source", "", "instance name recorded in events (default revoker/<hostname>)")
	fs.StringVar(&f.metrics, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
	fs.IntVar(&f.replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	fs.BoolVar(&f.dryRun, "dry-run", false, "record what would be revoked, revoke nothing (overrides the policy)")
	fs.BoolVar(&f.check, "check-config", false, "validate the policy and flags, then exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	resp, maxTTL, err := loadResponsePolicy(f.policy)
	if err != nil {
		return err
	}
	if f.maxTTL < 0 {
		return fmt.Errorf("%w: --max-token-ttl %s is negative", errUsage, f.maxTTL)
	}
	if f.maxTTL > 0 {
		maxTTL = f.maxTTL
	}
	if f.dryRun {
		resp.DryRun = true
	}
	if f.replicas < 1 || f.replicas > 5 {
		return fmt.Errorf("%w: --replicas %d: want 1 to 5", errUsage, f.replicas)
	}
	if f.metrics != "" {
		if _, _, err := net.SplitHostPort(f.metrics); err != nil {
			return fmt.Errorf("%w: --metrics-listen %q: %v", errUsage, f.metrics, err)
		}
	}
	sinks, err := alertSinks(f)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.check {
		fmt.Fprintf(env.Stdout, "response policy %s: ok (%s; max token ttl %s; %d alert sinks)\n", resp.File, resp, maxTTL, len(sinks))
		return nil
	}
	if f.source == "" {
		host, _ := os.Hostname()
		f.source = "revoker/" + strings.SplitN(host, ".", 2)[0]
	}

	anchors, err := trustAnchors(*anchor)
	if err != nil {
		return err
	}
	nc, err := nf.connect("cordon-revoker")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := natsconn.EnsureMissing(ctx, js, events.StreamOptions{Replicas: f.replicas}, env.Log); err != nil {
		return err
	}
	r, err := revoker.New(revoker.Options{
		NC: nc, JS: js, Policy: resp, Sinks: sinks, Log: env.Log, Source: f.source, MaxTokenTTL: maxTTL,
		TrustAnchors: anchors,
	})
	if err != nil {
		return err
	}
	if f.metrics != "" {
		stop, err := serveMetrics(env, f.metrics, "revoker", r)
		if err != nil {
			return err
		}
		defer stop()
	}
	return r.Run(ctx)
}

// loadResponsePolicy reads the response policy and the longest token life
// from the policy file; no file means the default response policy.
func loadResponsePolicy(path string) (*response.Policy, time.Duration, error) {
	maxTTL := 24 * time.Hour
	if path == "" {
		return response.Default(), maxTTL, nil
	}
	pol, err := policy.Load(path)
	if err != nil {
		return nil, 0, err
	}
	for _, c := range pol.Holders {
		maxTTL = max(maxTTL, c.MaxTTL)
	}
	resp, err := response.Decode(pol.File, pol.Response)
	if err != nil {
		return nil, 0, err
	}
	return resp, maxTTL, nil
}

// alertSinks builds the configured sinks. Errors never quote URLs or keys.
func alertSinks(f revokerFlags) ([]alert.Sink, error) {
	var sinks []alert.Sink
	if f.webhook != "" {
		s, err := alert.NewWebhook(alert.WebhookConfig{URL: f.webhook, ExternalURL: f.externalURL})
		if err != nil {
			return nil, fmt.Errorf("--alert-webhook: %w", err)
		}
		sinks = append(sinks, s)
	}
	if f.slack != "" {
		s, err := alert.NewSlack(alert.SlackConfig{URL: f.slack})
		if err != nil {
			return nil, fmt.Errorf("--slack-webhook: %w", err)
		}
		sinks = append(sinks, s)
	}
	if f.pdKey != "" {
		s, err := alert.NewPagerDuty(alert.PagerDutyConfig{RoutingKey: f.pdKey, URL: f.pdURL, ClientURL: f.externalURL})
		if err != nil {
			return nil, fmt.Errorf("--pagerduty-key: %w", err)
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

// runRevoke is `cordon revoke`: a NATS client of cordon.cmd.revoke that
// prints the structured reply.
func runRevoke(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "revoke",
		`revoke (--token ID | --holder TENANT/HOLDER | --kid KID | --tenant T | --before RFC3339 --tenant T) --reason "…" [--nats URL] [--token-file FILE]`)
	var (
		tokenFile, idem                               string
		tokenID, holder, kid, tenant, beforeS, reason string
		timeout                                       time.Duration
	)
	nf := addNATSFlags(fs, adminIdentity)
	fs.StringVar(&tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", ".cordon/admin.token"),
		"file holding a Cordon token with scope cordon:revoke ($CORDON_TOKEN_FILE)")
	fs.StringVar(&tokenID, "token", "", "revoke one token by id")
	fs.StringVar(&holder, "holder", "", "revoke every token of TENANT/HOLDER")
	fs.StringVar(&kid, "kid", "", "revoke every token signed by this key id")
	fs.StringVar(&tenant, "tenant", "", "revoke every token of this tenant (with --before: those issued before the time)")
	fs.StringVar(&beforeS, "before", "", "with --tenant: revoke tokens issued before this RFC 3339 time")
	fs.StringVar(&reason, "reason", "", "why (recorded on the ledger; required)")
	fs.StringVar(&idem, "idempotency-key", "", "makes a retry of this command a no-op (default: a random key)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	req := revoker.CommandRequest{Reason: reason, IdempotencyKey: idem}
	chosen := 0
	if tokenID != "" {
		chosen++
		req.Kind, req.TokenID = events.RevokeToken, tokenID
	}
	if holder != "" {
		chosen++
		t, h, ok := strings.Cut(holder, "/")
		if !ok || t == "" || h == "" {
			return fmt.Errorf("%w: --holder %q: want TENANT/HOLDER", errUsage, holder)
		}
		req.Kind, req.Tenant, req.Holder = events.RevokeHolder, t, h
	}
	if kid != "" {
		chosen++
		req.Kind, req.KeyID = events.RevokeKey, kid
	}
	switch {
	case beforeS != "":
		chosen++
		if tenant == "" {
			return fmt.Errorf("%w: --before needs --tenant", errUsage)
		}
		b, err := time.Parse(time.RFC3339, beforeS)
		if err != nil {
			return fmt.Errorf("%w: --before %q: want an RFC 3339 time such as 2026-11-27T10:00:00Z", errUsage, beforeS)
		}
		req.Kind, req.Tenant, req.Before = events.RevokeBefore, tenant, b
	case tenant != "":
		chosen++
		req.Kind, req.Tenant = events.RevokeTenant, tenant
	}
	if chosen != 1 {
		return fmt.Errorf("%w: give exactly one of --token, --holder, --kid, --tenant, --before with --tenant", errUsage)
	}
	if reason == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = uuid.NewString()
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	req.Auth = strings.TrimSpace(string(b))

	nc, err := nf.connect("cordon-revoke")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := revoker.Call(ctx, nc, req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no revoker is listening on %s at %s", events.SubjectCmdRevoke, nf.URL)
		}
		return err
	}
	out, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, string(out))
	if !rep.OK {
		return fmt.Errorf("revocation refused (%s): %s", rep.Code, rep.Error)
	}
	return nil
}
