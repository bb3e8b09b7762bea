package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/services/issuer"
)

// issuerFlags are the options of `cordon issuer`.
type issuerFlags struct {
	data, policy, listen, source, adminTTL string
	anchorKey                              string
	metrics                                string
	tlsCert, tlsKey                        string
	grace                                  time.Duration
	replicas                               int
	check                                  bool
}

func runIssuer(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "issuer", "issuer --nats URL --data DIR --policy FILE [--listen ADDR] [--check-config]")
	var f issuerFlags
	nf := addNATSFlags(fs, issuerIdentity)
	fs.StringVar(&f.tlsCert, "tls-cert", os.Getenv("CORDON_TLS_CERT"), "serve the API over HTTPS with this certificate ($CORDON_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "tls-key", os.Getenv("CORDON_TLS_KEY"), "private key of --tls-cert ($CORDON_TLS_KEY)")
	fs.StringVar(&f.data, "data", ".cordon", "data directory: signing keys (keys/) and the bootstrap admin token (admin.token)")
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file ($CORDON_POLICY)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7400", "HTTP API listen address")
	fs.StringVar(&f.metrics, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address, apart from the API (off when empty)")
	fs.StringVar(&f.source, "source", "", "instance name recorded in events (default issuer/<hostname>)")
	fs.StringVar(&f.adminTTL, "admin-ttl", "90d", "lifetime of the bootstrap admin token")
	fs.StringVar(&f.anchorKey, "anchor-key", os.Getenv("CORDON_ANCHOR_KEY"), "trust anchor private key from `cordon anchor generate` ($CORDON_ANCHOR_KEY; default: DATA/keys/"+issuer.AnchorFile+", generated on first start)")
	fs.DurationVar(&f.grace, "grace", issuer.DefaultGrace, "default grace period of a rotated token")
	fs.IntVar(&f.replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	fs.BoolVar(&f.check, "check-config", false, "validate the policy and flags, then exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if f.policy == "" {
		return fmt.Errorf("%w: --policy is required (or set $CORDON_POLICY)", errUsage)
	}
	pol, err := policy.Load(f.policy)
	if err != nil {
		return err
	}
	adminTTL, err := policy.ParseDuration(f.adminTTL)
	if err != nil {
		return fmt.Errorf("%w: --admin-ttl: %v", errUsage, err)
	}
	if adminTTL < time.Minute {
		return fmt.Errorf("%w: --admin-ttl %s is shorter than a minute", errUsage, f.adminTTL)
	}
	if f.grace < 0 {
		return fmt.Errorf("%w: --grace %s is negative", errUsage, f.grace)
	}
	if f.replicas < 1 || f.replicas > 5 {
		return fmt.Errorf("%w: --replicas %d: want 1 to 5", errUsage, f.replicas)
	}
	if f.listen != "" {
		if _, _, err := net.SplitHostPort(f.listen); err != nil {
			return fmt.Errorf("%w: --listen %q: %v", errUsage, f.listen, err)
		}
	}
	if f.metrics != "" {
		if _, _, err := net.SplitHostPort(f.metrics); err != nil {
			return fmt.Errorf("%w: --metrics-listen %q: %v", errUsage, f.metrics, err)
		}
	}
	var tlsConf *tls.Config
	if f.tlsCert != "" || f.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("%w: --tls-cert/--tls-key: %v", errUsage, err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if f.check {
		fmt.Fprintf(env.Stdout, "policy %s: ok (%d holders, sha256 %s)\n", f.policy, len(pol.Holders), pol.Digest)
		return nil
	}

	nc, err := nf.connect("cordon-issuer")
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
	iss, err := issuer.New(issuer.Options{
		NC: nc, JS: js, DataDir: f.data, Policy: pol, Logger: env.Log, Source: f.source,
		Grace: f.grace, AdminTTL: adminTTL, Listen: f.listen, TLS: tlsConf, AnchorFile: f.anchorKey,
	})
	if err != nil {
		return err
	}
	if f.metrics != "" {
		stop, err := serveMetrics(env, f.metrics, "issuer", iss.Collector())
		if err != nil {
			return err
		}
		defer stop()
	}
	return iss.Run(ctx)
}
