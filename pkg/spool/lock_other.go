//go:build !unix

package spool

import (
	"fmt"
	"os"
)

// lockDir creates the lock file; without flock it does not exclude another
// process (spool directories are not locked on this system).
func lockDir(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() { f.Close() }, nil
}
