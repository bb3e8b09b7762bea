//go:build !race

package store_test

import "os"

// exitTests ends the test binary with the tests' status.
func exitTests(code int) { os.Exit(code) }
