package natsauth

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerAuth reads the users and permissions from DIR/auth.conf (as
// written by Generate) for an in-process server: set them as
// server.Options.Nkeys, or pass them to natsrun.Options.NkeyUsers. It
// parses the very file a standalone nats-server includes, so both enforce
// the same permissions. Seeds are not read: the server needs none.
func ServerAuth(dir string) ([]*server.NkeyUser, error) {
	path := AuthConfPath(dir)
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats auth config: %w", err)
	}
	if len(o.Nkeys) == 0 {
		return nil, fmt.Errorf("nats auth config %s: no nkey users", path)
	}
	return o.Nkeys, nil
}
