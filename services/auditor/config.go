package auditor

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

// Stores the auditor writes to (Config.Store).
const (
	// StoreCHDB is the embedded ClickHouse engine (chDB), in ChDBPath.
	StoreCHDB = "chdb"
	// StoreClickHouse is a ClickHouse server (Config.ClickHouse).
	StoreClickHouse = "clickhouse"
)

// Config is everything the auditor service runs with: what `cordon
// auditor` fills from its flags (RegisterFlags) and what an embedding
// program (cordon up, replay, the fault harness) sets as values. Start
// fills the zero values that have a default.
type Config struct {
	// NATS reaches JetStream with the auditor's identity (default name
	// "cordon-auditor").
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
	// which endorses the keys that authenticate analysts; TrustAnchors,
	// when set, are used instead. One of them is required unless
	// NoAnalystAPI.
	TrustAnchor  string
	TrustAnchors token.Anchors
	// NoAnalystAPI leaves out the analysts' API (cordon sql, anomalies,
	// report over NATS): a private pipeline (replay, a fault child) has no
	// analysts.
	NoAnalystAPI bool

	// Store is StoreCHDB or StoreClickHouse (default DefaultStore).
	Store string
	// ChDBPath is chDB's data directory (StoreCHDB; default .cordon/chdb).
	// chDB holds one path per process: a program that already opened chDB
	// elsewhere passes that path, and Database tells its tables apart.
	ChDBPath string
	// Database holds Cordon's tables (default store.DefaultDatabase;
	// created if missing).
	Database string
	// ClickHouse is the server (StoreClickHouse).
	ClickHouse ClickHouseConfig
	// Backend, when set, opens the store's engine instead of Store: a
	// program holding its own chDB session passes one on it.
	Backend func(context.Context) (store.Backend, error)
	// RetentionDays is how long usage events and anomalies are kept (0:
	// forever).
	RetentionDays int
	// SQLTimeout, SQLMaxRows and SQLMaxMemoryMiB bound an analyst's query
	// (defaults: the store's).
	SQLTimeout      time.Duration
	SQLMaxRows      int
	SQLMaxMemoryMiB int

	// PolicyFile's detectors: section sets the thresholds; Detectors, when
	// set, is used instead. Neither: detect.DefaultConfig().
	PolicyFile string
	Detectors  *detect.Config
	// StateDir holds the partition checkpoints and insert intents
	// (default .cordon/auditor).
	StateDir string
	// Partitions lists the USAGE partitions this instance runs (empty:
	// all; flag --partitions 0,1,4-7). Instances sharing a stream must own
	// disjoint sets that together cover every partition.
	Partitions []int
	// Lease shares the USAGE partitions among every auditor run with it
	// (flag --lease): each instance takes its share through leases in the
	// KV bucket auditor-leases and takes over the partitions of an
	// instance that stops or dies once their leases expire; checkpoints
	// and insert intents then live in JetStream (auditor-state,
	// auditor-checkpoints) so that any instance can resume any partition.
	Lease bool
	// Instance names this instance among the lease holders (default the
	// host name and process id).
	Instance string
	// LeaseTTL is how long a partition stays with an instance that
	// stopped renewing it (default DefaultLeaseTTL, whole seconds).
	LeaseTTL time.Duration

	// BatchSize, BatchWait, AnomalyWait, Writers and SeparateInserts
	// tune the writes (defaults DefaultBatchSize, DefaultBatchWait,
	// DefaultAnomalyWait, DefaultWriters, combined inserts); Durable,
	// AckWait and CheckpointEvery the consumers and the checkpoint (see
	// Options).
	BatchSize       int
	BatchWait       time.Duration
	AnomalyWait     time.Duration
	Writers         int
	SeparateInserts bool
	Durable         string
	AckWait         time.Duration
	CheckpointEvery time.Duration
	// ShareWait bounds how long a partition waits for another to read
	// far enough for the facts they share to be final (default
	// DefaultShareWait; knowledge.go).
	ShareWait time.Duration

	// Source names this instance in the events it emits (default
	// auditor/<hostname>).
	Source string
	// MetricsListen, when set, serves /metrics and /healthz there.
	MetricsListen string
	// Log receives the auditor's logs.
	Log zerolog.Logger
}

