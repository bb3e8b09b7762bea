package chdbenv

import (
	"bytes"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const lib = "/chdb/" + Version + "/libchdb.so"
	tests := []struct {
		name     string
		env      map[string]string
		present  []string
		wantPath string
		wantOK   bool
		looked   []string
	}{
		{"env wins", map[string]string{"CHDB_LIB_PATH": "/x/libchdb.so", "HOME": "/h"}, []string{"/x/libchdb.so", "/h/.cache/cordon" + lib}, "/x/libchdb.so", true, nil},
		{"env set but missing", map[string]string{"CHDB_LIB_PATH": "/x/libchdb.so", "HOME": "/h"}, []string{"/h/.cache/cordon" + lib}, "/x/libchdb.so", false, []string{"CHDB_LIB_PATH=/x/libchdb.so"}},
		{"CORDON_CACHE first", map[string]string{"CORDON_CACHE": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}, []string{"/c" + lib, "/x/cordon" + lib}, "/c" + lib, true, nil},
		{"XDG_CACHE_HOME next", map[string]string{"XDG_CACHE_HOME": "/x", "HOME": "/h"}, []string{"/x/cordon" + lib, "/h/.cache/cordon" + lib}, "/x/cordon" + lib, true, nil},
		{"HOME last", map[string]string{"HOME": "/h"}, []string{"/h/.cache/cordon" + lib}, "/h/.cache/cordon" + lib, true, nil},
		{"system library", map[string]string{"HOME": "/h"}, []string{SystemLibPath}, SystemLibPath, true, nil},
		{"nothing", map[string]string{"HOME": "/h"}, nil, "", false, []string{"CHDB_LIB_PATH (unset)", "/h/.cache/cordon" + lib, SystemLibPath}},
		{"no cache variables", map[string]string{}, nil, "", false, []string{"CORDON_CACHE, XDG_CACHE_HOME and HOME are unset"}},
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

// TestProgram builds a real program that imports the chDB backend and runs
// it with different environments: it must find the library in the cache of
// HOME with CHDB_LIB_PATH unset, and exit 3 with the install command (not a
// panic) when there is no library anywhere.
func TestProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a program")
	}
	// This test process got here, so chdbenv's init found a library.
	libPath, ok := LibPath()
	if !ok {
		t.Fatalf("no chDB library: run `%s`", InstallCommand)
	}
	root := moduleRoot(t)
	// The program must live inside the module to import its packages; a
	// directory starting with "_" is ignored by ./... patterns.
	dir, err := os.MkdirTemp(root, "_chdbenv_test_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	prog := `package main

import (
	"context"
	"fmt"
	"os"

	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

func main() {
	b, err := chdbstore.Open(context.Background(), chdbstore.Options{Path: os.Args[1], Database: "probe"})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	defer b.Close()
	out, err := b.Query(context.Background(), "SELECT 40 + 2 AS answer", nil)
	if err != nil {
		fmt.Println("query:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\n%s\n", os.Getenv("CHDB_LIB_PATH"), out)
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(prog), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "probe")
	build := exec.Command(goTool(), "build", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A home whose cache holds the library (a symlink to the real one).
	home := t.TempDir()
	cached := filepath.Join(home, ".cache", "cordon", "chdb", Version, "libchdb.so")
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(libPath, cached); err != nil {
		t.Fatal(err)
	}
	emptyHome := t.TempDir()
	_, systemLib := os.Stat(SystemLibPath)

	tests := []struct {
		name     string
		env      []string
		skip     bool
		wantCode int
		wantOut  []string
	}{
		{"cache under HOME", []string{"HOME=" + home}, false, 0, []string{cached, `"answer"`, "42"}},
		{"CORDON_CACHE", []string{"HOME=" + emptyHome, "CORDON_CACHE=" + filepath.Join(home, ".cache", "cordon")}, false, 0, []string{cached, "42"}},
		{"no library", []string{"HOME=" + emptyHome}, systemLib == nil, ExitCode, []string{"make chdb", "scripts/install-chdb.sh", emptyHome}},
		{"CHDB_LIB_PATH missing", []string{"HOME=" + home, "CHDB_LIB_PATH=" + filepath.Join(emptyHome, "nope.so")}, false, ExitCode, []string{"make chdb", "nope.so"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skipf("%s exists on this machine", SystemLibPath)
			}
			cmd := exec.Command(bin, t.TempDir())
			cmd.Env = append(cleanEnv(), tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			out := stdout.String() + stderr.String()
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.wantCode, out)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("output shows a panic:\n%s", out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// cleanEnv is the test's environment without the variables that locate the
// library.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CHDB_LIB_PATH", "CORDON_CACHE", "XDG_CACHE_HOME", "HOME":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// TestImportsOnlyOS guards the init-order argument of the package comment:
// any import besides "os" could let chdb-go's init run first.
func TestImportsOnlyOS(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			if imp.Path.Value != `"os"` {
				t.Errorf("%s imports %s: chdbenv may import only \"os\"", f, imp.Path.Value)
			}
		}
	}
}
