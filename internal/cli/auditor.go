package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chserver"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/services/auditor"
)

// Store kinds of `cordon auditor --store`.
const (
	storeCHDB       = "chdb"
	storeClickHouse = "clickhouse"
)

// auditorFlags are the options of `cordon auditor`.
type auditorFlags struct {
	nf                                               *natsFlags
	storeKind, chdbPath                              string
	chAddr, chDatabase, chUser, chPassFile, chCAFile string
	chAnalystUser, chAnalystPassFile                 string
	chTLS                                            bool
	sqlTimeout                                       time.Duration
	sqlMaxRows, sqlMaxMemoryMiB                      int
	state, policy, source, metrics                   string
	trustAnchor                                      string
	retention, replicas, batchSize, writers          int
	batchWait                                        time.Duration
	check                                            bool
}

// auditorFlagSet declares the flags of `cordon auditor` into f.
func auditorFlagSet(env *Env, f *auditorFlags) *flag.FlagSet {
	fs := newFlags(env, "auditor", "auditor --nats URL [--store chdb|clickhouse] [--chdb-path DIR | --clickhouse-addr HOST:PORT …] --state DIR [--policy FILE] [--check-config]")
	f.nf = addNATSFlags(fs, auditorIdentity)
	fs.StringVar(&f.trustAnchor, "trust-anchor", getenvDefault("CORDON_TRUST_ANCHOR", svcconfig.DefaultTrustAnchor),
		"the issuer's trust anchor, which endorses the keys that authenticate analysts ($CORDON_TRUST_ANCHOR)")
	fs.StringVar(&f.storeKind, "store", defaultStoreKind, "analytical store: chdb (embedded ClickHouse engine) or clickhouse (a server)")
	fs.StringVar(&f.chdbPath, "chdb-path", ".cordon/chdb", "chDB data directory (--store chdb)")
	fs.StringVar(&f.chAddr, "clickhouse-addr", getenvDefault("CORDON_CLICKHOUSE_ADDR", "localhost:8123"), "ClickHouse HTTP interface host:port (--store clickhouse)")
	fs.StringVar(&f.chDatabase, "clickhouse-database", store.DefaultDatabase, "database of Cordon's tables (created if missing)")
	fs.StringVar(&f.chUser, "clickhouse-user", getenvDefault("CORDON_CLICKHOUSE_USER", "default"), "ClickHouse user")
	fs.StringVar(&f.chPassFile, "clickhouse-password-file", os.Getenv("CORDON_CLICKHOUSE_PASSWORD_FILE"), "file holding the ClickHouse password")
	fs.StringVar(&f.chAnalystUser, "clickhouse-analyst-user", os.Getenv("CORDON_CLICKHOUSE_ANALYST_USER"), "read-only ClickHouse user that runs analysts' queries (cordon sql); its profile should carry the limits (deploy/compose/clickhouse/analyst.xml)")
	fs.StringVar(&f.chAnalystPassFile, "clickhouse-analyst-password-file", os.Getenv("CORDON_CLICKHOUSE_ANALYST_PASSWORD_FILE"), "file holding the analyst user's ClickHouse password")
	fs.DurationVar(&f.sqlTimeout, "sql-timeout", store.DefaultQueryTimeout, "longest an analyst query (cordon sql) runs before the engine cancels it (1s to 1h; with chDB it holds ingestion meanwhile)")
	fs.IntVar(&f.sqlMaxRows, "sql-max-rows", store.DefaultMaxResultRows, "most rows an analyst query may return (the query fails beyond)")
	fs.IntVar(&f.sqlMaxMemoryMiB, "sql-max-memory-mb", store.DefaultMaxQueryMemory>>20, "most memory an analyst query may use, in MiB")
	fs.BoolVar(&f.chTLS, "clickhouse-tls", false, "connect to ClickHouse over HTTPS")
	fs.StringVar(&f.chCAFile, "clickhouse-ca-file", "", "PEM bundle of the CAs to trust for ClickHouse TLS (default: the system pool)")
	fs.StringVar(&f.state, "state", ".cordon/auditor", "directory of the detector checkpoint")
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file; its detectors: section sets the thresholds ($CORDON_POLICY; default thresholds without)")
	fs.IntVar(&f.retention, "retention-days", 0, "days usage events and anomalies are kept in ClickHouse (0: forever)")
	fs.IntVar(&f.replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	fs.IntVar(&f.batchSize, "batch-size", auditor.DefaultBatchSize, "most events written in one insert")
	fs.DurationVar(&f.batchWait, "batch-wait", auditor.DefaultBatchWait, "longest an event waits for its batch while a writer is free")
	fs.IntVar(&f.writers, "writers", auditor.DefaultWriters, "batches written concurrently")
	fs.StringVar(&f.source, "source", "", "instance name recorded in the events it emits (default auditor/<hostname>)")
	fs.StringVar(&f.metrics, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
	fs.BoolVar(&f.check, "check-config", false, "validate the policy and flags, then exit")
	return fs
}

// validate checks the flags that need no I/O.
func (f *auditorFlags) validate() error {
	switch f.storeKind {
	case storeCHDB:
		if f.chdbPath == "" {
			return fmt.Errorf("%w: --chdb-path is empty", errUsage)
		}
		if !haveChDB {
			return fmt.Errorf("%w: --store chdb needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb): use --store clickhouse", errUsage)
		}
	case storeClickHouse:
		if _, _, err := net.SplitHostPort(f.chAddr); err != nil {
			return fmt.Errorf("%w: --clickhouse-addr %q: want HOST:PORT of the HTTP interface (8123, or 8443 with TLS)", errUsage, f.chAddr)
		}
	default:
		return fmt.Errorf("%w: --store %q: want chdb or clickhouse", errUsage, f.storeKind)
	}
	if err := store.ValidateDatabase(f.chDatabase); err != nil {
		return fmt.Errorf("%w: --clickhouse-database: %v", errUsage, err)
	}
	if f.chAnalystUser != "" && f.storeKind != storeClickHouse {
		return fmt.Errorf("%w: --clickhouse-analyst-user is for --store clickhouse", errUsage)
	}
	if f.sqlTimeout <= 0 {
		return fmt.Errorf("%w: --sql-timeout %s: analyst queries always have a time limit (1s to 1h)", errUsage, f.sqlTimeout)
	}
	if f.chAnalystUser != "" && f.chAnalystUser == f.chUser {
		return fmt.Errorf("%w: --clickhouse-analyst-user %q is the writer's user: analysts need a separate, read-only user", errUsage, f.chAnalystUser)
	}
	if f.sqlMaxRows < 1 || f.sqlMaxMemoryMiB < 16 {
		return fmt.Errorf("%w: --sql-max-rows %d, --sql-max-memory-mb %d: want at least 1 row and 16 MiB", errUsage, f.sqlMaxRows, f.sqlMaxMemoryMiB)
	}
	if _, err := f.storeOptions().QuerySettings(); err != nil {
		return fmt.Errorf("%w: analyst query limits: %v", errUsage, err)
	}
	switch {
	case f.retention < 0:
		return fmt.Errorf("%w: --retention-days %d: want 0 (forever) or more", errUsage, f.retention)
	case f.replicas < 1 || f.replicas > 5:
		return fmt.Errorf("%w: --replicas %d: want 1 to 5", errUsage, f.replicas)
	case f.batchSize < 1 || f.batchSize > 1_000_000:
		return fmt.Errorf("%w: --batch-size %d: want 1 to 1000000", errUsage, f.batchSize)
	case f.batchWait <= 0:
		return fmt.Errorf("%w: --batch-wait %s: want a positive duration", errUsage, f.batchWait)
	case f.writers < 1 || f.writers > 16:
		return fmt.Errorf("%w: --writers %d: want 1 to 16", errUsage, f.writers)
	case f.state == "":
		return fmt.Errorf("%w: --state is empty", errUsage)
	}
	if f.metrics != "" {
		if _, _, err := net.SplitHostPort(f.metrics); err != nil {
			return fmt.Errorf("%w: --metrics-listen %q: %v", errUsage, f.metrics, err)
		}
	}
	return nil
}

// storeOptions are the store options the flags give.
func (f *auditorFlags) storeOptions() store.Options {
	return store.Options{RetentionDays: f.retention, QueryTimeout: f.sqlTimeout, MaxResultRows: f.sqlMaxRows,
		MaxQueryMemory: int64(f.sqlMaxMemoryMiB) << 20}
}

// runAuditor is `cordon auditor`: the usage consumer, detectors and the
// analyst API on their own.
func runAuditor(ctx context.Context, env *Env, args []string) error {
	var f auditorFlags
	fs := auditorFlagSet(env, &f)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := f.validate(); err != nil {
		return err
	}
	cfg, err := loadDetectors(f.policy)
	if err != nil {
		return err
	}
	password, analystPassword := "", ""
	if f.storeKind == storeClickHouse && f.chPassFile != "" {
		b, err := os.ReadFile(f.chPassFile)
		if err != nil {
			return fmt.Errorf("read ClickHouse password: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	if f.storeKind == storeClickHouse && f.chAnalystPassFile != "" {
		b, err := os.ReadFile(f.chAnalystPassFile)
		if err != nil {
			return fmt.Errorf("read ClickHouse analyst password: %w", err)
		}
		analystPassword = strings.TrimSpace(string(b))
	}
	if f.check {
		where := "chdb at " + f.chdbPath
		if f.storeKind == storeClickHouse {
			where = "clickhouse at " + f.chAddr
		}
		src := "default thresholds"
		if f.policy != "" {
			src = "policy " + f.policy
		}
		fmt.Fprintf(env.Stdout, "auditor config: ok (detectors from %s: %s; store %s, database %s, retention %s; analyst queries: %s, %d MiB, %d rows)\n",
			src, strings.Join(enabledDetectors(cfg), ", "), where, f.chDatabase, retentionText(f.retention), f.sqlTimeout, f.sqlMaxMemoryMiB, f.sqlMaxRows)
		return nil
	}
	if f.source == "" {
		host, _ := os.Hostname()
		f.source = "auditor/" + strings.SplitN(host, ".", 2)[0]
	}

	nc, err := f.nf.connect("cordon-auditor")
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

	var b store.Backend
	switch f.storeKind {
	case storeCHDB:
		b, err = openChDB(ctx, f.chdbPath, f.chDatabase)
	default:
		b, err = chserver.Open(ctx, chserver.Options{Addr: f.chAddr, Database: f.chDatabase, User: f.chUser, Password: password,
			AnalystUser: f.chAnalystUser, AnalystPassword: analystPassword, TLS: f.chTLS, CAFile: f.chCAFile})
	}
	if err != nil {
		return fmt.Errorf("open %s store: %w", f.storeKind, err)
	}
	so := f.storeOptions()
	so.Logger = env.Log
	st, err := store.Open(ctx, b, so)
	if err != nil {
		b.Close()
		return err
	}
	defer st.Close()

	engine, err := detect.New(cfg)
	if err != nil {
		return err
	}
	a, err := auditor.New(auditor.Options{
		JS: js, Store: st, Detector: engine, StateDir: f.state, Source: f.source, Log: env.Log,
		BatchSize: f.batchSize, BatchWait: f.batchWait, Writers: f.writers,
	})
	if err != nil {
		return err
	}

	// The analyst API authenticates callers with the control plane's admin
	// authenticator: the issuer's keys (endorsed by its trust anchor) and
	// the denylist, replicated by NATS, and the admin tokens' ledger.
	anchors, err := trustAnchors(f.trustAnchor)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	auth, err := auditor.StartAdminAuth(sctx, js, anchors, env.Log)
	cancel()
	if err != nil {
		return err
	}
	defer auth.Close()
	qs, err := auditor.NewQueryServer(auditor.QueryOptions{NC: nc, Store: st, Auth: auth, Status: a.Stats, Log: env.Log})
	if err != nil {
		return err
	}
	if err := qs.Start(); err != nil {
		return err
	}
	defer qs.Close()

	if f.metrics != "" {
		stop, err := serveMetrics(env, f.metrics, "auditor", a.Collector())
		if err != nil {
			return err
		}
		defer stop()
	}
	env.Log.Info().Str("store", f.storeKind).Str("database", f.chDatabase).Strs("detectors", enabledDetectors(cfg)).Msg("auditor running")
	return a.Run(ctx)
}

func retentionText(days int) string {
	if days == 0 {
		return "forever"
	}
	return fmt.Sprintf("%d days", days)
}

// enabledDetectors names the detectors cfg turns on, in detect's order.
func enabledDetectors(cfg detect.Config) []string {
	on := cfg.Enabled()
	if len(on) == 0 {
		return []string{"none"}
	}
	return on
}

// loadDetectors reads the detectors: section of a policy file over the
// default thresholds (detect.LoadConfig).
func loadDetectors(path string) (detect.Config, error) { return detect.LoadConfig(path) }
