// Package natsconn connects Cordon's services and commands to NATS, the
// one way every one of them does it: the server URLs, the service's own
// credentials (an NKey seed from `cordon creds generate` or a JWT .creds
// file), TLS, reconnecting forever, and errors that say what to do. It
// also creates Cordon's streams and buckets (EnsureMissing for services,
// Ensure for the embedded server and test harnesses).
package natsconn

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// DefaultCredsDir is where `cordon up` (with its default --data .cordon)
// writes the NATS identities of its services and of the CLI. A command run
// from the directory that holds .cordon finds its identity there with no
// flags — the admin's for the CLI, its role's for a service — the way it
// finds .cordon/admin.token.
var DefaultCredsDir = filepath.Join(svcconfig.DefaultDataDir, natsauth.CredsSubdir)

// Config says how to reach NATS.
type Config struct {
	// URL is the server URL, or several, comma-separated.
	URL string
	// Creds is the credentials file: an NKey seed from `cordon creds
	// generate` or a JWT .creds file. Empty: Identity's file if it exists,
	// else none.
	Creds string
	// CA is the CA certificate that signed the servers' certificates;
	// Cert and Key a client certificate for mutual TLS.
	CA, Cert, Key string
	// Name names the connection on the server.
	Name string
	// Identity, when not nil, names this client's default credentials (a
	// file in DefaultCredsDir), used when Creds is empty and the file
	// exists; it is called when connecting. RegisterFlags sets it.
	Identity func() string
	// Options are added after Cordon's own (nats.InProcessServer for an
	// embedded server, a shorter ReconnectWait in tests…).
	Options []nats.Option
}

// RoleIdentity is the default credentials of a role in DefaultCredsDir.
func RoleIdentity(r natsauth.Role) func() string {
	return func() string { return natsauth.SeedFile(DefaultCredsDir, r) }
}

// EnforcerIdentity is the default credentials of the enforcer whose id *id
// holds (read when connecting, after the flags are parsed).
func EnforcerIdentity(id *string) func() string {
	return func() string {
		if natsauth.ValidateEnforcerID(*id) != nil {
			return ""
		}
		return natsauth.EnforcerSeedFile(DefaultCredsDir, *id)
	}
}

// RegisterFlags declares --nats, --nats-creds, --nats-ca, --nats-cert and
// --nats-key into c, each defaulting to its $CORDON_… variable; identity,
// if not nil, names the command's default credentials (Config.Identity).
func (c *Config) RegisterFlags(fs *flag.FlagSet, identity func() string) {
	c.Identity = identity
	fs.StringVar(&c.URL, "nats", svcconfig.Getenv("CORDON_NATS", nats.DefaultURL), "NATS server URL(s), comma-separated ($CORDON_NATS)")
	fs.StringVar(&c.Creds, "nats-creds", os.Getenv("CORDON_NATS_CREDS"),
		"NATS credentials: an NKey seed from cordon creds generate or a .creds `file` ($CORDON_NATS_CREDS; default: this command's identity in "+DefaultCredsDir+"/, written by cordon up, when it exists)")
	fs.StringVar(&c.CA, "nats-ca", os.Getenv("CORDON_NATS_CA"), "CA certificate that signed the NATS servers' certificates ($CORDON_NATS_CA)")
	fs.StringVar(&c.Cert, "nats-cert", os.Getenv("CORDON_NATS_CERT"), "client certificate for NATS mutual TLS ($CORDON_NATS_CERT)")
	fs.StringVar(&c.Key, "nats-key", os.Getenv("CORDON_NATS_KEY"), "client key for NATS mutual TLS ($CORDON_NATS_KEY)")
}

// CredsFile is the credentials file the client uses: Creds, else its
// Identity's file if that is a regular file, else none.
func (c *Config) CredsFile() string {
	if c.Creds != "" || c.Identity == nil {
		return c.Creds
	}
	if p := c.Identity(); p != "" {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Validate checks what needs no I/O: a server to connect to. The
// credentials and TLS files are checked by Dial.
func (c *Config) Validate() error {
	if c.URL == "" {
		return svcconfig.Invalidf("--nats is empty: give the NATS server URL(s)")
	}
	return nil
}

// Dial connects: it reconnects forever, authenticates and speaks TLS as
// configured. A credentials or TLS file that cannot be used is a
// configuration mistake (svcconfig.ErrInvalid); a refused or unreachable
// server gives an error that says what to do.
func Dial(c Config) (*nats.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	auth, err := natsauth.ClientOptions(c.CredsFile(), c.CA, c.Cert, c.Key)
	if err != nil {
		return nil, svcconfig.Invalidf("nats credentials: %v", err)
	}
	opts := append([]nats.Option{nats.MaxReconnects(-1)}, auth...)
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	nc, err := nats.Connect(c.URL, append(opts, c.Options...)...)
	if err != nil {
		return nil, c.explain(err)
	}
	return nc, nil
}

// explain turns a connection error into one that says what to do.
func (c *Config) explain(err error) error {
	creds := c.CredsFile()
	switch {
	case errors.Is(err, nats.ErrAuthorization) && creds == "":
		hint := "pass --nats-creds FILE (or set $CORDON_NATS_CREDS)"
		if c.Identity != nil {
			hint += fmt.Sprintf("; `cordon up` writes the identities into <data dir>/%s/, and a command run next to its .cordon finds %s with no flags",
				natsauth.CredsSubdir, c.Identity())
		}
		return fmt.Errorf("connect to NATS at %s: the server refuses connections without credentials: %s: %w", c.URL, hint, err)
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("connect to NATS at %s: the server refused the identity in %s (not in its auth.conf, or rotated since: use the seed `cordon creds generate` or `cordon up` wrote for this server): %w", c.URL, creds, err)
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("connect to NATS at %s: %w (is NATS — `cordon up` — running there?)", c.URL, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w", c.URL, err)
}
