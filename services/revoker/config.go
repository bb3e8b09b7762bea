package revoker

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

// Config is everything the revoker service runs with: what `cordon
// revoker` fills from its flags (RegisterFlags) and what an embedding
// program (cordon up, the harnesses) sets as values. Start fills the zero
// values that have a default.
type Config struct {
	// NATS reaches JetStream with the revoker's identity (default name
	// "cordon-revoker").
	NATS natsconn.Config
	// Replicas of the streams and buckets created when missing (default 1).
	Replicas int
	// UsagePartitions is the USAGE stream's partition count (flag
	// --usage-partitions, default events.DefaultUsagePartitions): the count
	// a missing stream is created with; an existing stream with another
	// count is refused at start (natsconn.CheckUsagePartitions). 0 (a
	// program's zero value) accepts the stream's.
	UsagePartitions int
	// TrustAnchor is the issuer's trust anchor (a file or the key's text),
	// which endorses the keys that authenticate cordon.cmd.revoke callers;
	// TrustAnchors, when set, are used instead. One of them is required.
	TrustAnchor  string
	TrustAnchors token.Anchors
	// PolicyFile's response: section is the response policy, and its
	// holders bound the token life (MaxTokenTTL's default); Response, when
	// set, is used instead. Neither: response.Default().
	PolicyFile string
	Response   *response.Policy
	// MaxTokenTTL is the longest token life: how far back the token index
	// replays the ledger and how long holder-, key- and tenant-wide rules
	// live. 0: from the policy (its largest max_ttl, at least 24h).
	MaxTokenTTL time.Duration
	// AlertWebhook (Alertmanager format), SlackWebhook and PagerDutyKey
	// (with PagerDutyURL) receive on-call alerts; ExternalURL is the link
	// back to Cordon they show. Sinks are more receivers.
	AlertWebhook, SlackWebhook, PagerDutyKey, PagerDutyURL, ExternalURL string
	Sinks                                                               []alert.Sink
	// Alerts tunes alert delivery (retries, back-off, bounds).
	Alerts alert.Options
	// DryRun records what would be revoked and revokes nothing,
	// whatever the policy says.
	DryRun bool
	// Source names this instance in events (default revoker/<hostname>).
	Source string
	// MetricsListen, when set, serves /metrics and /healthz there.
	MetricsListen string
	// HeartbeatInterval is how often the denylist broadcast's heartbeat
	// goes out (0: DefaultHeartbeatInterval, 250ms).
	HeartbeatInterval time.Duration
	// LedgerWait is how long a revocation waits for JetStream before it
	// replies "pending" (0: DefaultLedgerWait, 2s).
	LedgerWait time.Duration
	// DataDir, when set, keeps the journal of pending revocations there.
	DataDir string
	// SSF is Shared Signals (--ssf-* flags, ssfconfig.go).
	SSF SSFConfig
	// Log receives the revoker's logs.
	Log zerolog.Logger
}

