package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/natsauth"
)

// DefaultCredsDir is where `cordon up` (with its default --data .cordon)
// writes the NATS identities of its services and of the CLI. A command run
// from the directory that holds .cordon finds its identity there with no
// flags — the admin's for the CLI, its role's for a service — the way it
// finds .cordon/admin.token.
var DefaultCredsDir = filepath.Join(".cordon", natsauth.CredsSubdir)

// natsFlags are the flags every command that talks to NATS shares: the
// server URL, the service's credentials (an NKey seed from `cordon creds
// generate`, or a JWT .creds file) and TLS.
type natsFlags struct {
	url, creds, ca, cert, key string
	// identity names this command's seed file in DefaultCredsDir, used
	// when neither --nats-creds nor $CORDON_NATS_CREDS is given and the
	// file exists. Nil: no default.
	identity func() string
}

// roleIdentity is the default seed of a role in DefaultCredsDir.
func roleIdentity(r natsauth.Role) func() string {
	return func() string { return natsauth.SeedFile(DefaultCredsDir, r) }
}

// The default identities of the commands: the CLI's requests are the
// admin's; each service is its role.
var (
	adminIdentity   = roleIdentity(natsauth.RoleAdmin)
	issuerIdentity  = roleIdentity(natsauth.RoleIssuer)
	revokerIdentity = roleIdentity(natsauth.RoleRevoker)
	auditorIdentity = roleIdentity(natsauth.RoleAuditor)
)

// enforcerIdentity is the default seed of the enforcer whose id *id holds
// (read when connecting, after the flags are parsed).
func enforcerIdentity(id *string) func() string {
	return func() string {
		if natsauth.ValidateEnforcerID(*id) != nil {
			return ""
		}
		return natsauth.EnforcerSeedFile(DefaultCredsDir, *id)
	}
}

// addNATSFlags registers --nats, --nats-creds, --nats-ca, --nats-cert and
// --nats-key, each defaulting to its $CORDON_… variable; identity, if not
// nil, names the command's default credentials (see natsFlags.identity).
func addNATSFlags(fs *flag.FlagSet, identity func() string) *natsFlags {
	f := &natsFlags{identity: identity}
	fs.StringVar(&f.url, "nats", getenvDefault("CORDON_NATS", nats.DefaultURL), "NATS server URL(s), comma-separated ($CORDON_NATS)")
	fs.StringVar(&f.creds, "nats-creds", os.Getenv("CORDON_NATS_CREDS"),
		"NATS credentials: an NKey seed from cordon creds generate or a .creds `file` ($CORDON_NATS_CREDS; default: this command's identity in "+DefaultCredsDir+"/, written by cordon up, when it exists)")
	fs.StringVar(&f.ca, "nats-ca", os.Getenv("CORDON_NATS_CA"), "CA certificate that signed the NATS servers' certificates ($CORDON_NATS_CA)")
	fs.StringVar(&f.cert, "nats-cert", os.Getenv("CORDON_NATS_CERT"), "client certificate for NATS mutual TLS ($CORDON_NATS_CERT)")
	fs.StringVar(&f.key, "nats-key", os.Getenv("CORDON_NATS_KEY"), "client key for NATS mutual TLS ($CORDON_NATS_KEY)")
	return f
}

// credsFile is the credentials file the command uses: --nats-creds (or
// $CORDON_NATS_CREDS), else its identity in DefaultCredsDir if that file
// exists, else none.
func (f *natsFlags) credsFile() string {
	if f.creds != "" || f.identity == nil {
		return f.creds
	}
	if p := f.identity(); p != "" {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// options returns the connect options for a client named name: it
// reconnects forever, authenticates and speaks TLS as configured.
func (f *natsFlags) options(name string) ([]nats.Option, error) {
	auth, err := natsauth.ClientOptions(f.credsFile(), f.ca, f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("%w: nats credentials: %v", errUsage, err)
	}
	return append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1)}, auth...), nil
}

// connect connects a client named name.
func (f *natsFlags) connect(name string) (*nats.Conn, error) {
	opts, err := f.options(name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.url, opts...)
	if err != nil {
		return nil, f.explain(err)
	}
	return nc, nil
}

// explain turns a connection error into one that says what to do.
func (f *natsFlags) explain(err error) error {
	creds := f.credsFile()
	switch {
	case errors.Is(err, nats.ErrAuthorization) && creds == "":
		hint := "pass --nats-creds FILE (or set $CORDON_NATS_CREDS)"
		if f.identity != nil {
			hint += fmt.Sprintf("; `cordon up` writes the identities into <data dir>/%s/, and a command run next to its .cordon finds %s with no flags",
				natsauth.CredsSubdir, f.identity())
		}
		return fmt.Errorf("connect to NATS at %s: the server refuses connections without credentials: %s: %w", f.url, hint, err)
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("connect to NATS at %s: the server refused the identity in %s (not in its auth.conf, or rotated since: use the seed `cordon creds generate` or `cordon up` wrote for this server): %w", f.url, creds, err)
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("connect to NATS at %s: %w (is NATS — `cordon up` — running there?)", f.url, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w", f.url, err)
}
