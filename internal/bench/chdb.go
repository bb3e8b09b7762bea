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

// removeSharedChDB deletes the bench process's chDB data directory, if
// one was made: a full run leaves most of a gigabyte there. Called last,
// when no suite writes any more (chDB's session stays open until the
// process exits; its files go with the directory).
func removeSharedChDB() {
	if chdbDir != "" {
		_ = os.RemoveAll(chdbDir)
	}
}
