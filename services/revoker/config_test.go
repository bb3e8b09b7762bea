package revoker_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

func clearEnv(t *testing.T) {
	for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY",
		"CORDON_POLICY", "CORDON_TRUST_ANCHOR", "CORDON_ALERT_WEBHOOK", "CORDON_SLACK_WEBHOOK", "CORDON_PAGERDUTY_KEY", "CORDON_PAGERDUTY_URL",
		"CORDON_REVOKER_DATA", "CORDON_SSF_PUSH"} {
		t.Setenv(v, "")
	}
}

// TestConfigFlags: the command line of a deployment gives the Config it
// says.
func TestConfigFlags(t *testing.T) {
	clearEnv(t)
	parse := func(args ...string) revoker.Config {
		t.Helper()
		fs := flag.NewFlagSet("revoker", flag.ContinueOnError)
		var c revoker.Config
		c.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if c.NATS.Identity == nil {
			t.Error("no default NATS identity")
		}
		c.NATS.Identity = nil
		return c
	}
	if c := parse(); c.TrustAnchor != ".cordon/trust-anchor.pub" || c.PagerDutyURL != alert.PagerDutyURL || c.Replicas != 1 || c.MaxTokenTTL != 0 ||
		c.HeartbeatInterval != revoker.DefaultHeartbeatInterval || c.LedgerWait != revoker.DefaultLedgerWait || c.DataDir != "" {
		t.Errorf("defaults: %+v", c)
	}
	got := parse("--nats=tls://nats-1:4222,tls://nats-2:4222", "--nats-creds=/run/secrets/nats.nk", "--nats-ca=/run/secrets/ca.pem",
		"--nats-cert=/run/secrets/client.pem", "--nats-key=/run/secrets/client-key.pem", "--replicas=3", "--usage-partitions=16", "--policy=/etc/cordon/policy.yaml",
		"--metrics-listen=127.0.0.1:9090", "--trust-anchor=/run/secrets/trust-anchor.pub", "--alert-webhook=https://am.example/hook",
		"--slack-webhook=https://hooks.example/s", "--pagerduty-key=k", "--pagerduty-url=https://pd.example/v2", "--external-url=https://cordon.example",
		"--max-token-ttl=2160h", "--source=revoker/a", "--dry-run", "--heartbeat=100ms", "--ledger-wait=5s", "--data-dir=/var/lib/cordon/revoker",
		"--ssf-push=https://a.example/events, https://b.example/events", "--ssf-push-auth-file=/run/secrets/ssf-push", "--ssf-key=/run/secrets/ssf.pem",
		"--ssf-issuer=https://cordon.example", "--ssf-audience=https://idp.example", "--ssf-listen=127.0.0.1:7600",
		"--ssf-receive-keys=https://idp.example/jwks.json", "--ssf-receive-issuer=https://idp.example", "--ssf-receive-audience=https://cordon.example",
		"--ssf-receive-auth-file=/run/secrets/ssf-receive", "--ssf-tenant=acme")
	want := revoker.Config{
		NATS: natsconn.Config{URL: "tls://nats-1:4222,tls://nats-2:4222", Creds: "/run/secrets/nats.nk", CA: "/run/secrets/ca.pem",
			Cert: "/run/secrets/client.pem", Key: "/run/secrets/client-key.pem"},
		Replicas: 3, UsagePartitions: 16, TrustAnchor: "/run/secrets/trust-anchor.pub", PolicyFile: "/etc/cordon/policy.yaml", MaxTokenTTL: 2160 * time.Hour,
		AlertWebhook: "https://am.example/hook", SlackWebhook: "https://hooks.example/s", PagerDutyKey: "k", PagerDutyURL: "https://pd.example/v2",
		ExternalURL: "https://cordon.example", DryRun: true, Source: "revoker/a", MetricsListen: "127.0.0.1:9090",
		HeartbeatInterval: 100 * time.Millisecond, LedgerWait: 5 * time.Second, DataDir: "/var/lib/cordon/revoker",
		SSF: revoker.SSFConfig{Push: "https://a.example/events, https://b.example/events", PushAuthFile: "/run/secrets/ssf-push",
			Key: "/run/secrets/ssf.pem", Issuer: "https://cordon.example", Audience: "https://idp.example", Listen: "127.0.0.1:7600",
			ReceiveKeys: "https://idp.example/jwks.json", ReceiveIssuer: "https://idp.example", ReceiveAudience: "https://cordon.example",
			ReceiveAuthFile: "/run/secrets/ssf-receive", Tenant: "acme"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*revoker.Config)
		want   string
	}{
		{"good", func(*revoker.Config) {}, ""},
		{"negative ttl", func(c *revoker.Config) { c.MaxTokenTTL = -time.Hour }, "--max-token-ttl -1h0m0s is negative"},
		{"replicas", func(c *revoker.Config) { c.Replicas = 0 }, "--replicas 0: want 1 to 5"},
		{"metrics", func(c *revoker.Config) { c.MetricsListen = "nope" }, `--metrics-listen "nope"`},
		{"heartbeat too short", func(c *revoker.Config) { c.HeartbeatInterval = time.Millisecond }, "--heartbeat 1ms: want 10ms to 1m"},
		{"heartbeat too long", func(c *revoker.Config) { c.HeartbeatInterval = time.Hour }, "--heartbeat 1h0m0s: want 10ms to 1m"},
		{"ledger wait", func(c *revoker.Config) { c.LedgerWait = -time.Second }, "--ledger-wait -1s: want 0"},
		{"webhook", func(c *revoker.Config) { c.AlertWebhook = "am.example/secret" }, "--alert-webhook"},
		{"slack", func(c *revoker.Config) { c.SlackWebhook = "hooks.example/services/secret" }, "--slack-webhook"},
		{"pagerduty url", func(c *revoker.Config) { c.PagerDutyKey, c.PagerDutyURL = "secret", "nope/secret" }, "--pagerduty-key"},
		{"ssf push url", func(c *revoker.Config) { c.SSF.Push, c.SSF.Key = "idp.example/secret", "k.pem" }, "--ssf-push: an endpoint is not"},
		{"ssf push without key", func(c *revoker.Config) { c.SSF.Push = "https://idp.example/events" }, "--ssf-push needs a signing key"},
		{"ssf receive without listen", func(c *revoker.Config) { c.SSF.ReceiveKeys = "jwks.json" }, "--ssf-receive-keys needs --ssf-listen"},
		{"ssf listen", func(c *revoker.Config) { c.SSF.Listen = "nope" }, `--ssf-listen "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := revoker.Config{Replicas: 1}
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, svcconfig.ErrInvalid) {
				t.Fatalf("error %v, want a configuration mistake starting %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error quotes a credential: %v", err)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	cases := []struct {
		name string
		c    revoker.Config
		want string
	}{
		{"no policy", revoker.Config{}, "response policy (default response policy): ok (critical→revoke, high-risk→revoke; max token ttl 2160h0m0s; 0 alert sinks)"},
		{"policy file", revoker.Config{PolicyFile: "../../testdata/response/good/full.yaml"}, "exfiltration→revoke"},
		{"flag over the policy's ttl", revoker.Config{PolicyFile: "../../testdata/response/good/full.yaml", MaxTokenTTL: 48 * time.Hour}, "max token ttl 48h0m0s"},
		{"dry run", revoker.Config{DryRun: true, SlackWebhook: "https://hooks.example/x"}, "dry-run: critical→revoke"},
		{"sinks counted", revoker.Config{SlackWebhook: "https://hooks.example/x", PagerDutyKey: "k", PagerDutyURL: alert.PagerDutyURL}, "; 2 alert sinks)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.c.Check()
			if err != nil || !strings.Contains(s, tc.want) {
				t.Errorf("%q, %v; want %q", s, err, tc.want)
			}
		})
	}
	given := response.Default()
	c := revoker.Config{Response: given, DryRun: true}
	if _, err := c.Check(); err != nil || given.DryRun {
		t.Errorf("--dry-run changed the caller's policy (%v)", err)
	}
}

// TestServiceStartAndClose: the revoker service needs a trust anchor,
// starts with a program's values alone and serves its metrics apart.
func TestServiceStartAndClose(t *testing.T) {
	clearEnv(t)
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natsconn.Config{URL: env.Server.ClientURL()}
	if _, err := revoker.Start(ctx, revoker.Config{NATS: nc, Log: zerolog.Nop()}); !errors.Is(err, svcconfig.ErrInvalid) ||
		!strings.Contains(err.Error(), "--trust-anchor is required") {
		t.Fatalf("started without a trust anchor: %v", err)
	}
	s, err := revoker.Start(ctx, revoker.Config{NATS: nc, TrustAnchors: token.Anchors{env.Anchor.Public()}, MetricsListen: "127.0.0.1:0", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "cordon_revoker_denylist_heartbeats_total") || !strings.Contains(string(b), "cordon_revoker_ledger_pending 0") {
		t.Errorf("metrics:\n%s", b)
	}
	if s.Revoker() == nil {
		t.Fatal("no revoker")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
