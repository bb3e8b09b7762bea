// Package chdbenv points chdb-go at Cordon's cached chDB library before
// chdb-go loads it, and turns a missing library into a clear error.
//
// Why this package exists: github.com/chdb-io/chdb-go/chdb-purego dlopens
// libchdb.so in an init function (it reads CHDB_LIB_PATH) and panics when the
// library is missing. Cordon installs the library outside the repository with
// `make chdb` (scripts/install-chdb.sh), into
//
//	${CORDON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cordon}/chdb/<Version>/libchdb.so
//
// so CHDB_LIB_PATH must be set before chdb-purego's init runs, and a missing
// library must become a message naming the install command, not a panic.
//
// Why this works, and why this package imports nothing but "os": since Go
// 1.21 the runtime initialises packages in a defined order: repeatedly the
// first package, sorted by import path, whose imports are all initialised.
// chdb-purego imports os, os/exec and purego, and os/exec itself imports os,
// so chdb-purego can only become ready after os and then os/exec have been
// initialised. This package depends on os alone, so it is ready as soon as os
// is, at the same moment as os/exec at the latest, and its import path
// ("github.com/cordonhq/…") sorts before "os/exec": it is always initialised
// before os/exec and therefore before chdb-purego. Importing anything else
// (even strings or fmt) could break that guarantee, which is why the code
// below concatenates strings by hand.
//
// The chDB backend (pkg/store/chdbstore) blank-imports this package; nothing
// else needs to.
package chdbenv

import "os"

// Version is the chDB library version Cordon pins (npm package
// @chdb/lib-linux-x64-gnu); scripts/install-chdb.sh installs the same one.
const Version = "26.5.3"

// InstallCommand is the command that installs the library.
const InstallCommand = "make chdb"

// ExitCode is the status a program exits with when the library is missing.
const ExitCode = 3

// EnvLibPath is the variable chdb-go reads the library path from.
const EnvLibPath = "CHDB_LIB_PATH"

// SystemLibPath is the system-wide location chdb-go also looks at.
const SystemLibPath = "/usr/local/lib/libchdb.so"

// CacheDir returns Cordon's cache directory as scripts/install-chdb.sh
// resolves it: $CORDON_CACHE, else $XDG_CACHE_HOME/cordon, else
// $HOME/.cache/cordon; "" when none of those is set.
func CacheDir() string {
	return cacheDir(os.Getenv)
}

// CachedLibPath returns where scripts/install-chdb.sh installs the library,
// or "" when no cache directory can be resolved.
func CachedLibPath() string {
	return cachedLibPath(os.Getenv)
}

// LibPath returns the library chdb-go will load and whether it exists:
// $CHDB_LIB_PATH when set, else the cached library, else SystemLibPath.
func LibPath() (string, bool) {
	p, ok, _ := resolve(os.Getenv, exists)
	return p, ok
}

func cacheDir(getenv func(string) string) string {
	if d := getenv("CORDON_CACHE"); d != "" {
		return d
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return d + "/cordon"
	}
	if d := getenv("HOME"); d != "" {
		return d + "/.cache/cordon"
	}
	return ""
}

func cachedLibPath(getenv func(string) string) string {
	d := cacheDir(getenv)
	if d == "" {
		return ""
	}
	return d + "/chdb/" + Version + "/libchdb.so"
}

// resolve finds the library. It returns the path to use, whether it exists,
// and the places it looked at (for the error message).
func resolve(getenv func(string) string, exists func(string) bool) (path string, ok bool, looked string) {
	if p := getenv(EnvLibPath); p != "" {
		return p, exists(p), EnvLibPath + "=" + p
	}
	looked = EnvLibPath + " (unset)"
	if p := cachedLibPath(getenv); p != "" {
		if exists(p) {
			return p, true, ""
		}
		looked += ", " + p
	} else {
		looked += ", the cache (CORDON_CACHE, XDG_CACHE_HOME and HOME are unset)"
	}
	if exists(SystemLibPath) {
		return SystemLibPath, true, ""
	}
	return "", false, looked + ", " + SystemLibPath
}

func exists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// missingMessage is what a program prints before exiting with ExitCode.
func missingMessage(looked string) string {
	return "cordon: the chDB library libchdb.so (chDB " + Version + ") was not found; looked at " + looked + ".\n" +
		"cordon: install it with `" + InstallCommand + "` (runs scripts/install-chdb.sh), or set " + EnvLibPath + " to an existing libchdb.so.\n"
}

func init() {
	path, ok, looked := resolve(os.Getenv, exists)
	if !ok {
		_, _ = os.Stderr.WriteString(missingMessage(looked))
		os.Exit(ExitCode)
	}
	if os.Getenv(EnvLibPath) == "" {
		_ = os.Setenv(EnvLibPath, path)
	}
}
