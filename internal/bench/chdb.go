package bench

import (
	"os"
	"sync"
)

var (
	chdbOnce sync.Once
	chdbDir  string
)

// sharedChDBPath is the one chDB data directory of the bench process:
// chDB keeps a single session per process, so every suite that needs
// ClickHouse uses this path and a database name of its own.
func sharedChDBPath() string {
	chdbOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cordon-bench-chdb-")
		if err != nil {
			panic(err)
		}
		chdbDir = dir
	})
	return chdbDir
}