// ClickHouseConfig is how the auditor reaches a ClickHouse server.
type ClickHouseConfig struct {
	// Addr is host:port of the HTTP interface (default localhost:8123).
	Addr string
	// User (default "default") writes; its password is in PasswordFile.
	User, PasswordFile string
	// AnalystUser, when set, is a separate read-only user that runs the
	// analysts' queries; its password is in AnalystPasswordFile.
	AnalystUser, AnalystPasswordFile string
	// TLS speaks HTTPS, trusting the CAs in CAFile (default: the system
	// pool).
	TLS    bool
	CAFile string
}

// RegisterFlags declares the flags of `cordon auditor` into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.NATS.RegisterFlags(fs, natsconn.RoleIdentity(natsauth.RoleAuditor))
	svcconfig.TrustAnchorFlag(fs, &c.TrustAnchor, "the issuer's trust anchor, which endorses the keys that authenticate analysts ($CORDON_TRUST_ANCHOR)")
	fs.StringVar(&c.Store, "store", DefaultStore, "analytical store: chdb (embedded ClickHouse engine) or clickhouse (a server)")
	fs.StringVar(&c.ChDBPath, "chdb-path", defaultChDBPath, "chDB data directory (--store chdb)")
	fs.StringVar(&c.ClickHouse.Addr, "clickhouse-addr", svcconfig.Getenv("CORDON_CLICKHOUSE_ADDR", defaultClickHouseAddr), "ClickHouse HTTP interface host:port (--store clickhouse)")
	fs.StringVar(&c.Database, "clickhouse-database", store.DefaultDatabase, "database of Cordon's tables (created if missing)")
	fs.StringVar(&c.ClickHouse.User, "clickhouse-user", svcconfig.Getenv("CORDON_CLICKHOUSE_USER", defaultClickHouseUser), "ClickHouse user")
	fs.StringVar(&c.ClickHouse.PasswordFile, "clickhouse-password-file", os.Getenv("CORDON_CLICKHOUSE_PASSWORD_FILE"), "file holding the ClickHouse password")
	fs.StringVar(&c.ClickHouse.AnalystUser, "clickhouse-analyst-user", os.Getenv("CORDON_CLICKHOUSE_ANALYST_USER"), "read-only ClickHouse user that runs analysts' queries (cordon sql); its profile should carry the limits (deploy/compose/clickhouse/analyst.xml)")
	fs.StringVar(&c.ClickHouse.AnalystPasswordFile, "clickhouse-analyst-password-file", os.Getenv("CORDON_CLICKHOUSE_ANALYST_PASSWORD_FILE"), "file holding the analyst user's ClickHouse password")
	fs.DurationVar(&c.SQLTimeout, "sql-timeout", store.DefaultQueryTimeout, "longest an analyst query (cordon sql) runs before the engine cancels it (1s to 1h; with chDB it holds ingestion meanwhile)")
	fs.IntVar(&c.SQLMaxRows, "sql-max-rows", store.DefaultMaxResultRows, "most rows an analyst query may return (the query fails beyond)")
	fs.IntVar(&c.SQLMaxMemoryMiB, "sql-max-memory-mb", store.DefaultMaxQueryMemory>>20, "most memory an analyst query may use, in MiB")
	fs.BoolVar(&c.ClickHouse.TLS, "clickhouse-tls", false, "connect to ClickHouse over HTTPS")
	fs.StringVar(&c.ClickHouse.CAFile, "clickhouse-ca-file", "", "PEM bundle of the CAs to trust for ClickHouse TLS (default: the system pool)")
	fs.StringVar(&c.StateDir, "state", defaultStateDir, "directory of the partition checkpoints and insert intents")
	fs.Func("partitions", "USAGE partitions this instance runs, e.g. 0,1,4-7 (default: all)", func(v string) error {
		ps, err := ParsePartitions(v)
		if err != nil {
			return err
		}
		c.Partitions = ps
		return nil
	})
	fs.BoolVar(&c.Lease, "lease", false, "share the USAGE partitions with the other auditors run with --lease (leases in NATS; checkpoints in JetStream); instead of --partitions")
	fs.StringVar(&c.Instance, "instance", "", "this instance's name among the lease holders (default host name and process id)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", DefaultLeaseTTL, "how long the partitions of an auditor that stopped renewing wait before another takes them over (whole seconds)")
	fs.StringVar(&c.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file; its detectors: section sets the thresholds ($CORDON_POLICY; default thresholds without)")
	fs.IntVar(&c.RetentionDays, "retention-days", 0, "days usage events and anomalies are kept in ClickHouse (0: forever)")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the streams and buckets created when missing")
	svcconfig.UsagePartitionsFlag(fs, &c.UsagePartitions)
	fs.IntVar(&c.BatchSize, "batch-size", DefaultBatchSize, "most rows of one insert (a partition's group closes at the message that reaches it)")
	fs.DurationVar(&c.BatchWait, "batch-wait", DefaultBatchWait, "how long a partition's usage insert group stays open, on the partition's beat (a first group after a quiet spell: half to 1.5 times this); longer: fewer, larger inserts, less CPU per row, rows reach ClickHouse later")
	fs.DurationVar(&c.ShareWait, "share-wait", DefaultShareWait, "longest a partition's detectors wait for another partition that lags a day of event time behind, before judging without what it learnt (networks of workloads, tenants' address spaces)")
	fs.DurationVar(&c.AnomalyWait, "anomaly-wait", DefaultAnomalyWait, "longest an anomaly or a token ledger event waits to be written to ClickHouse (anomalies are published on NATS at once)")
	fs.IntVar(&c.Writers, "writers", DefaultWriters, "inserts written concurrently over every partition")
	fs.BoolVar(&c.SeparateInserts, "separate-inserts", false, "write each partition's usage groups and anomalies in inserts of their own, the groups on beats spread across --batch-wait (default: the groups the partitions close together go in one insert, and so do their anomalies, which costs ClickHouse less per row)")
	fs.StringVar(&c.Source, "source", "", "instance name recorded in the events it emits (default auditor/<hostname>)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
}

// Defaults of the store and state flags.
var (
	defaultChDBPath = filepath.Join(svcconfig.DefaultDataDir, "chdb")
	defaultStateDir = filepath.Join(svcconfig.DefaultDataDir, "auditor")
)

const (
	defaultClickHouseAddr = "localhost:8123"
	defaultClickHouseUser = "default"
)

// withDefaults fills the zero values that have a default.
func (c Config) withDefaults() Config {
	if c.NATS.Name == "" {
		c.NATS.Name = "cordon-auditor"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Store == "" {
		c.Store = DefaultStore
	}
	if c.ChDBPath == "" {
		c.ChDBPath = defaultChDBPath
	}
	if c.Database == "" {
		c.Database = store.DefaultDatabase
	}
	if c.ClickHouse.Addr == "" {
		c.ClickHouse.Addr = defaultClickHouseAddr
	}
	if c.ClickHouse.User == "" {
		c.ClickHouse.User = defaultClickHouseUser
	}
	if c.SQLTimeout == 0 {
		c.SQLTimeout = store.DefaultQueryTimeout
	}
	if c.SQLMaxRows == 0 {
		c.SQLMaxRows = store.DefaultMaxResultRows
	}
	if c.SQLMaxMemoryMiB == 0 {
		c.SQLMaxMemoryMiB = store.DefaultMaxQueryMemory >> 20
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.AnomalyWait == 0 {
		c.AnomalyWait = DefaultAnomalyWait
	}
	if c.ShareWait == 0 {
		c.ShareWait = DefaultShareWait
	}
	if c.Writers == 0 {
		c.Writers = DefaultWriters
	}
	if c.Source == "" {
		c.Source = svcconfig.DefaultSource("auditor")
	}
	return c
}

// Validate checks the configuration as given, without I/O; its errors
// name the flag and match svcconfig.ErrInvalid.
func (c *Config) Validate() error {
	switch {
	case c.Backend != nil:
	case c.Store == StoreCHDB:
		if c.ChDBPath == "" {
			return svcconfig.Invalidf("--chdb-path is empty")
		}
		if !haveChDB {
			return svcconfig.Invalidf("--store chdb needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb): use --store clickhouse")
		}
	case c.Store == StoreClickHouse:
		if _, _, err := net.SplitHostPort(c.ClickHouse.Addr); err != nil {
			return svcconfig.Invalidf("--clickhouse-addr %q: want HOST:PORT of the HTTP interface (8123, or 8443 with TLS)", c.ClickHouse.Addr)
		}
	default:
		return svcconfig.Invalidf("--store %q: want chdb or clickhouse", c.Store)
	}
	if err := store.ValidateDatabase(c.Database); err != nil {
		return svcconfig.Invalidf("--clickhouse-database: %v", err)
	}
	ch := c.ClickHouse
	if ch.AnalystUser != "" && c.Store != StoreClickHouse {
		return svcconfig.Invalidf("--clickhouse-analyst-user is for --store clickhouse")
	}
	if c.SQLTimeout <= 0 {
		return svcconfig.Invalidf("--sql-timeout %s: analyst queries always have a time limit (1s to 1h)", c.SQLTimeout)
	}
	if ch.AnalystUser != "" && ch.AnalystUser == ch.User {
		return svcconfig.Invalidf("--clickhouse-analyst-user %q is the writer's user: analysts need a separate, read-only user", ch.AnalystUser)
	}
	if c.SQLMaxRows < 1 || c.SQLMaxMemoryMiB < 16 {
		return svcconfig.Invalidf("--sql-max-rows %d, --sql-max-memory-mb %d: want at least 1 row and 16 MiB", c.SQLMaxRows, c.SQLMaxMemoryMiB)
	}
	if _, err := c.storeOptions().QuerySettings(); err != nil {
		return svcconfig.Invalidf("analyst query limits: %v", err)
	}
	switch {
	case c.RetentionDays < 0:
		return svcconfig.Invalidf("--retention-days %d: want 0 (forever) or more", c.RetentionDays)
	case c.Replicas < 1 || c.Replicas > 5:
		return svcconfig.Invalidf("--replicas %d: want 1 to 5", c.Replicas)
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return svcconfig.Invalidf("--batch-size %d: want 1 to 1000000", c.BatchSize)
	case c.BatchWait <= 0 || c.BatchWait > time.Minute:
		return svcconfig.Invalidf("--batch-wait %s: want a positive duration up to 1m", c.BatchWait)
	case c.AnomalyWait <= 0 || c.AnomalyWait > time.Minute:
		return svcconfig.Invalidf("--anomaly-wait %s: want a positive duration up to 1m", c.AnomalyWait)
	case c.ShareWait <= 0 || c.ShareWait > time.Hour:
		return svcconfig.Invalidf("--share-wait %s: want a positive duration up to 1h", c.ShareWait)
	case c.Writers < 1 || c.Writers > 16:
		return svcconfig.Invalidf("--writers %d: want 1 to 16", c.Writers)
	case c.StateDir == "":
		return svcconfig.Invalidf("--state is empty")
	}
	if c.Lease && len(c.Partitions) > 0 {
		return svcconfig.Invalidf("--lease and --partitions: choose one (leases share every partition among the instances)")
	}
	if c.Lease && (c.LeaseTTL < MinLeaseTTL || c.LeaseTTL%time.Second != 0) {
		return svcconfig.Invalidf("--lease-ttl %v: want whole seconds, at least %v", c.LeaseTTL, MinLeaseTTL)
	}
	if err := svcconfig.CheckUsagePartitions(c.UsagePartitions); err != nil {
		return err
	}
	if err := c.checkPartitions(c.UsagePartitions, "--usage-partitions is"); err != nil {
		return err
	}
	return svcconfig.CheckListen("metrics-listen", c.MetricsListen)
}

// checkPartitions checks the static partition list (--partitions) against
// parts, the USAGE partition count that whose says ("--usage-partitions
// is", "the USAGE stream has"); 0 (not configured) checks against the
// largest count possible.
func (c *Config) checkPartitions(parts int, whose string) error {
	if parts <= 0 {
		parts, whose = events.MaxUsagePartitions, "the most USAGE partitions possible is"
	}
	for _, p := range c.Partitions {
		if p < 0 || p >= parts {
			return svcconfig.Invalidf("--partitions: partition %d does not exist: %s %d (partitions 0 to %d); "+
				"list partitions below the count, or leave --partitions out to run all of them", p, whose, parts, parts-1)
		}
	}
	return nil
}

// ParsePartitions parses a partition list: comma-separated numbers and
// ranges (0,1,4-7), sorted and without repeats in the result.
func ParsePartitions(v string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 0 || b < a || b >= events.MaxUsagePartitions {
			return nil, fmt.Errorf("partition list %q: %q is not a partition (0 to %d) or a range lo-hi", v, part, events.MaxUsagePartitions-1)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("partition list %q is empty", v)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// storeOptions are the store options the configuration gives.
func (c *Config) storeOptions() store.Options {
	return store.Options{RetentionDays: c.RetentionDays, QueryTimeout: c.SQLTimeout, MaxResultRows: c.SQLMaxRows,
		MaxQueryMemory: int64(c.SQLMaxMemoryMiB) << 20, Logger: c.Log,
		// Every usage row is written by a partition runner under a
		// de-duplication token (InsertUsageOnce): no FINAL needed.
		TokenInserts: true}
}

// Check loads the detector thresholds and the ClickHouse passwords and
// says what the auditor would run with: what `cordon auditor
// --check-config` prints.
func (c *Config) Check() (string, error) {
	l, err := c.load()
	if err != nil {
		return "", err
	}
	where := "chdb at " + c.ChDBPath
	switch {
	case c.Backend != nil:
		where = "given by the program"
	case c.Store == StoreClickHouse:
		where = "clickhouse at " + c.ClickHouse.Addr
	}
	src := "default thresholds"
	switch {
	case c.Detectors != nil:
		src = "the program"
	case c.PolicyFile != "":
		src = "policy " + c.PolicyFile
	}
	return fmt.Sprintf("auditor config: ok (detectors from %s: %s; store %s, database %s, retention %s; analyst queries: %s, %d MiB, %d rows; %s)",
		src, strings.Join(enabledDetectors(l.detectors), ", "), where, c.Database, retentionText(c.RetentionDays), c.SQLTimeout, c.SQLMaxMemoryMiB, c.SQLMaxRows,
		c.partitionsText()), nil
}

// partitionsText says which USAGE partitions the auditor runs, for
// --check-config. The check needs no NATS: the stream's own count is
// compared with --usage-partitions and --partitions when the auditor starts.
func (c *Config) partitionsText() string {
	parts := "the stream's count"
	if c.UsagePartitions > 0 {
		parts = strconv.Itoa(c.UsagePartitions)
	}
	run := "all of them"
	switch {
	case c.Lease:
		run = "its share, by leases with the other --lease instances"
	case len(c.Partitions) > 0:
		run = "partitions " + FormatPartitions(c.Partitions)
	}
	return fmt.Sprintf("USAGE partitions: %s, this instance runs %s; the stream's count is compared at start", parts, run)
}

// FormatPartitions writes a sorted partition list the way ParsePartitions
// reads it, with ranges (0-3,6).
func FormatPartitions(ps []int) string {
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ps[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ps[j]))
		}
		i = j + 1
	}
	return b.String()
}

// loaded is what the files of a configuration hold.
type loaded struct {
	detectors                 detect.Config
	password, analystPassword string
}

// load reads the detector thresholds (unless given) and the ClickHouse
// passwords.
func (c *Config) load() (loaded, error) {
	var l loaded
	if c.Detectors != nil {
		l.detectors = *c.Detectors
	} else {
		cfg, err := detect.LoadConfig(c.PolicyFile)
		if err != nil {
			return l, err
		}
		l.detectors = cfg
	}
	if c.Store != StoreClickHouse || c.Backend != nil {
		return l, nil
	}
	read := func(file, what string) (string, error) {
		if file == "" {
			return "", nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read ClickHouse %s: %w", what, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	var err error
	if l.password, err = read(c.ClickHouse.PasswordFile, "password"); err != nil {
		return l, err
	}
	if l.analystPassword, err = read(c.ClickHouse.AnalystPasswordFile, "analyst password"); err != nil {
		return l, err
	}
	return l, nil
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
