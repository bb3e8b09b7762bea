package enforcer_test

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/services/enforcer"
)

const demoRoutes = "../../testdata/routes/demo.yaml"

func clearEnv(t *testing.T) {
	for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY",
		"CORDON_TRUST_ANCHOR", "CORDON_UPSTREAM", "CORDON_ROUTES"} {
		t.Setenv(v, "")
	}
}

func parseFlags(t *testing.T, args ...string) (enforcer.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("enforce", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c enforcer.Config
	c.RegisterFlags(fs)
	err := fs.Parse(args)
	if c.NATS.Identity == nil {
		t.Error("no default NATS identity")
	}
	return c, err
}

// TestConfigFlags: the command line of a deployment (the compose
// enforcer's) gives the Config it says; the enforcer's default NATS
// identity follows its --id.
func TestConfigFlags(t *testing.T) {
	clearEnv(t)
	def, err := parseFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if def.Listen != enforcer.DefaultListen || def.ID != enforcer.DefaultID() || !def.FailClosed || def.MaxStaleness != enforce.DefaultMaxStaleness ||
		def.CacheSize != enforce.DefaultCacheSize || def.UsageBuffer != enforce.DefaultUsageBuffer || def.DeviceHeader != enforce.DefaultDeviceHeader ||
		def.TrustAnchor != ".cordon/trust-anchor.pub" || def.SpoolDir != enforcer.SpoolAuto || def.SpoolMaxBytes != enforce.DefaultSpoolMaxBytes ||
		def.UsageFormat != enforce.UsageFormatBatch {
		t.Errorf("defaults: %+v", def)
	}
	got, err := parseFlags(t, "--nats=tls://nats-1:4222,tls://nats-2:4222", "--nats-creds=/run/secrets/nats.nk", "--nats-ca=/run/secrets/ca.pem",
		"--nats-cert=/run/secrets/client.pem", "--nats-key=/run/secrets/client-key.pem", "--id=edge-1", "--upstream=http://upstream:80",
		"--routes=/etc/cordon/routes.yaml", "--listen=0.0.0.0:8443", "--tls-cert=/run/secrets/https.pem", "--tls-key=/run/secrets/https-key.pem",
		"--metrics-listen=127.0.0.1:9090", "--trust-anchor=/run/secrets/trust-anchor.pub", "--trusted-proxy=10.0.0.0/8,192.168.1.1",
		"--trusted-proxy=fd00::/8", "--service=billing", "--environment=prod", "--device-header=X-Cert", "--keep-authorization",
		"--max-staleness=3s", "--fail-closed=false", "--cache-size=100", "--usage-buffer=200", "--client-ca=/run/secrets/clients.pem",
		"--spool-dir=/var/lib/cordon/spool", "--spool-size=64MiB", "--usage-format=event")
	if err != nil {
		t.Fatal(err)
	}
	if id := got.NATS.Identity(); !strings.HasSuffix(id, "enforcer-edge-1.nk") {
		t.Errorf("default identity %q does not follow --id", id)
	}
	got.NATS.Identity = nil
	want := enforcer.Config{
		Options: enforce.Options{ID: "edge-1", Service: "billing", Environment: "prod", DeviceHeader: "X-Cert", KeepAuthorization: true,
			MaxStaleness: 3 * time.Second, CacheSize: 100, UsageBuffer: 200, UsageFormat: enforce.UsageFormatEvent, SpoolDir: "/var/lib/cordon/spool", SpoolMaxBytes: 64 << 20,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("fd00::/8")}},
		NATS: natsconn.Config{URL: "tls://nats-1:4222,tls://nats-2:4222", Creds: "/run/secrets/nats.nk", CA: "/run/secrets/ca.pem",
			Cert: "/run/secrets/client.pem", Key: "/run/secrets/client-key.pem"},
		RoutesFile: "/etc/cordon/routes.yaml", TrustAnchor: "/run/secrets/trust-anchor.pub", Upstream: "http://upstream:80", Listen: "0.0.0.0:8443",
		TLSCert: "/run/secrets/https.pem", TLSKey: "/run/secrets/https-key.pem", ClientCA: "/run/secrets/clients.pem", MetricsListen: "127.0.0.1:9090",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if _, err := parseFlags(t, "--trusted-proxy", "10.0.0.0/33"); err == nil || !strings.Contains(err.Error(), "trusted-proxy") {
		t.Errorf("bad CIDR: %v", err)
	}
	for _, size := range []string{"12XB", "-1", "MiB", "99999999999GiB"} {
		if _, err := parseFlags(t, "--spool-size", size); err == nil || !strings.Contains(err.Error(), "spool-size") {
			t.Errorf("--spool-size %s: %v", size, err)
		}
	}
	for size, want := range map[string]int64{"65536": 64 << 10, "64KiB": 64 << 10, "1 GiB": 1 << 30, "300MiB": 300 << 20} {
		if c, err := parseFlags(t, "--spool-size", size); err != nil || c.SpoolMaxBytes != want {
			t.Errorf("--spool-size %s: %d, %v; want %d", size, c.SpoolMaxBytes, err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	clearEnv(t)
	base := []string{"--routes", demoRoutes, "--upstream", "http://127.0.0.1:9000"}
	cases := []struct {
		name string
		args []string
		set  func(*enforcer.Config)
		want string
	}{
		{name: "good", args: base},
		{name: "fail open without bound", args: append(base, "--fail-closed=false", "--max-staleness", "0")},
		{name: "routes as a value", args: []string{"--upstream", "http://x"}, set: func(c *enforcer.Config) { c.Routes = &enforce.Routes{Service: "x"} }},
		{name: "no routes", args: []string{"--upstream", "http://x"}, want: "--routes is required (or set $CORDON_ROUTES)"},
		{name: "no upstream", args: []string{"--routes", demoRoutes}, want: "--upstream is required (or set $CORDON_UPSTREAM)"},
		{name: "bad upstream", args: []string{"--routes", demoRoutes, "--upstream", "ftp://x"}, want: `--upstream "ftp://x": want http(s)://`},
		{name: "bad id", args: append(base, "--id", "a.b"), want: `--id "a.b": `},
		{name: "bad listen", args: append(base, "--listen", "nope"), want: `--listen "nope"`},
		{name: "no listen", args: append(base, "--listen", ""), want: `--listen ""`},
		{name: "bad metrics", args: append(base, "--metrics-listen", "nope"), want: `--metrics-listen "nope"`},
		{name: "fail closed without bound", args: append(base, "--max-staleness", "0"), want: "--fail-closed needs a --max-staleness bound"},
		{name: "negative bound", args: append(base, "--max-staleness", "-1s"), want: "--max-staleness -1s is negative"},
		{name: "key without cert", args: append(base, "--tls-key", "k.pem"), want: "--tls-cert and --tls-key go together"},
		{name: "client CA without cert", args: append(base, "--client-ca", "ca.pem"), want: "--tls-cert and --tls-key go together"},
		{name: "tiny spool", args: append(base, "--spool-size", "1KiB"), want: "--spool-size 1KiB: want at least 64KiB"},
		{name: "tiny spool off", args: append(base, "--spool-size", "1KiB", "--spool-dir", "off")},
		{name: "event format", args: append(base, "--usage-format", "event")},
		{name: "bad format", args: append(base, "--usage-format", "json"), want: `--usage-format "json": want batch or event`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if tc.set != nil {
				tc.set(&c)
			}
			err = c.Validate()
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
	clearEnv(t)
	t.Setenv("XDG_STATE_HOME", "/state")
	cases := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "routes", args: []string{"--routes", demoRoutes}, want: "routes " + demoRoutes + ": ok (service invoices, environment prod, 8 routes)\nfailing closed"},
		{name: "overrides", args: []string{"--routes", demoRoutes, "--service", "billing", "--environment", "staging"}, want: "service billing, environment staging"},
		{name: "fail open", args: []string{"--routes", demoRoutes, "--fail-closed=false"}, want: "NOT failing closed"},
		{name: "spool by default", args: []string{"--routes", demoRoutes, "--id", "edge-7"}, want: "\nusage spool /state/cordon/spool/edge-7, at most 256MiB"},
		{name: "spool off", args: []string{"--routes", demoRoutes, "--spool-dir", "off"}, want: "\nusage spool off"},
		{name: "spool elsewhere", args: []string{"--routes", demoRoutes, "--spool-dir", "/var/spool/e", "--spool-size", "1GiB"}, want: "\nusage spool /var/spool/e, at most 1GiB"},
		{name: "batches by default", args: []string{"--routes", demoRoutes}, want: "\nusage format batch: one message per batch of a tenant and holder, at most 1000 records or 256KiB, after at most 50ms"},
		{name: "events", args: []string{"--routes", demoRoutes, "--usage-format", "event"}, want: "\nusage format event: one JSON event per decision"},
		{name: "bad routes", args: []string{"--routes", "../../testdata/routes/bad-method.yaml"}, wantErr: "bad-method.yaml:6"},
		{name: "missing certificate", args: []string{"--routes", demoRoutes, "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"},
			wantErr: "load tls certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(t, append(tc.args, "--upstream", "http://127.0.0.1:9000")...)
			if err != nil {
				t.Fatal(err)
			}
			s, err := c.Check()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(s, tc.want) {
				t.Fatalf("%q, %v; want %q", s, err, tc.want)
			}
		})
	}
}
