//go:build nochdb

package replay

import (
	"context"
	"errors"
	"os"

	"github.com/cordonhq/cordon/pkg/store"
)

// ErrNoChDB: this build (-tags nochdb) has no embedded ClickHouse for a
// private pipeline or a replay directory's store.
var ErrNoChDB = errors.New("a replay's private pipeline and its store need the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb): " +
	"use a full build (make build), or replay into a running system with --nats")

func defaultBackend(context.Context, string, string) (store.Backend, error) { return nil, ErrNoChDB }

// keepStdin returns stdin: chDB is not in this build.
func keepStdin() (*os.File, error) { return os.Stdin, nil }
