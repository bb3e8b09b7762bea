package enforcer

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// Config is everything the enforcing proxy runs with: what `cordon
// enforce` fills from its flags (RegisterFlags) and what an embedding
// program (cordon up, the harnesses) sets as values. Start fills the zero
// values that have a default.
type Config struct {
	// Options configure the enforcer itself (pkg/enforce): its id, service
	// and environment, routes, trust anchors, trusted proxies, staleness
	// bound, caches and Log. Options.Routes and Options.TrustAnchors, when
	// set, are used instead of RoutesFile and TrustAnchor.
	enforce.Options
	// NATS reaches JetStream with the enforcer's own identity (default
	// name "cordon-enforce-<id>").
	NATS natsconn.Config
	// RoutesFile holds the service, environment and the scope of each
	// route. One of RoutesFile and Options.Routes is required.
	RoutesFile string
	// TrustAnchor is the issuer's trust anchor (a file or the key's text)
	// that endorses the signing keys. One of TrustAnchor and
	// Options.TrustAnchors is required.
	TrustAnchor string
	// Upstream is the protected service's URL (http or https).
	Upstream string
	// Listen is the proxy's address (default DefaultListen).
	Listen string
	// TLSCert and TLSKey make the proxy serve HTTPS; client certificates
	// are then requested for device binding, and verified against
	// ClientCA when set. TLS, when set, is used instead.
	TLSCert, TLSKey, ClientCA string
	TLS                       *tls.Config
	// MetricsListen, when set, serves /metrics and /healthz (503 while the
	// denylist view is stale) on this address, never the proxy's.
	MetricsListen string
	// SyncTimeout bounds the initial load of keys and denylist (default
	// 30s).
	SyncTimeout time.Duration
}

// SpoolAuto, the default of --spool-dir, places the usage spool in
// DefaultSpoolDir(id); SpoolOff turns it off.
const (
	SpoolAuto = "auto"
	SpoolOff  = "off"
)

// DefaultSpoolDir is the usage spool of enforcer id under the user's state
// directory: $XDG_STATE_HOME/cordon/spool/<id>, else
// ~/.local/state/cordon/spool/<id>.
func DefaultSpoolDir(id string) (string, error) {
	state := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(state) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", svcconfig.Invalidf("--spool-dir %s: no state directory ($XDG_STATE_HOME, $HOME): pass --spool-dir DIR (or %s)", SpoolAuto, SpoolOff)
		}
		state = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(state, "cordon", "spool", id), nil
}

// spoolDir resolves Options.SpoolDir: SpoolAuto to DefaultSpoolDir,
// SpoolOff (and empty, an embedding program's "none") to no spool.
func (c *Config) spoolDir() (string, error) {
	switch c.SpoolDir {
	case "", SpoolOff:
		return "", nil
	case SpoolAuto:
		return DefaultSpoolDir(c.ID)
	}
	return c.SpoolDir, nil
}

// DefaultListen is the proxy's address of `cordon enforce` and `cordon up`.
const DefaultListen = "127.0.0.1:8080"

