package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// enforceCIDRs is a repeatable flag of CIDRs (or bare addresses), also
// comma-separated.
type enforceCIDRs []netip.Prefix

func (c *enforceCIDRs) String() string {
	s := make([]string, len(*c))
	for i, p := range *c {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (c *enforceCIDRs) Set(v string) error {
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
		*c = append(*c, p.Masked())
	}
	return nil
}

// runEnforce is `cordon enforce`: the enforcing reverse proxy.
func runEnforce(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "enforce", "enforce --upstream URL --routes FILE [--listen ADDR] [--nats URL] [--id ID] [--trusted-proxy CIDR …] [--check-config]")
	var (
		o                         enforce.Options
		trusted                   enforceCIDRs
		upstream, routes, listen  string
		tlsCert, tlsKey, clientCA string
		metrics                   string
		check                     bool
	)
	anchor := addTrustAnchorFlag(fs)
	fs.StringVar(&upstream, "upstream", os.Getenv("CORDON_UPSTREAM"), "URL of the protected service ($CORDON_UPSTREAM)")
	fs.StringVar(&routes, "routes", os.Getenv("CORDON_ROUTES"), "routes file: service, environment and the scope of each route ($CORDON_ROUTES)")
	fs.StringVar(&listen, "listen", "127.0.0.1:8080", "proxy listen address")
	nf := addNATSFlags(fs, natsconn.EnforcerIdentity(&o.ID))
	fs.StringVar(&o.ID, "id", defaultEnforcerID(), "enforcer id in usage events (a-z, A-Z, 0-9, -, _)")
	fs.Var(&trusted, "trusted-proxy", "CIDR of a proxy whose X-Forwarded-For, X-Real-IP and device header are believed (repeatable)")
	fs.StringVar(&o.Service, "service", "", "service name tokens must have in their audience (default: from the routes file)")
	fs.StringVar(&o.Environment, "environment", "", "environment of this service (default: from the routes file)")
	fs.StringVar(&o.DeviceHeader, "device-header", enforce.DefaultDeviceHeader, "header in which a trusted proxy passes the client certificate (thumbprint or escaped PEM)")
	fs.BoolVar(&o.KeepAuthorization, "keep-authorization", false, "forward the Authorization header upstream (removed by default)")
	fs.DurationVar(&o.MaxStaleness, "max-staleness", enforce.DefaultMaxStaleness, "how old the denylist view may get before it counts as stale (0: no bound, needs --fail-closed=false)")
	fs.BoolVar(&o.FailClosed, "fail-closed", true, "deny every request (denylist_stale, 503) while the denylist view is older than --max-staleness, so a revocation is never missed; --fail-closed=false keeps serving with a stale denylist")
	fs.IntVar(&o.CacheSize, "cache-size", enforce.DefaultCacheSize, "verified tokens kept in memory")
	fs.IntVar(&o.UsageBuffer, "usage-buffer", enforce.DefaultUsageBuffer, "usage events buffered before new ones are dropped")
	fs.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	fs.StringVar(&tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&clientCA, "client-ca", "", "verify client certificates against these CAs (PEM); without it, any client certificate is requested and bound by thumbprint")
	fs.StringVar(&metrics, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address (off when empty)")
	fs.BoolVar(&check, "check-config", false, "validate the routes and flags, then exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if routes == "" {
		return fmt.Errorf("%w: --routes is required (or set $CORDON_ROUTES)", errUsage)
	}
	if upstream == "" {
		return fmt.Errorf("%w: --upstream is required (or set $CORDON_UPSTREAM)", errUsage)
	}
	up, err := url.Parse(upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return fmt.Errorf("%w: --upstream %q: want http(s)://host[:port][/path]", errUsage, upstream)
	}
	if err := events.ValidateName(o.ID); err != nil {
		return fmt.Errorf("%w: --id %q: %v", errUsage, o.ID, err)
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("%w: --listen %q: %v", errUsage, listen, err)
	}
	if metrics != "" {
		if _, _, err := net.SplitHostPort(metrics); err != nil {
			return fmt.Errorf("%w: --metrics-listen %q: %v", errUsage, metrics, err)
		}
	}
	if o.MaxStaleness < 0 {
		return fmt.Errorf("%w: --max-staleness %v is negative", errUsage, o.MaxStaleness)
	}
	if o.FailClosed && o.MaxStaleness == 0 {
		return fmt.Errorf("%w: --fail-closed needs a --max-staleness bound (or --fail-closed=false)", errUsage)
	}
	if (tlsCert == "") != (tlsKey == "") || (clientCA != "" && tlsCert == "") {
		return fmt.Errorf("%w: --tls-cert and --tls-key go together, and --client-ca needs them", errUsage)
	}
	rs, err := enforce.LoadRoutes(routes)
	if err != nil {
		return err
	}
	o.Routes = rs
	o.TrustedProxies = trusted
	o.Log = env.Log
	var tlsConf *tls.Config
	if tlsCert != "" {
		if tlsConf, err = enforceTLS(tlsCert, tlsKey, clientCA); err != nil {
			return err
		}
	}
	if check {
		if _, err := enforce.New(o); err != nil {
			return err
		}
		svc, envName := o.Service, o.Environment
		if svc == "" {
			svc = rs.Service
		}
		if envName == "" {
			envName = rs.Environment
		}
		fmt.Fprintf(env.Stdout, "routes %s: ok (service %s, environment %s, %d routes)\n", routes, svc, enforceOrAny(envName), len(rs.Routes))
		fmt.Fprintf(env.Stdout, "%s\n", o.StalenessPolicy())
		return nil
	}
	if o.TrustAnchors, err = trustAnchors(*anchor); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "cordon enforce: %s\n", o.StalenessPolicy())
	natsOpts, err := natsauth.ClientOptions(nf.CredsFile(), nf.CA, nf.Cert, nf.Key)
	if err != nil {
		return fmt.Errorf("%w: nats credentials: %v", errUsage, err)
	}
	return enforce.Run(ctx, enforce.Config{
		Options:       o,
		Upstream:      up,
		Listen:        listen,
		MetricsListen: metrics,
		TLS:           tlsConf,
		NATSURL:       nf.URL,
		NATSOptions:   natsOpts,
	})
}

// enforceTLS loads the proxy's certificate; client certificates are
// requested for device binding, and verified when clientCA is set.
func enforceTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
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

// defaultEnforcerID is "enforce-<hostname>" reduced to the allowed
// characters.
func defaultEnforcerID() string {
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

func enforceEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func enforceOrAny(s string) string {
	if s == "" {
		return "(any)"
	}
	return s
}
