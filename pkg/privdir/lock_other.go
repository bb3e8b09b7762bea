//go:build !unix

package privdir

import (
	"fmt"
	"os"
)

// Lock creates the lock file; without flock it does not exclude another
// process (directories are not locked on this system).
func Lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() { f.Close() }, nil
}