// RegisterFlags declares the flags of `cordon enforce` into c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	svcconfig.TrustAnchorFlag(fs, &c.TrustAnchor, svcconfig.TrustAnchorHelp)
	fs.StringVar(&c.Upstream, "upstream", os.Getenv("CORDON_UPSTREAM"), "URL of the protected service ($CORDON_UPSTREAM)")
	fs.StringVar(&c.RoutesFile, "routes", os.Getenv("CORDON_ROUTES"), "routes file: service, environment and the scope of each route ($CORDON_ROUTES)")
	fs.StringVar(&c.Listen, "listen", DefaultListen, "proxy listen address")
	c.NATS.RegisterFlags(fs, natsconn.EnforcerIdentity(&c.ID))
	fs.StringVar(&c.ID, "id", DefaultID(), "enforcer id in usage events (a-z, A-Z, 0-9, -, _)")
	fs.Var((*prefixList)(&c.TrustedProxies), "trusted-proxy", "CIDR of a proxy whose X-Forwarded-For, X-Real-IP and device header are believed (repeatable)")
	fs.StringVar(&c.Service, "service", "", "service name tokens must have in their audience (default: from the routes file)")
	fs.StringVar(&c.Environment, "environment", "", "environment of this service (default: from the routes file)")
	fs.StringVar(&c.DeviceHeader, "device-header", enforce.DefaultDeviceHeader, "header in which a trusted proxy passes the client certificate (thumbprint or escaped PEM)")
	fs.BoolVar(&c.KeepAuthorization, "keep-authorization", false, "forward the Authorization header upstream (removed by default)")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", enforce.DefaultMaxStaleness, "how old the denylist view may get before it counts as stale (0: no bound, needs --fail-closed=false)")
	fs.BoolVar(&c.FailClosed, "fail-closed", true, "deny every request (denylist_stale, 503) while the denylist view is older than --max-staleness, so a revocation is never missed; --fail-closed=false keeps serving with a stale denylist")
	fs.IntVar(&c.CacheSize, "cache-size", enforce.DefaultCacheSize, "verified tokens kept in memory")
	fs.IntVar(&c.UsageBuffer, "usage-buffer", enforce.DefaultUsageBuffer, "usage events buffered before new ones are dropped")
	fs.StringVar(&c.UsageFormat, "usage-format", enforce.DefaultUsageFormat, "how usage is published: "+enforce.UsageFormatBatch+
		" (batches of a tenant and holder, one message per batch; auditors of this release and later) or "+enforce.UsageFormatEvent+
		" (one JSON event per decision: for auditors older than usage batches, and to roll back)")
	fs.StringVar(&c.SpoolDir, "spool-dir", SpoolAuto, "directory of this enforcer's own where usage events JetStream does not acknowledge wait on disk to be republished, also across restarts ("+
		SpoolAuto+": $XDG_STATE_HOME/cordon/spool/ID, else ~/.local/state/cordon/spool/ID; "+SpoolOff+": no spool, such events are lost)")
	c.SpoolMaxBytes = enforce.DefaultSpoolMaxBytes
	fs.Var((*byteSize)(&c.SpoolMaxBytes), "spool-size", "most disk the usage spool may use, a `size` in bytes or with KiB, MiB, GiB; when full, its oldest events are dropped")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&c.ClientCA, "client-ca", "", "verify client certificates against these CAs (PEM); without it, any client certificate is requested and bound by thumbprint")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
}

// DefaultID is "enforce-<hostname>" reduced to the characters an
// enforcer id may hold.
func DefaultID() string {
	h, _ := os.Hostname()
	var b strings.Builder
	b.WriteString("enforce-")
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.':
			b.WriteByte('-')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// withDefaults fills the zero values that have a default.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = DefaultID()
	}
	if c.NATS.Name == "" {
		c.NATS.Name = "cordon-enforce-" + c.ID
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 30 * time.Second
	}
	return c
}

