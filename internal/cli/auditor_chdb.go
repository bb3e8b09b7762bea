//go:build !nochdb

package cli

import (
	"context"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// haveChDB says this build embeds ClickHouse (chDB); defaultStoreKind is
// then the embedded store.
const (
	haveChDB         = true
	defaultStoreKind = storeCHDB
)

// openChDB opens the embedded store's database in path.
func openChDB(ctx context.Context, path, database string) (store.Backend, error) {
	return chdbstore.Open(ctx, chdbstore.Options{Path: path, Database: database})
}
