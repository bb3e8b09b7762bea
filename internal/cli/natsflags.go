package cli

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/natsauth"
)

// natsFlags are the flags every command that talks to NATS shares: the
// server URL, the service's credentials (an NKey seed from `cordon creds
// generate`, or a JWT .creds file) and TLS.
type natsFlags struct {
	url, creds, ca, cert, key string
}

// addNATSFlags registers --nats, --nats-creds, --nats-ca, --nats-cert and
// --nats-key, each defaulting to its $CORDON_… variable.
func addNATSFlags(fs *flag.FlagSet) *natsFlags {
	f := &natsFlags{}
	fs.StringVar(&f.url, "nats", getenvDefault("CORDON_NATS", nats.DefaultURL), "NATS server URL(s), comma-separated ($CORDON_NATS)")
	fs.StringVar(&f.creds, "nats-creds", os.Getenv("CORDON_NATS_CREDS"), "NATS credentials: an NKey seed from `cordon creds generate` or a .creds file ($CORDON_NATS_CREDS)")
	fs.StringVar(&f.ca, "nats-ca", os.Getenv("CORDON_NATS_CA"), "CA certificate that signed the NATS servers' certificates ($CORDON_NATS_CA)")
	fs.StringVar(&f.cert, "nats-cert", os.Getenv("CORDON_NATS_CERT"), "client certificate for NATS mutual TLS ($CORDON_NATS_CERT)")
	fs.StringVar(&f.key, "nats-key", os.Getenv("CORDON_NATS_KEY"), "client key for NATS mutual TLS ($CORDON_NATS_KEY)")
	return f
}

// options returns the connect options for a client named name: it
// reconnects forever, authenticates and speaks TLS as configured.
func (f *natsFlags) options(name string) ([]nats.Option, error) {
	auth, err := natsauth.ClientOptions(f.creds, f.ca, f.cert, f.key)
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
		return nil, fmt.Errorf("connect to NATS at %s: %w", f.url, err)
	}
	return nc, nil
}