// Validate checks the configuration as given, without I/O; its errors
// name the flag and match svcconfig.ErrInvalid.
func (c *Config) Validate() error {
	if c.Routes == nil && c.RoutesFile == "" {
		return svcconfig.Invalidf("--routes is required (or set $CORDON_ROUTES)")
	}
	if c.Upstream == "" {
		return svcconfig.Invalidf("--upstream is required (or set $CORDON_UPSTREAM)")
	}
	if _, err := c.upstream(); err != nil {
		return err
	}
	if err := events.ValidateName(c.ID); err != nil {
		return svcconfig.Invalidf("--id %q: %v", c.ID, err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return svcconfig.Invalidf("--listen %q: %v", c.Listen, err)
	}
	if err := svcconfig.CheckListen("metrics-listen", c.MetricsListen); err != nil {
		return err
	}
	if c.MaxStaleness < 0 {
		return svcconfig.Invalidf("--max-staleness %v is negative", c.MaxStaleness)
	}
	switch c.UsageFormat {
	case "", enforce.UsageFormatBatch, enforce.UsageFormatEvent:
	default:
		return svcconfig.Invalidf("--usage-format %q: want %s or %s", c.UsageFormat, enforce.UsageFormatBatch, enforce.UsageFormatEvent)
	}
	if c.FailClosed && c.MaxStaleness == 0 {
		return svcconfig.Invalidf("--fail-closed needs a --max-staleness bound (or --fail-closed=false)")
	}
	if c.SpoolDir != "" && c.SpoolDir != SpoolOff && c.SpoolMaxBytes != 0 && c.SpoolMaxBytes < minSpoolBytes {
		return svcconfig.Invalidf("--spool-size %s: want at least %s", byteSize(c.SpoolMaxBytes), byteSize(minSpoolBytes))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") || (c.ClientCA != "" && c.TLSCert == "") {
		return svcconfig.Invalidf("--tls-cert and --tls-key go together, and --client-ca needs them")
	}
	return nil
}

// upstream parses Upstream.
func (c *Config) upstream() (*url.URL, error) {
	u, err := url.Parse(c.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, svcconfig.Invalidf("--upstream %q: want http(s)://host[:port][/path]", c.Upstream)
	}
	return u, nil
}

// Check loads the routes and the certificates and says what the proxy
// would run with: what `cordon enforce --check-config` prints (the
// routes, then the staleness policy).
func (c *Config) Check() (string, error) {
	o, _, err := c.load()
	if err != nil {
		return "", err
	}
	e, err := enforce.New(o)
	if err != nil {
		return "", err
	}
	_ = e.Close()
	usage := usagePolicy(e.Options())
	svc, env := o.Service, o.Environment
	if svc == "" {
		svc = o.Routes.Service
	}
	if env == "" {
		env = o.Routes.Environment
	}
	if env == "" {
		env = "(any)"
	}
	file := c.RoutesFile
	if c.Routes != nil {
		file = c.Routes.File
	}
	return fmt.Sprintf("routes %s: ok (service %s, environment %s, %d routes)\n%s\n%s\n%s", file, svc, env, len(o.Routes.Routes), o.StalenessPolicy(), usage, spoolPolicy(o)), nil
}

// usagePolicy says in one line how usage is published (o with defaults).
func usagePolicy(o enforce.Options) string {
	if o.UsageFormat == enforce.UsageFormatEvent {
		return fmt.Sprintf("usage format %s: one JSON event per decision, %d at a time (for auditors older than usage batches)", o.UsageFormat, o.UsageBatch)
	}
	return fmt.Sprintf("usage format %s: one message per batch of a tenant and holder, at most %d records or %s, after at most %v (auditors of this release and later)",
		o.UsageFormat, o.UsageBatch, byteSize(o.UsageBatchBytes), o.UsageLinger)
}

// spoolPolicy says in one line where usage events wait when JetStream
// does not acknowledge them.
func spoolPolicy(o enforce.Options) string {
	if o.SpoolDir == "" {
		return "usage spool off: usage events JetStream does not acknowledge are lost"
	}
	size := o.SpoolMaxBytes
	if size == 0 {
		size = enforce.DefaultSpoolMaxBytes
	}
	return fmt.Sprintf("usage spool %s, at most %s: usage events JetStream does not acknowledge wait there", o.SpoolDir, byteSize(size))
}

// load reads the routes (unless given) and the TLS certificate and CA
// (unless given) into the enforcer's options.
func (c *Config) load() (enforce.Options, *tls.Config, error) {
	o := c.Options
	var err error
	if o.SpoolDir, err = c.spoolDir(); err != nil {
		return o, nil, err
	}
	if o.Routes == nil {
		rs, err := enforce.LoadRoutes(c.RoutesFile)
		if err != nil {
			return o, nil, err
		}
		o.Routes = rs
	}
	conf := c.TLS
	if conf == nil && c.TLSCert != "" {
		var err error
		if conf, err = serverTLS(c.TLSCert, c.TLSKey, c.ClientCA); err != nil {
			return o, nil, err
		}
	}
	return o, conf, nil
}

// serverTLS loads the proxy's certificate; client certificates are
// requested for device binding, and verified when clientCA is set.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	if clientCA != "" {
		b, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("load client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("load client CA %s: no PEM certificate found", clientCA)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// minSpoolBytes is the smallest --spool-size (enforce's own minimum).
const minSpoolBytes = 64 << 10

// byteSize is a flag of a size in bytes, with an optional KiB, MiB or GiB
// suffix ("256MiB").
type byteSize int64

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}}

// String implements flag.Value.
func (b byteSize) String() string {
	for _, u := range sizeUnits {
		if b != 0 && b%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(b>>u.shift), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set implements flag.Value.
func (b *byteSize) Set(v string) error {
	num, shift := strings.TrimSpace(v), uint(0)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = strings.TrimSpace(n), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", v)
	}
	*b = byteSize(n << shift)
	return nil
}

// prefixList is a repeatable flag of CIDRs (or bare addresses), also
// comma-separated.
type prefixList []netip.Prefix

// String implements flag.Value.
func (l *prefixList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Set implements flag.Value: it appends the CIDRs (or addresses) in v.
func (l *prefixList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR or an IP address", part)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*l = append(*l, p.Masked())
	}
	return nil
}
