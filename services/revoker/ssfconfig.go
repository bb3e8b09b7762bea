package revoker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/ssf"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// SSFConfig is the Shared Signals part of Config: what `cordon revoker`
// reads from its --ssf-* flags.
type SSFConfig struct {
	// Push lists receivers' push endpoints (comma-separated); empty
	// transmits nothing.
	Push string
	// PushAuthFile holds the Authorization header value sent to them
	// ("Bearer <secret>"); never logged.
	PushAuthFile string
	// Key is the ES256 signing key (PEM); empty: DataDir/ssf-signing.pem,
	// created on first start.
	Key string
	// Issuer and Audience are the "iss" and "aud" of transmitted SETs.
	Issuer, Audience string
	// Listen serves /.well-known/jwks.json and, with ReceiveKeys,
	// POST /ssf/events.
	Listen string
	// ReceiveKeys is the identity provider's JWKS (a URL or a file);
	// ReceiveIssuer and ReceiveAudience must match its SETs.
	ReceiveKeys, ReceiveIssuer, ReceiveAudience string
	// ReceiveAuthFile holds the Authorization header value the identity
	// provider must send.
	ReceiveAuthFile string
	// Tenant is the tenant of received subjects that name none.
	Tenant string
}

// RegisterFlags declares the --ssf-* flags.
func (c *SSFConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Push, "ssf-push", os.Getenv("CORDON_SSF_PUSH"), "Shared Signals receivers' push `URLs` (comma-separated): every revocation is pushed as a CAEP credential-change event ($CORDON_SSF_PUSH)")
	fs.StringVar(&c.PushAuthFile, "ssf-push-auth-file", "", "`file` holding the Authorization header value sent with pushed events")
	fs.StringVar(&c.Key, "ssf-key", "", "ES256 signing key `file` of pushed events (default: DATA-DIR/ssf-signing.pem, created on first start)")
	fs.StringVar(&c.Issuer, "ssf-issuer", DefaultSSFIssuer, "iss of pushed events")
	fs.StringVar(&c.Audience, "ssf-audience", "", "aud of pushed events (none when empty)")
	fs.StringVar(&c.Listen, "ssf-listen", "", "serve /.well-known/jwks.json and, with --ssf-receive-keys, POST /ssf/events on this `address` (off when empty)")
	fs.StringVar(&c.ReceiveKeys, "ssf-receive-keys", "", "identity provider's JWKS `source`, a URL or a file: verifies events pushed to /ssf/events; an account disabled revokes its holder's tokens")
	fs.StringVar(&c.ReceiveIssuer, "ssf-receive-issuer", "", "iss received events must have (any when empty)")
	fs.StringVar(&c.ReceiveAudience, "ssf-receive-audience", "", "aud received events must name (any when empty)")
	fs.StringVar(&c.ReceiveAuthFile, "ssf-receive-auth-file", "", "`file` holding the Authorization header value the identity provider must send")
	fs.StringVar(&c.Tenant, "ssf-tenant", "", "tenant of received subjects that name none")
}

// validate checks the flags without I/O.
func (c *SSFConfig) validate(dataDir string) error {
	for _, u := range c.pushURLs() {
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return svcconfig.Invalidf("--ssf-push: an endpoint is not an http(s) URL")
		}
	}
	if len(c.pushURLs()) > 0 && c.Key == "" && dataDir == "" {
		return svcconfig.Invalidf("--ssf-push needs a signing key: give --ssf-key or --data-dir (where one is created)")
	}
	if c.ReceiveKeys != "" && c.Listen == "" {
		return svcconfig.Invalidf("--ssf-receive-keys needs --ssf-listen (where identity providers push)")
	}
	return svcconfig.CheckListen("ssf-listen", c.Listen)
}

func (c *SSFConfig) pushURLs() []string {
	var out []string
	for _, u := range strings.Split(c.Push, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// options reads the key files and the identity provider's keys.
func (c *SSFConfig) options(ctx context.Context, dataDir string) (SSFOptions, error) {
	o := SSFOptions{Issuer: c.Issuer, Audience: c.Audience, Tenant: c.Tenant}
	urls := c.pushURLs()
	if len(urls) > 0 || c.Listen != "" && (c.Key != "" || dataDir != "") {
		key := c.Key
		if key == "" {
			key = filepath.Join(dataDir, "ssf-signing.pem")
		}
		s, err := ssf.LoadOrCreateSigner(key)
		if err != nil {
			return o, err
		}
		o.Signer = s
	}
	auth, err := readSecret(c.PushAuthFile, "--ssf-push-auth-file")
	if err != nil {
		return o, err
	}
	for _, u := range urls {
		o.Receivers = append(o.Receivers, &ssf.Pusher{Endpoint: u, Authorization: auth})
	}
	if c.ReceiveKeys != "" {
		b, err := readSource(ctx, c.ReceiveKeys)
		if err != nil {
			return o, fmt.Errorf("--ssf-receive-keys: %w", err)
		}
		keys, err := ssf.ParseJWKS(b)
		if err != nil {
			return o, fmt.Errorf("--ssf-receive-keys: %w", err)
		}
		o.Receive = ssf.VerifyOptions{Keys: keys, Issuer: c.ReceiveIssuer, Audience: c.ReceiveAudience, MaxAge: 24 * time.Hour}
		if o.ReceiveAuthorization, err = readSecret(c.ReceiveAuthFile, "--ssf-receive-auth-file"); err != nil {
			return o, err
		}
	}
	return o, nil
}

// readSecret reads a one-line secret file ("" when no file).
func readSecret(path, flag string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readSource reads a URL or a file (at most 1 MiB).
func readSource(ctx context.Context, src string) ([]byte, error) {
	if !strings.HasPrefix(src, "https://") && !strings.HasPrefix(src, "http://") {
		return os.ReadFile(src)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// ssfServer serves SSFHandler on the listen address.
type ssfServer struct {
	srv *http.Server
	ln  net.Listener
}

func startSSFServer(addr string, h http.Handler) (*ssfServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--ssf-listen: %w", err)
	}
	s := &ssfServer{srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the listener's address.
func (s *ssfServer) Addr() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

func (s *ssfServer) Close() error {
	if s == nil {
		return nil
	}
	if err := s.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
