//go:build !linux

package chdbstore

import "os"

// KeepStdin returns stdin: only the Linux chDB library reads fd 0.
func KeepStdin() (*os.File, error) { return os.Stdin, nil }
