//go:build !nochdb

package auditor

import (
	"context"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// haveChDB says this build embeds ClickHouse (chDB); DefaultStore is then
// the embedded store.
const (
	haveChDB = true
	// DefaultStore is the store the auditor writes to when none is named:
	// chDB, the embedded ClickHouse engine, in a full build.
	DefaultStore = StoreCHDB
)

// OpenChDB opens the embedded store's database in the chDB data
// directory path.
func OpenChDB(ctx context.Context, path, database string) (store.Backend, error) {
	return chdbstore.Open(ctx, chdbstore.Options{Path: path, Database: database})
}
