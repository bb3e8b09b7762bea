//go:build nochdb

package replay

import (
	"context"
	"errors"

	"github.com/cordonhq/cordon/pkg/store"
)

// ErrNoChDB: this build (-tags nochdb) has no embedded ClickHouse for a
// private pipeline.
var ErrNoChDB = errors.New("a private pipeline needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb): " +
	"replay into a running system with --nats, or use a full build (make build)")

func defaultBackend(context.Context, string, string) (store.Backend, error) { return nil, ErrNoChDB }
