//go:build !nochdb

package cli

import (
	"errors"

	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// chdbLibraryMissing reports whether err says the chDB library could not be
// loaded (Main then exits with exitNoChDBLibrary). The library is loaded
// when a command first opens a chDB store, never at start.
func chdbLibraryMissing(err error) bool { return errors.Is(err, chdbstore.ErrLibraryMissing) }
