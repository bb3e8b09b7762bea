//go:build !nochdb

package replay

import (
	"context"
	"os"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// defaultBackend opens the private pipeline's chDB store in path.
func defaultBackend(ctx context.Context, path, database string) (store.Backend, error) {
	return chdbstore.Open(ctx, chdbstore.Options{Path: path, Database: database})
}

// keepStdin moves the process's stdin away from chDB, which would read it
// (chdbstore.KeepStdin), and returns the file to read it from.
func keepStdin() (*os.File, error) { return chdbstore.KeepStdin() }
