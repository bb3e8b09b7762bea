package privdir_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cordonhq/cordon/pkg/privdir"
)

func TestEnsure(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  privdir.Result
		mode  fs.FileMode
	}{
		{"missing is created 0700", func(*testing.T, string) {}, privdir.Result{Created: true}, 0o700},
		{"0755 is tightened", func(t *testing.T, dir string) { mkdir(t, dir, 0o755) }, privdir.Result{Tightened: true, Was: 0o755}, 0o700},
		{"0777 is tightened", func(t *testing.T, dir string) { mkdir(t, dir, 0o777) }, privdir.Result{Tightened: true, Was: 0o777}, 0o700},
		{"0710 is tightened", func(t *testing.T, dir string) { mkdir(t, dir, 0o710) }, privdir.Result{Tightened: true, Was: 0o710}, 0o700},
		{"0700 is kept", func(t *testing.T, dir string) { mkdir(t, dir, 0o700) }, privdir.Result{}, 0o700},
		{"owner-only 0500 is kept", func(t *testing.T, dir string) { mkdir(t, dir, 0o500) }, privdir.Result{}, 0o500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "data")
			c.setup(t, dir)
			got, err := privdir.Ensure(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("result %+v, want %+v", got, c.want)
			}
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != c.mode {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), c.mode)
			}
			os.Chmod(dir, 0o700) // let the cleanup remove it
		})
	}
}

func TestEnsureRefuses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := privdir.Ensure(file); !errors.Is(err, privdir.ErrNotDir) {
		t.Errorf("a file: %v, want ErrNotDir", err)
	}
	if _, err := privdir.Ensure(""); err == nil {
		t.Error("empty path accepted")
	}
}

func mkdir(t *testing.T, dir string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLockExcludesASecondHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := privdir.Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := privdir.Lock(path); runtime.GOOS != "windows" && !errors.Is(err, privdir.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	unlock()
	again, err := privdir.Lock(path)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	again()
}
