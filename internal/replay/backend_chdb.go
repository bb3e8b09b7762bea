//go:build !nochdb

package replay

import (
	"context"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// defaultBackend opens the private pipeline's chDB store in path.
func defaultBackend(ctx context.Context, path, database string) (store.Backend, error) {
	return chdbstore.Open(ctx, chdbstore.Options{Path: path, Database: database})
}
