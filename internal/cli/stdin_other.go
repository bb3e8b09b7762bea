//go:build nochdb

package cli

import "os"

// keepStdinFromChDB returns stdin: chDB is not in this build.
func keepStdinFromChDB() (*os.File, error) { return os.Stdin, nil }
