package chdbstore

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	lib := filepath.Join("chdb", Version, "libchdb.so")
	tests := []struct {
		name     string
		env      map[string]string
		present  []string
		wantPath string
		wantOK   bool
		looked   []string
	}{
		{"env wins", map[string]string{"CHDB_LIB_PATH": "/x/libchdb.so", "HOME": "/h"}, []string{"/x/libchdb.so", "/h/.cache/cordon/" + lib}, "/x/libchdb.so", true, nil},
		{"env set but missing", map[string]string{"CHDB_LIB_PATH": "/x/libchdb.so", "HOME": "/h"}, []string{"/h/.cache/cordon/" + lib}, "/x/libchdb.so", false, []string{"CHDB_LIB_PATH=/x/libchdb.so"}},
		{"CORDON_CACHE first", map[string]string{"CORDON_CACHE": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}, []string{"/c/" + lib, "/x/cordon/" + lib}, "/c/" + lib, true, nil},
		{"XDG_CACHE_HOME next", map[string]string{"XDG_CACHE_HOME": "/x", "HOME": "/h"}, []string{"/x/cordon/" + lib, "/h/.cache/cordon/" + lib}, "/x/cordon/" + lib, true, nil},
		{"HOME last", map[string]string{"HOME": "/h"}, []string{"/h/.cache/cordon/" + lib}, "/h/.cache/cordon/" + lib, true, nil},
		{"system library", map[string]string{"HOME": "/h"}, []string{SystemLibPath}, SystemLibPath, true, nil},
		{"nothing", map[string]string{"HOME": "/h"}, nil, "", false, []string{"CHDB_LIB_PATH (unset)", "/h/.cache/cordon/" + lib, SystemLibPath}},
		{"no cache variables", map[string]string{}, nil, "", false, []string{"CORDON_CACHE, XDG_CACHE_HOME and HOME are unset", SystemLibPath}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			exists := func(p string) bool {
				for _, q := range tc.present {
					if p == q {
						return true
					}
				}
				return false
			}
			path, ok, looked := resolve(getenv, exists)
			if path != tc.wantPath || ok != tc.wantOK {
				t.Errorf("resolve = %q, %v; want %q, %v", path, ok, tc.wantPath, tc.wantOK)
			}
			for _, l := range tc.looked {
				if !strings.Contains(looked, l) {
					t.Errorf("looked = %q, want it to name %q", looked, l)
				}
			}
		})
	}
}

// TestLoadLibraryErrors: a library that is missing, is not a shared
// object, or lacks a function the backend calls is an error wrapping
// ErrLibraryMissing that names the file and the install command, never a
// panic (purego.RegisterLibFunc would panic on a missing symbol).
func TestLoadLibraryErrors(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "libchdb.so")
	if err := os.WriteFile(notELF, []byte("not a shared object\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want []string
	}{
		{"missing", filepath.Join(dir, "nope", "libchdb.so"), []string{filepath.Join(dir, "nope", "libchdb.so"), "cannot be loaded"}},
		{"not a shared object", notELF, []string{notELF, "cannot be loaded"}},
	}
	if runtime.GOOS == "linux" {
		// A real shared object (glibc's, loaded by name) without chDB's
		// functions.
		tests = append(tests, struct {
			name string
			path string
			want []string
		}{"another library", "libc.so.6", []string{"libc.so.6", "has no function chdb_connect", Version}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := loadLibrary(tc.path)
			if !errors.Is(err, ErrLibraryMissing) || l != nil {
				t.Fatalf("loadLibrary(%q) = %v, %v; want an error wrapping ErrLibraryMissing", tc.path, l, err)
			}
			msg := err.Error()
			for _, w := range append(tc.want, InstallCommand, "scripts/install-chdb.sh", EnvLibPath) {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %s", w, msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
		})
	}
}

// TestTemporaryPath: a backend opened without a path works in a temporary
// directory that is removed when the session closes.
func TestTemporaryPath(t *testing.T) {
	b, err := Open(t.Context(), Options{Database: "temp"})
	if err != nil {
		t.Fatal(err)
	}
	dir := b.conn.path
	if !strings.HasPrefix(filepath.Base(dir), "chdb_") {
		t.Errorf("temporary directory %q", dir)
	}
	if err := b.Exec(t.Context(), "CREATE TABLE temp.t (x UInt8) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("while open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after close, %s: %v; want it removed", dir, err)
	}
}

// TestVersionMatchesInstaller: scripts/install-chdb.sh installs the
// library into a directory named by its version, where LibPath looks with
// Version: the two must agree.
func TestVersionMatchesInstaller(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "scripts", "install-chdb.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `CHDB_VERSION="` + Version + `"`; !strings.Contains(string(b), "\n"+want+"\n") {
		t.Errorf("scripts/install-chdb.sh does not set %s: chdbstore.Version and the installer disagree", want)
	}
}
