package chdbstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Version is the chDB library version Cordon pins (npm package
// @chdb/lib-linux-x64-gnu); scripts/install-chdb.sh installs the same one.
const Version = "26.5.3"

// InstallCommand is the command that installs the library into Cordon's
// cache (it runs scripts/install-chdb.sh).
const InstallCommand = "make chdb"

// EnvLibPath is the environment variable that names the library to load,
// overriding the cache and the system location.
const EnvLibPath = "CHDB_LIB_PATH"

// SystemLibPath is the system-wide location looked at last.
const SystemLibPath = "/usr/local/lib/libchdb.so"

// ErrLibraryMissing is wrapped by every error that says the chDB library
// could not be used: not found, not loadable, or lacking a function Cordon
// calls. Its message names where the library was looked for and how to
// install it. Callers that branch on it (the CLI exits with a distinct
// status) use errors.Is.
var ErrLibraryMissing = errors.New("chDB library libchdb.so (chDB " + Version + ") is missing")

// LibPath returns the library Open loads and whether it exists: the file
// named by $CHDB_LIB_PATH when that is set, else the one
// scripts/install-chdb.sh installs in Cordon's cache
// (${CORDON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cordon}/chdb/<Version>/libchdb.so),
// else SystemLibPath. It loads nothing.
func LibPath() (string, bool) {
	p, ok, _ := resolve(os.Getenv, isFile)
	return p, ok
}

// Load loads the chDB library once per process, the first time it is
// called (Open calls it); later calls return the first call's result.
// Nothing loads the library at program start, so a program that links this
// package runs without it until it opens a chDB store. The error wraps
// ErrLibraryMissing.
func Load() error {
	_, err := loadOnce()
	return err
}

var loadOnce = sync.OnceValues(func() (*library, error) {
	path, ok, looked := resolve(os.Getenv, isFile)
	if !ok {
		return nil, fmt.Errorf("%w: looked at %s; %s", ErrLibraryMissing, looked, installHint)
	}
	return loadLibrary(path)
})

// installHint ends every ErrLibraryMissing message.
const installHint = "install it with `" + InstallCommand + "` (scripts/install-chdb.sh) or set " + EnvLibPath + " to an existing libchdb.so"

// cacheDir returns Cordon's cache directory as scripts/install-chdb.sh
// resolves it: $CORDON_CACHE, else $XDG_CACHE_HOME/cordon, else
// $HOME/.cache/cordon; "" when none of those is set.
func cacheDir(getenv func(string) string) string {
	if d := getenv("CORDON_CACHE"); d != "" {
		return d
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cordon")
	}
	if d := getenv("HOME"); d != "" {
		return filepath.Join(d, ".cache", "cordon")
	}
	return ""
}

// cachedLibPath returns where scripts/install-chdb.sh installs the library,
// or "" when no cache directory can be resolved.
func cachedLibPath(getenv func(string) string) string {
	d := cacheDir(getenv)
	if d == "" {
		return ""
	}
	return filepath.Join(d, "chdb", Version, "libchdb.so")
}

// resolve finds the library. It returns the path to load, whether it
// exists, and the places it looked at (for the error message).
func resolve(getenv func(string) string, exists func(string) bool) (path string, ok bool, looked string) {
	if p := getenv(EnvLibPath); p != "" {
		return p, exists(p), EnvLibPath + "=" + p
	}
	places := []string{EnvLibPath + " (unset)"}
	if p := cachedLibPath(getenv); p != "" {
		if exists(p) {
			return p, true, ""
		}
		places = append(places, p)
	} else {
		places = append(places, "the cache (CORDON_CACHE, XDG_CACHE_HOME and HOME are unset)")
	}
	if exists(SystemLibPath) {
		return SystemLibPath, true, ""
	}
	return "", false, strings.Join(append(places, SystemLibPath), ", ")
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}
