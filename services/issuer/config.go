package issuer

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// Config is everything the issuer service runs with: what `cordon issuer`
// fills from its flags (RegisterFlags) and what an embedding program
// (cordon up, the fault harness) sets as values. Start fills the zero
// values that have a default.
type Config struct {
	// NATS reaches JetStream with the issuer's identity (default name
	// "cordon-issuer").
	NATS natsconn.Config
	// Replicas of the streams and buckets created when missing (default 1).
	Replicas int
	// UsagePartitions is the USAGE stream's partition count (flag
	// --usage-partitions, default events.DefaultUsagePartitions): the count
	// a missing stream is created with; an existing stream with another
	// count is refused at start (natsconn.CheckUsagePartitions). 0 (a
	// program's zero value) accepts the stream's.
	UsagePartitions int
	// DataDir holds the signing keys (keys/), the bootstrap admin token
	// (admin.token) and the trust anchor's public half (default .cordon).
	DataDir string
	// PolicyFile is the policy (the holders' ceilings); Policy, when set,
	// is used instead. One of them is required.
	PolicyFile string
	Policy     *policy.Policy
	// Listen is the HTTP API's address; empty serves no HTTP API.
	Listen string
	// TLSCert and TLSKey make the HTTP API serve HTTPS; TLS, when set, is
	// used instead.
	TLSCert, TLSKey string
	TLS             *tls.Config
	// MetricsListen, when set, serves /metrics and /healthz on this
	// address, apart from the API.
	MetricsListen string
	// Source names this instance in events (default issuer/<hostname>).
	Source string
	// AdminTTL is the bootstrap admin token's lifetime in the policy's
	// duration syntax ("90d", "12h"; default DefaultAdminTTL).
	AdminTTL string
	// AnchorKey is the trust anchor's private key (`cordon anchor
	// generate`); empty uses DATA/keys/anchor.key, generated on first start.
	AnchorKey string
	// Grace is the default grace period of a rotated token (default
	// DefaultGrace).
	Grace time.Duration
	// LeakGitHubKeys is GitHub's secret scanning key document (a URL or
	// a file) that verifies POST /v1/leaks/github; empty leaves that route
	// off.
	LeakGitHubKeys string
	// LeakRate and LeakBurst limit unsigned leak reports per client
	// (defaults DefaultLeakRate, DefaultLeakBurst).
	LeakRate  float64
	LeakBurst int
	// Log receives the issuer's logs.
	Log zerolog.Logger
}

// RegisterFlags declares the flags of `cordon issuer` into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.NATS.RegisterFlags(fs, natsconn.RoleIdentity(natsauth.RoleIssuer))
	fs.StringVar(&c.TLSCert, "tls-cert", os.Getenv("CORDON_TLS_CERT"), "serve the API over HTTPS with this certificate ($CORDON_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", os.Getenv("CORDON_TLS_KEY"), "private key of --tls-cert ($CORDON_TLS_KEY)")
	fs.StringVar(&c.DataDir, "data", svcconfig.DefaultDataDir, "data directory: signing keys (keys/) and the bootstrap admin token (admin.token)")
	fs.StringVar(&c.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file ($CORDON_POLICY)")
	fs.StringVar(&c.Listen, "listen", DefaultListen, "HTTP API listen address")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address, apart from the API (off when empty)")
	fs.StringVar(&c.Source, "source", "", "instance name recorded in events (default issuer/<hostname>)")
	fs.StringVar(&c.AdminTTL, "admin-ttl", "90d", "lifetime of the bootstrap admin token")
	fs.StringVar(&c.AnchorKey, "anchor-key", os.Getenv("CORDON_ANCHOR_KEY"), "trust anchor private key `file` from cordon anchor generate ($CORDON_ANCHOR_KEY; default: DATA/keys/"+AnchorFile+", generated on first start)")
	fs.DurationVar(&c.Grace, "grace", DefaultGrace, "default grace period of a rotated token")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	fs.StringVar(&c.LeakGitHubKeys, "leak-github-keys", os.Getenv("CORDON_LEAK_GITHUB_KEYS"), "`source` of GitHub's secret scanning public keys, a URL or a file (e.g. https://api.github.com/meta/public_keys/secret_scanning), that verify POST /v1/leaks/github; off when empty ($CORDON_LEAK_GITHUB_KEYS)")
	fs.Float64Var(&c.LeakRate, "leak-rate", DefaultLeakRate, "unsigned leak reports (POST /v1/leaks, cordon.cmd.report-leak) allowed per second per client address")
	fs.IntVar(&c.LeakBurst, "leak-burst", DefaultLeakBurst, "burst of unsigned leak reports per client address")
	svcconfig.UsagePartitionsFlag(fs, &c.UsagePartitions)
}

