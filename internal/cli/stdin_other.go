//go:build !linux || nochdb

package cli

import "os"

// keepStdinFromChDB returns stdin: chDB (linux only) is not in this build.
func keepStdinFromChDB() (*os.File, error) { return os.Stdin, nil }
