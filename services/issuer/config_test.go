package issuer

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
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// clearEnv unsets the variables the issuer's flags read.
func clearEnv(t *testing.T) {
	for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY",
		"CORDON_TLS_CERT", "CORDON_TLS_KEY", "CORDON_POLICY", "CORDON_ANCHOR_KEY", "CORDON_LEAK_GITHUB_KEYS"} {
		t.Setenv(v, "")
	}
}

// TestConfigFlags: the command line of a deployment gives the Config it
// says, and no flag is left out.
func TestConfigFlags(t *testing.T) {
	clearEnv(t)
	t.Setenv("CORDON_POLICY", "/etc/cordon/env-policy.yaml")
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var got Config
	got.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if got.PolicyFile != "/etc/cordon/env-policy.yaml" || got.Listen != DefaultListen || got.DataDir != ".cordon" || got.AdminTTL != "90d" ||
		got.Grace != DefaultGrace || got.Replicas != 1 || got.NATS.URL != "nats://127.0.0.1:4222" {
		t.Errorf("defaults: %+v", got)
	}
	args := []string{"--nats=tls://nats-1:4222,tls://nats-2:4222", "--nats-creds=/run/secrets/nats.nk", "--nats-ca=/run/secrets/ca.pem",
		"--nats-cert=/run/secrets/client.pem", "--nats-key=/run/secrets/client-key.pem", "--replicas=3", "--usage-partitions=16", "--data=/var/lib/cordon",
		"--policy=/etc/cordon/policy.yaml", "--listen=0.0.0.0:7400", "--tls-cert=/run/secrets/https.pem", "--tls-key=/run/secrets/https-key.pem",
		"--anchor-key=/run/secrets/anchor.key", "--metrics-listen=127.0.0.1:9090", "--source=issuer/a", "--admin-ttl=30d", "--grace=5m",
		"--leak-github-keys=https://api.github.com/meta/public_keys/secret_scanning", "--leak-rate=5", "--leak-burst=50"}
	fs = flag.NewFlagSet("issuer", flag.ContinueOnError)
	got = Config{}
	got.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if got.NATS.Identity == nil {
		t.Error("no default NATS identity")
	}
	got.NATS.Identity = nil
	want := Config{
		NATS: natsconn.Config{URL: "tls://nats-1:4222,tls://nats-2:4222", Creds: "/run/secrets/nats.nk", CA: "/run/secrets/ca.pem",
			Cert: "/run/secrets/client.pem", Key: "/run/secrets/client-key.pem"},
		Replicas: 3, UsagePartitions: 16, DataDir: "/var/lib/cordon", PolicyFile: "/etc/cordon/policy.yaml", Listen: "0.0.0.0:7400",
		TLSCert: "/run/secrets/https.pem", TLSKey: "/run/secrets/https-key.pem", AnchorKey: "/run/secrets/anchor.key",
		MetricsListen: "127.0.0.1:9090", Source: "issuer/a", AdminTTL: "30d", Grace: 5 * time.Minute,
		LeakGitHubKeys: "https://api.github.com/meta/public_keys/secret_scanning", LeakRate: 5, LeakBurst: 50,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	pol := &policy.Policy{}
	good := Config{PolicyFile: "p.yaml", Replicas: 1, AdminTTL: "90d", Listen: "127.0.0.1:7400"}
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"good", func(*Config) {}, ""},
		{"policy as a value", func(c *Config) { c.PolicyFile, c.Policy = "", pol }, ""},
		{"no API", func(c *Config) { c.Listen = "" }, ""},
		{"default admin ttl", func(c *Config) { c.AdminTTL = "" }, ""},
		{"no policy", func(c *Config) { c.PolicyFile = "" }, "--policy is required (or set $CORDON_POLICY)"},
		{"admin ttl syntax", func(c *Config) { c.AdminTTL = "soon" }, "--admin-ttl: "},
		{"admin ttl too short", func(c *Config) { c.AdminTTL = "1s" }, "--admin-ttl 1s is shorter than a minute"},
		{"negative grace", func(c *Config) { c.Grace = -time.Second }, "--grace -1s is negative"},
		{"no replicas", func(c *Config) { c.Replicas = 0 }, "--replicas 0: want 1 to 5"},
		{"too many replicas", func(c *Config) { c.Replicas = 7 }, "--replicas 7: want 1 to 5"},
		{"listen", func(c *Config) { c.Listen = "nope" }, `--listen "nope"`},
		{"metrics listen", func(c *Config) { c.MetricsListen = "nope" }, `--metrics-listen "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
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
		})
	}
}

func TestConfigCheck(t *testing.T) {
	c := Config{PolicyFile: defaultPolicy}
	if s, err := c.Check(); err != nil || !strings.Contains(s, "ok (7 holders, sha256 ") {
		t.Errorf("check: %q %v", s, err)
	}
	c.TLSCert, c.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	if _, err := c.Check(); !errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), "--tls-cert/--tls-key") {
		t.Errorf("missing certificate: %v", err)
	}
	c = Config{PolicyFile: "../../testdata/policy/bad/bad-cidr.yaml"}
	if _, err := c.Check(); err == nil || errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), "bad-cidr.yaml:9") {
		t.Errorf("a bad policy is the file's fault, not the flags': %v", err)
	}
}

// TestServiceStartAndClose: an embedded issuer service with only the
// values a program has (no flags) starts with the defaults, serves its
// metrics apart, and stops.
func TestServiceStartAndClose(t *testing.T) {
	env := natstest.Run(t)
	pol, err := policy.Load(defaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Start(ctx, Config{NATS: natsconn.Config{URL: env.Server.ClientURL()}, DataDir: dir, Replicas: 9}); !errors.Is(err, svcconfig.ErrInvalid) {
		t.Fatalf("an invalid configuration started: %v", err)
	}
	s, err := Start(ctx, Config{NATS: natsconn.Config{URL: env.Server.ClientURL()}, DataDir: dir, Policy: pol,
		MetricsListen: "127.0.0.1:0", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Issuer().Addr() != "" {
		t.Errorf("an HTTP API at %s, none asked for", s.Issuer().Addr())
	}
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "cordon_issuer_") {
		t.Errorf("metrics:\n%s", b)
	}
	if _, err := s.Issuer().Issue(ctx, "test", IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"},
		Audience: []string{"payments"}, TTL: "1h"}); err != nil {
		t.Errorf("issue: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := http.Get("http://" + s.MetricsAddr() + "/metrics"); err == nil {
		t.Error("metrics still served after Close")
	}
}
