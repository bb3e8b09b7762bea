package auditor_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

func clearEnv(t *testing.T) {
	for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY",
		"CORDON_POLICY", "CORDON_TRUST_ANCHOR", "CORDON_CLICKHOUSE_ADDR", "CORDON_CLICKHOUSE_USER", "CORDON_CLICKHOUSE_PASSWORD_FILE",
		"CORDON_CLICKHOUSE_ANALYST_USER", "CORDON_CLICKHOUSE_ANALYST_PASSWORD_FILE", "CORDON_USAGE_PARTITIONS"} {
		t.Setenv(v, "")
	}
}

func parseFlags(t *testing.T, args ...string) auditor.Config {
	t.Helper()
	fs := flag.NewFlagSet("auditor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c auditor.Config
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

// TestConfigFlags: the command line of a deployment (the compose
// auditor's, with the flag names the binary defines) gives the Config it
// says.
func TestConfigFlags(t *testing.T) {
	clearEnv(t)
	def := parseFlags(t)
	if def.Store != auditor.DefaultStore || def.ChDBPath != ".cordon/chdb" || def.StateDir != ".cordon/auditor" || def.Database != store.DefaultDatabase ||
		def.ClickHouse.Addr != "localhost:8123" || def.ClickHouse.User != "default" || def.BatchSize != auditor.DefaultBatchSize ||
		def.BatchWait != auditor.DefaultBatchWait || def.AnomalyWait != auditor.DefaultAnomalyWait || def.ShareWait != auditor.DefaultShareWait || def.Writers != auditor.DefaultWriters || def.SQLTimeout != store.DefaultQueryTimeout ||
		def.SQLMaxRows != store.DefaultMaxResultRows || def.SQLMaxMemoryMiB != int(store.DefaultMaxQueryMemory>>20) || def.Replicas != 1 ||
		def.TrustAnchor != ".cordon/trust-anchor.pub" || def.UsagePartitions != events.DefaultUsagePartitions {
		t.Errorf("defaults: %+v", def)
	}
	if err := def.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	got := parseFlags(t, "--nats=tls://nats-1:4222,tls://nats-2:4222", "--nats-creds=/run/secrets/nats.nk", "--nats-ca=/run/secrets/ca.pem",
		"--nats-cert=/run/secrets/client.pem", "--nats-key=/run/secrets/client-key.pem", "--replicas=3", "--store=clickhouse",
		"--clickhouse-addr=clickhouse:8443", "--clickhouse-tls", "--clickhouse-ca-file=/run/secrets/ca.pem", "--clickhouse-user=cordon",
		"--clickhouse-password-file=/run/secrets/ch-password", "--clickhouse-analyst-user=cordon_analyst",
		"--clickhouse-analyst-password-file=/run/secrets/ch-analyst-password", "--clickhouse-database=audit", "--state=/var/lib/cordon",
		"--metrics-listen=127.0.0.1:9090", "--trust-anchor=/run/secrets/trust-anchor.pub", "--policy=/etc/cordon/policy.yaml",
		"--retention-days=30", "--batch-size=5000", "--batch-wait=50ms", "--anomaly-wait=250ms", "--share-wait=5m", "--writers=4", "--source=auditor/a",
		"--sql-timeout=30s", "--sql-max-rows=500", "--sql-max-memory-mb=256", "--chdb-path=/data/chdb", "--usage-partitions=16")
	want := auditor.Config{
		NATS: natsconn.Config{URL: "tls://nats-1:4222,tls://nats-2:4222", Creds: "/run/secrets/nats.nk", CA: "/run/secrets/ca.pem",
			Cert: "/run/secrets/client.pem", Key: "/run/secrets/client-key.pem"},
		Replicas: 3, UsagePartitions: 16, LeaseTTL: auditor.DefaultLeaseTTL, TrustAnchor: "/run/secrets/trust-anchor.pub", Store: auditor.StoreClickHouse, ChDBPath: "/data/chdb", Database: "audit",
		ClickHouse: auditor.ClickHouseConfig{Addr: "clickhouse:8443", User: "cordon", PasswordFile: "/run/secrets/ch-password",
			AnalystUser: "cordon_analyst", AnalystPasswordFile: "/run/secrets/ch-analyst-password", TLS: true, CAFile: "/run/secrets/ca.pem"},
		RetentionDays: 30, SQLTimeout: 30 * time.Second, SQLMaxRows: 500, SQLMaxMemoryMiB: 256, PolicyFile: "/etc/cordon/policy.yaml",
		StateDir: "/var/lib/cordon", BatchSize: 5000, BatchWait: 50 * time.Millisecond, AnomalyWait: 250 * time.Millisecond, ShareWait: 5 * time.Minute, Writers: 4, Source: "auditor/a", MetricsListen: "127.0.0.1:9090",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestConfigValidate: every mistake names its flag and is a configuration
// mistake; what a program sets instead of flags (Backend) needs no store
// flags.
func TestConfigValidate(t *testing.T) {
	clearEnv(t)
	cases := []struct {
		name string
		args []string
		set  func(*auditor.Config)
		want string
	}{
		{name: "defaults"},
		{name: "clickhouse", args: []string{"--store", "clickhouse", "--clickhouse-addr", "ch.internal:8443", "--clickhouse-tls"}},
		{name: "a program's store", args: []string{"--store", "postgres"}, set: func(c *auditor.Config) {
			c.Backend = func(context.Context) (store.Backend, error) { return nil, errors.New("unused") }
		}},
		{name: "bad store", args: []string{"--store", "postgres"}, want: `--store "postgres": want chdb or clickhouse`},
		{name: "no chdb path", args: []string{"--store", "chdb", "--chdb-path", ""}, want: "--chdb-path is empty"},
		{name: "bad addr", args: []string{"--store", "clickhouse", "--clickhouse-addr", "ch"}, want: `--clickhouse-addr "ch": want HOST:PORT`},
		{name: "bad database", args: []string{"--clickhouse-database", "a-b"}, want: "--clickhouse-database: "},
		{name: "negative retention", args: []string{"--retention-days", "-1"}, want: "--retention-days -1: want 0 (forever) or more"},
		{name: "replicas", args: []string{"--replicas", "0"}, want: "--replicas 0: want 1 to 5"},
		{name: "batch size", args: []string{"--batch-size", "0"}, want: "--batch-size 0: want 1 to 1000000"},
		{name: "writers", args: []string{"--writers", "99"}, want: "--writers 99: want 1 to 16"},
		{name: "batch wait", args: []string{"--batch-wait", "0s"}, want: "--batch-wait 0s: want a positive duration"},
		{name: "batch wait too long", args: []string{"--batch-wait", "2m"}, want: "--batch-wait 2m0s: want a positive duration up to 1m"},
		{name: "anomaly wait", args: []string{"--anomaly-wait", "-1s"}, want: "--anomaly-wait -1s: want a positive duration up to 1m"},
		{name: "share wait", args: []string{"--share-wait", "-1s"}, want: "--share-wait -1s: want a positive duration up to 1h"},
		{name: "share wait too long", args: []string{"--share-wait", "2h"}, want: "--share-wait 2h0m0s: want a positive duration up to 1h"},
		{name: "no state", args: []string{"--state", ""}, want: "--state is empty"},
		{name: "lease", args: []string{"--lease", "--instance", "aud-1", "--lease-ttl", "5s"}},
		{name: "lease and partitions", args: []string{"--lease", "--partitions", "0-3"}, want: "--lease and --partitions: choose one"},
		{name: "lease ttl fractional", args: []string{"--lease", "--lease-ttl", "1500ms"}, want: "--lease-ttl 1.5s: want whole seconds"},
		{name: "lease ttl short", args: []string{"--lease", "--lease-ttl", "0s"}, want: "--lease-ttl 0s: want whole seconds"},
		{name: "metrics", args: []string{"--metrics-listen", "nope"}, want: `--metrics-listen "nope"`},
		{name: "analyst user is the writer", args: []string{"--store", "clickhouse", "--clickhouse-user", "cordon", "--clickhouse-analyst-user", "cordon"},
			want: `--clickhouse-analyst-user "cordon" is the writer's user`},
		{name: "analyst user without a server", args: []string{"--store", "chdb", "--clickhouse-analyst-user", "ro"}, want: withChDB("--clickhouse-analyst-user is for --store clickhouse")},
		{name: "sql timeout under a second", args: []string{"--sql-timeout", "500ms"}, want: "analyst query limits: "},
		{name: "sql timeout unbounded", args: []string{"--sql-timeout", "0s"}, want: "--sql-timeout 0s: analyst queries always have a time limit"},
		{name: "sql rows", args: []string{"--sql-max-rows", "0"}, want: "--sql-max-rows 0, --sql-max-memory-mb"},
		{name: "sql memory", args: []string{"--sql-max-memory-mb", "8"}, want: "--sql-max-rows"},
		{name: "partitions within the count", args: []string{"--usage-partitions", "16", "--partitions", "8-15"}},
		{name: "partition beyond the default count", args: []string{"--partitions", "0,8"},
			want: "--partitions: partition 8 does not exist: --usage-partitions is 8 (partitions 0 to 7)"},
		{name: "partition beyond the count", args: []string{"--usage-partitions", "4", "--partitions", "2-5"},
			want: "--partitions: partition 4 does not exist: --usage-partitions is 4 (partitions 0 to 3)"},
		{name: "usage partitions of a program", set: func(c *auditor.Config) { c.UsagePartitions = 65 }, want: "--usage-partitions ($CORDON_USAGE_PARTITIONS): 65"},
		{name: "partition beyond any count", args: []string{"--partitions", "3"}, set: func(c *auditor.Config) { c.UsagePartitions, c.Partitions = 0, []int{64} },
			want: "--partitions: partition 64 does not exist: the most USAGE partitions possible is 64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseFlags(t, tc.args...)
			if tc.set != nil {
				tc.set(&c)
			}
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

// withChDB is want in a full build; in one without chDB (-tags nochdb),
// --store chdb is refused first.
func withChDB(want string) string {
	if auditor.DefaultStore != auditor.StoreCHDB {
		return "--store chdb needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb): use --store clickhouse"
	}
	return want
}

func TestConfigCheck(t *testing.T) {
	clearEnv(t)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	det := detect.DefaultConfig()
	det.OddHours.Enabled = false
	cases := []struct {
		name    string
		args    []string
		set     func(*auditor.Config)
		want    string
		wantErr string
	}{
		{name: "defaults", want: "auditor config: ok (detectors from default thresholds: new_network, odd_hours, "},
		{name: "server", args: []string{"--store", "clickhouse", "--clickhouse-addr", "ch:8443", "--clickhouse-password-file", pw, "--retention-days", "30"},
			want: "; store clickhouse at ch:8443, database cordon, retention 30 days; analyst queries: " + store.DefaultQueryTimeout.String() + ", "},
		{name: "a program's thresholds", set: func(c *auditor.Config) { c.Detectors = &det }, want: "detectors from the program: new_network, scope_probing"},
		{name: "missing password file", args: []string{"--store", "clickhouse", "--clickhouse-password-file", "/nonexistent/pw"},
			wantErr: "read ClickHouse password: open /nonexistent/pw"},
		{name: "bad policy", args: []string{"--policy", "/nonexistent/policy.yaml"}, wantErr: "nonexistent"},
		{name: "partitions", want: "; USAGE partitions: 8, this instance runs all of them; the stream's count is compared at start)"},
		{name: "static partitions", args: []string{"--usage-partitions", "16", "--partitions", "0-3,6,9-10"},
			want: "; USAGE partitions: 16, this instance runs partitions 0-3,6,9-10;"},
		{name: "leases", args: []string{"--lease"}, want: "this instance runs its share, by leases"},
		{name: "a program's partitions", set: func(c *auditor.Config) { c.UsagePartitions = 0 }, want: "USAGE partitions: the stream's count"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseFlags(t, tc.args...)
			if tc.set != nil {
				tc.set(&c)
			}
			s, err := c.Check()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, svcconfig.ErrInvalid) {
					t.Fatalf("error %v, want %q (not a flag mistake)", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(s, tc.want) {
				t.Fatalf("%q, %v; want %q", s, err, tc.want)
			}
			if strings.Contains(s, "s3cret") {
				t.Fatal("the check shows a password")
			}
		})
	}
}

// TestServiceStartAndClose: an auditor service with a program's values
// writes published usage to its store, serves its metrics, answers the
// analysts unless told not to, and stops.
func TestServiceStartAndClose(t *testing.T) {
	clearEnv(t)
	for _, noAPI := range []bool{false, true} {
		t.Run(fmt.Sprintf("analyst API %v", !noAPI), func(t *testing.T) {
			env := natstest.Run(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			db := fmt.Sprintf("service_%d", dbSeq.Add(1))
			c := auditor.Config{NATS: natsconn.Config{URL: env.Server.ClientURL()}, Database: db, StateDir: t.TempDir(), BatchWait: 20 * time.Millisecond,
				Backend: func(ctx context.Context) (store.Backend, error) {
					return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
				},
				NoAnalystAPI: noAPI, MetricsListen: "127.0.0.1:0", Log: zerolog.Nop()}
			if !noAPI {
				if _, err := auditor.Start(ctx, c); !errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), "--trust-anchor is required") {
					t.Fatalf("the analyst API started without a trust anchor: %v", err)
				}
				c.TrustAnchors = token.Anchors{env.Anchor.Public()}
			}
			s, err := auditor.Start(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 3 {
				b := usageEvent(t, i, "tok-1", "10.0.0.1", base.Add(time.Duration(i)*time.Second))
				if _, err := env.JS.Publish(ctx, events.SubjectUsagePrefix+"acme.edge-1", b); err != nil {
					t.Fatal(err)
				}
			}
			natstest.WaitFor(t, 30*time.Second, func() error {
				if n, err := s.Store().CountUsage(ctx); err != nil || n != 3 {
					return fmt.Errorf("%d rows (%v)", n, err)
				}
				return nil
			})
			// Every partition reports its checkpoint's time once it saved
			// one (within its checkpoint interval).
			natstest.WaitFor(t, 30*time.Second, func() error {
				resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
				if err != nil {
					return err
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if n := strings.Count(string(body), "\ncordon_auditor_partition_checkpoint_timestamp_seconds{partition="); n != events.DefaultUsagePartitions {
					return fmt.Errorf("%d partitions report a checkpoint time:\n%s", n, body)
				}
				return nil
			})
			_, err = env.NC.Request(auditor.SubjectCmdStatus, []byte(`{}`), 10*time.Second)
			if noAPI != errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("status request: %v (analyst API %v)", err, !noAPI)
			}
			select {
			case <-s.Done():
				t.Fatal("the auditor stopped on its own")
			default:
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.Done():
			default:
				t.Fatal("Done is open after Close")
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func TestParsePartitions(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  string
	}{
		{"0,1,2-3", []int{0, 1, 2, 3}, ""},
		{" 4-7 , 1 ,1", []int{1, 4, 5, 6, 7}, ""},
		{"63", []int{63}, ""},
		{"64", nil, "is not a partition"},
		{"3-1", nil, "is not a partition"},
		{"-1", nil, "is not a partition"},
		{"a", nil, "is not a partition"},
		{",", nil, "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := auditor.ParsePartitions(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("%v, want an error saying %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("%v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPartitionBounds(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.MaxTenants = 3
	got := auditor.PartitionBounds(cfg, 8)
	if got.MaxTokens != cfg.MaxTokens/8 || got.MaxHolders != cfg.MaxHolders/8 || got.MaxTenants != 1 || got.MaxSources != cfg.MaxSources/8 {
		t.Fatalf("bounds for 8 partitions: %+v", got)
	}
	if one := auditor.PartitionBounds(cfg, 1); one.MaxTokens != cfg.MaxTokens {
		t.Fatal("one partition changed the bounds")
	}
}

func TestPartitionsFlag(t *testing.T) {
	var c auditor.Config
	fs := flag.NewFlagSet("auditor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--partitions", "0,2-3"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Partitions, []int{0, 2, 3}) {
		t.Fatalf("partitions %v", c.Partitions)
	}
	if err := fs.Parse([]string{"--partitions", "9-2"}); err == nil || !strings.Contains(err.Error(), "is not a partition") {
		t.Fatalf("a bad list: %v", err)
	}
}

// TestStartRefusesAnotherPartitionCount: an auditor refuses to start,
// before it opens its store, when its --usage-partitions is not the
// stream's (the stream is never changed) or its static --partitions list
// names a partition the stream does not have (it would never be read).
func TestStartRefusesAnotherPartitionCount(t *testing.T) {
	clearEnv(t)
	env := natstest.Run(t) // USAGE with events.DefaultUsagePartitions
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		set  func(*auditor.Config)
		want []string
		is   error
	}{
		{name: "another count", set: func(c *auditor.Config) { c.UsagePartitions = 16 },
			want: []string{"has 8 partitions", "--usage-partitions 16;", "pass --usage-partitions 8"}, is: natsconn.ErrUsagePartitions},
		{name: "a partition the stream lacks", set: func(c *auditor.Config) { c.Partitions = []int{6, 7, 8} },
			want: []string{"--partitions: partition 8 does not exist: the USAGE stream has 8 (partitions 0 to 7)"}},
		{name: "a partition the stream lacks, count given", set: func(c *auditor.Config) { c.UsagePartitions, c.Partitions = 8, []int{9} },
			want: []string{"--partitions: partition 9 does not exist: --usage-partitions is 8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := auditor.Config{NATS: natsconn.Config{URL: env.Server.ClientURL()}, StateDir: t.TempDir(), NoAnalystAPI: true,
				Backend: func(context.Context) (store.Backend, error) {
					t.Error("the store was opened")
					return nil, errors.New("unused")
				}, Log: zerolog.Nop()}
			tc.set(&c)
			s, err := auditor.Start(ctx, c)
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !errors.Is(err, svcconfig.ErrInvalid) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("error %v is not a configuration mistake (%v)", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if p, err := natsconn.UsagePartitions(ctx, env.JS); err != nil || p != events.DefaultUsagePartitions {
		t.Fatalf("the stream has %d partitions (%v) after the refusals", p, err)
	}
}