// RegisterFlags declares the flags of `cordon revoker` into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.NATS.RegisterFlags(fs, natsconn.RoleIdentity(natsauth.RoleRevoker))
	svcconfig.TrustAnchorFlag(fs, &c.TrustAnchor, svcconfig.TrustAnchorHelp)
	fs.StringVar(&c.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file; its response: section is the response policy ($CORDON_POLICY)")
	fs.StringVar(&c.AlertWebhook, "alert-webhook", os.Getenv("CORDON_ALERT_WEBHOOK"), "Alertmanager-format webhook receiver URL ($CORDON_ALERT_WEBHOOK)")
	fs.StringVar(&c.SlackWebhook, "slack-webhook", os.Getenv("CORDON_SLACK_WEBHOOK"), "Slack incoming webhook URL ($CORDON_SLACK_WEBHOOK)")
	fs.StringVar(&c.PagerDutyKey, "pagerduty-key", os.Getenv("CORDON_PAGERDUTY_KEY"), "PagerDuty Events API v2 routing key ($CORDON_PAGERDUTY_KEY)")
	fs.StringVar(&c.PagerDutyURL, "pagerduty-url", svcconfig.Getenv("CORDON_PAGERDUTY_URL", alert.PagerDutyURL), "PagerDuty events endpoint")
	fs.StringVar(&c.ExternalURL, "external-url", "", "link back to Cordon shown in alerts")
	fs.DurationVar(&c.MaxTokenTTL, "max-token-ttl", 0, "longest token life: how far back the revoker indexes the ledger and how long holder-, key- and tenant-wide rules last (default: the longest life the policy allows any token, the built-in 90-day admin ceiling included)")
	fs.StringVar(&c.Source, "source", "", "instance name recorded in events (default revoker/<hostname>)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	svcconfig.UsagePartitionsFlag(fs, &c.UsagePartitions)
	fs.BoolVar(&c.DryRun, "dry-run", false, "record what would be revoked, revoke nothing (overrides the policy)")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", DefaultHeartbeatInterval, "interval of the denylist broadcast's heartbeat, which tells enforcers how far the denylist has got")
	fs.DurationVar(&c.LedgerWait, "ledger-wait", DefaultLedgerWait, "how long a revocation waits for JetStream to accept its ledger event and denylist entry before replying \"pending\" (broadcast to enforcers, written when JetStream accepts it)")
	fs.StringVar(&c.DataDir, "data-dir", os.Getenv("CORDON_REVOKER_DATA"), "directory of the journal of pending revocations, replayed at start (none when empty) ($CORDON_REVOKER_DATA)")
	c.SSF.RegisterFlags(fs)
}

// withDefaults fills the zero values that have a default.
func (c Config) withDefaults() Config {
	if c.NATS.Name == "" {
		c.NATS.Name = "cordon-revoker"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Source == "" {
		c.Source = svcconfig.DefaultSource("revoker")
	}
	return c
}

// Validate checks the configuration as given, without I/O; its errors
// name the flag and match svcconfig.ErrInvalid. Alert URLs and keys are
// never quoted.
func (c *Config) Validate() error {
	if c.MaxTokenTTL < 0 {
		return svcconfig.Invalidf("--max-token-ttl %s is negative", c.MaxTokenTTL)
	}
	if c.HeartbeatInterval != 0 && (c.HeartbeatInterval < 10*time.Millisecond || c.HeartbeatInterval > time.Minute) {
		return svcconfig.Invalidf("--heartbeat %s: want 10ms to 1m", c.HeartbeatInterval)
	}
	if c.LedgerWait < 0 || c.LedgerWait > 10*time.Minute {
		return svcconfig.Invalidf("--ledger-wait %s: want 0 (default %s) to 10m", c.LedgerWait, DefaultLedgerWait)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return svcconfig.Invalidf("--replicas %d: want 1 to 5", c.Replicas)
	}
	if err := svcconfig.CheckUsagePartitions(c.UsagePartitions); err != nil {
		return err
	}
	if err := svcconfig.CheckListen("metrics-listen", c.MetricsListen); err != nil {
		return err
	}
	if err := c.SSF.validate(c.DataDir); err != nil {
		return err
	}
	_, err := c.sinks()
	return err
}

// sinks builds the alert sinks the configuration names, then Sinks.
// Errors never quote URLs or keys.
func (c *Config) sinks() ([]alert.Sink, error) {
	var sinks []alert.Sink
	if c.AlertWebhook != "" {
		s, err := alert.NewWebhook(alert.WebhookConfig{URL: c.AlertWebhook, ExternalURL: c.ExternalURL})
		if err != nil {
			return nil, svcconfig.Invalidf("--alert-webhook: %v", err)
		}
		sinks = append(sinks, s)
	}
	if c.SlackWebhook != "" {
		s, err := alert.NewSlack(alert.SlackConfig{URL: c.SlackWebhook})
		if err != nil {
			return nil, svcconfig.Invalidf("--slack-webhook: %v", err)
		}
		sinks = append(sinks, s)
	}
	if c.PagerDutyKey != "" {
		s, err := alert.NewPagerDuty(alert.PagerDutyConfig{RoutingKey: c.PagerDutyKey, URL: c.PagerDutyURL, ClientURL: c.ExternalURL})
		if err != nil {
			return nil, svcconfig.Invalidf("--pagerduty-key: %v", err)
		}
		sinks = append(sinks, s)
	}
	return append(sinks, c.Sinks...), nil
}

// Check loads the response policy and says what the revoker would run
// with: what `cordon revoker --check-config` prints.
func (c *Config) Check() (string, error) {
	resp, maxTTL, sinks, err := c.load()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("response policy %s: ok (%s; max token ttl %s; %d alert sinks)", resp.File, resp, maxTTL, len(sinks)), nil
}

// load reads the response policy and the token life window (unless
// given) and builds the alert sinks.
func (c *Config) load() (*response.Policy, time.Duration, []alert.Sink, error) {
	resp, maxTTL := c.Response, c.MaxTokenTTL
	if resp == nil {
		r, life, err := loadResponsePolicy(c.PolicyFile)
		if err != nil {
			return nil, 0, nil, err
		}
		resp = r
		if maxTTL == 0 {
			maxTTL = life
		}
	}
	if c.DryRun && !resp.DryRun {
		dry := *resp
		dry.DryRun = true
		resp = &dry
	}
	sinks, err := c.sinks()
	if err != nil {
		return nil, 0, nil, err
	}
	return resp, maxTTL, sinks, nil
}

// loadResponsePolicy reads the response policy and the longest token life
// from the policy file; no file means the default response policy.
func loadResponsePolicy(path string) (*response.Policy, time.Duration, error) {
	if path == "" {
		return response.Default(), (*policy.Policy)(nil).MaxTokenLife(), nil
	}
	pol, err := policy.Load(path)
	if err != nil {
		return nil, 0, err
	}
	resp, err := response.Decode(pol.File, pol.Response)
	if err != nil {
		return nil, 0, err
	}
	return resp, pol.MaxTokenLife(), nil
}
