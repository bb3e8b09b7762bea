//go:build !nochdb

package cli

import (
	"os"

	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// keepStdinFromChDB moves the process's stdin away from chDB (see
// chdbstore.KeepStdin) and returns the file to read it from.
func keepStdinFromChDB() (*os.File, error) { return chdbstore.KeepStdin() }
