package cli

import (
	"errors"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

// natsFlags are the NATS flags of a client command (pkg/natsconn: the
// server URL, the command's credentials and TLS).
type natsFlags struct{ natsconn.Config }

// adminIdentity is the client commands' default NATS identity: their
// requests are the admin's (each service's is its role, in its Config).
var adminIdentity = natsconn.RoleIdentity(natsauth.RoleAdmin)

// addNATSFlags registers --nats, --nats-creds, --nats-ca, --nats-cert and
// --nats-key (natsconn.Config.RegisterFlags).
func addNATSFlags(fs *flag.FlagSet, identity func() string) *natsFlags {
	f := &natsFlags{}
	f.RegisterFlags(fs, identity)
	return f
}

// connect connects a client named name.
func (f *natsFlags) connect(name string) (*nats.Conn, error) {
	c := f.Config
	c.Name = name
	nc, err := natsconn.Dial(c)
	return nc, usageOf(err)
}

// usageOf makes a configuration mistake (svcconfig.ErrInvalid) a usage
// error; other errors are returned as they are.
func usageOf(err error) error {
	if err == nil || errors.Is(err, errUsage) || !errors.Is(err, svcconfig.ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// getenvDefault returns $name, or def when it is unset or empty.
func getenvDefault(name, def string) string { return svcconfig.Getenv(name, def) }
