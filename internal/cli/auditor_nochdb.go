//go:build nochdb

package cli

import (
	"context"
	"errors"

	"github.com/cordonhq/cordon/pkg/store"
)

// This build leaves chDB out: `cordon auditor` writes to a ClickHouse
// server (--store clickhouse), which is therefore the default.
const (
	haveChDB         = false
	defaultStoreKind = storeClickHouse
)

func openChDB(context.Context, string, string) (store.Backend, error) {
	return nil, errors.New("--store chdb needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb)")
}