// DefaultListen is the HTTP API's address of `cordon issuer` and `cordon up`.
const DefaultListen = "127.0.0.1:7400"

// withDefaults fills the zero values that have a default.
func (c Config) withDefaults() Config {
	if c.NATS.Name == "" {
		c.NATS.Name = "cordon-issuer"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DataDir == "" {
		c.DataDir = svcconfig.DefaultDataDir
	}
	return c
}

// Validate checks the configuration as given, without I/O; its errors
// name the flag and match svcconfig.ErrInvalid.
func (c *Config) Validate() error {
	if c.Policy == nil && c.PolicyFile == "" {
		return svcconfig.Invalidf("--policy is required (or set $CORDON_POLICY)")
	}
	if _, err := c.adminTTL(); err != nil {
		return err
	}
	if c.Grace < 0 {
		return svcconfig.Invalidf("--grace %s is negative", c.Grace)
	}
	if c.LeakRate < 0 || c.LeakBurst < 0 {
		return svcconfig.Invalidf("--leak-rate %v, --leak-burst %d: want positive values (0 takes the default)", c.LeakRate, c.LeakBurst)
	}
	if c.LeakGitHubKeys != "" && !strings.HasPrefix(c.LeakGitHubKeys, "https://") && !strings.HasPrefix(c.LeakGitHubKeys, "http://") {
		if _, err := os.Stat(c.LeakGitHubKeys); err != nil {
			return svcconfig.Invalidf("--leak-github-keys %q: neither an http(s) URL nor a readable file: %v", c.LeakGitHubKeys, err)
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return svcconfig.Invalidf("--replicas %d: want 1 to 5", c.Replicas)
	}
	if err := svcconfig.CheckUsagePartitions(c.UsagePartitions); err != nil {
		return err
	}
	if err := svcconfig.CheckListen("listen", c.Listen); err != nil {
		return err
	}
	return svcconfig.CheckListen("metrics-listen", c.MetricsListen)
}

// adminTTL parses AdminTTL (0: the issuer's default).
func (c *Config) adminTTL() (time.Duration, error) {
	if c.AdminTTL == "" {
		return 0, nil
	}
	d, err := policy.ParseDuration(c.AdminTTL)
	if err != nil {
		return 0, svcconfig.Invalidf("--admin-ttl: %v", err)
	}
	if d < time.Minute {
		return 0, svcconfig.Invalidf("--admin-ttl %s is shorter than a minute", c.AdminTTL)
	}
	return d, nil
}

// Check loads the policy and the certificate and says what the issuer
// would run with: what `cordon issuer --check-config` prints.
func (c *Config) Check() (string, error) {
	pol, _, err := c.load()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("policy %s: ok (%d holders, sha256 %s)", pol.File, len(pol.Holders), pol.Digest), nil
}

// load reads the files the configuration names: the policy (unless given)
// and the TLS certificate (unless given).
func (c *Config) load() (*policy.Policy, *tls.Config, error) {
	pol := c.Policy
	if pol == nil {
		var err error
		if pol, err = policy.Load(c.PolicyFile); err != nil {
			return nil, nil, err
		}
	}
	conf := c.TLS
	if conf == nil && (c.TLSCert != "" || c.TLSKey != "") {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, nil, svcconfig.Invalidf("--tls-cert/--tls-key: %v", err)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return pol, conf, nil
}
