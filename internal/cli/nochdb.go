//go:build nochdb

package cli

import (
	"context"
	"fmt"
)

// This build (go build -tags nochdb, used by the server images) leaves the
// embedded ClickHouse (chDB) out, so it never needs libchdb.so. The
// commands that only make sense with chDB say so.

func errNoChDB(cmd string) error {
	return fmt.Errorf("%s needs the embedded ClickHouse (chDB), which this build leaves out (-tags nochdb); use a full build (make build)", cmd)
}

func runUp(context.Context, *Env, []string) error { return errNoChDB("cordon up") }

// chdbLibraryMissing is false: this build never loads the chDB library.
func chdbLibraryMissing(error) bool { return false }
