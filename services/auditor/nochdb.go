//go:build nochdb

package auditor

import (
	"context"
	"errors"

	"github.com/cordonhq/cordon/pkg/store"
)

// This build leaves chDB out: the auditor writes to a ClickHouse server
// (StoreClickHouse), which is therefore the default.
const (
	haveChDB = false
	// DefaultStore is the store the auditor writes to when none is named:
	// a ClickHouse server, in a build without chDB (-tags nochdb).
	DefaultStore = StoreClickHouse
)

// OpenChDB fails: this build has no embedded ClickHouse.
func OpenChDB(context.Context, string, string) (store.Backend, error) {
	return nil, errors.New("--store chdb needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb)")
}
