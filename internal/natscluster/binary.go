package natscluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// ServerModule is the Go module the nats-server binary is built from: the
// same server Cordon embeds, at the version go.mod pins.
const ServerModule = "github.com/nats-io/nats-server/v2"

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// Binary returns the path of a nats-server binary for the cluster, found
// in this order:
//
//  1. $CORDON_NATS_SERVER (any nats-server 2.10+, e.g. Debian's), used as is;
//  2. bin/nats-server at the module root (scripts/build-nats-server.sh),
//     when its version is the one go.mod pins;
//  3. a copy built once with `go build` from the pinned module into the
//     user cache ($CORDON_CACHE or $XDG_CACHE_HOME/cordon, then
//     nats-server/<version>/nats-server).
func Binary() (string, error) {
	binaryOnce.Do(func() { binaryPath, binaryErr = findBinary() })
	return binaryPath, binaryErr
}

func findBinary() (string, error) {
	if p := os.Getenv("CORDON_NATS_SERVER"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("$CORDON_NATS_SERVER: %w", err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	want, err := pinnedVersion(root)
	if err != nil {
		return "", err
	}
	local := filepath.Join(root, "bin", "nats-server")
	if versionOf(local) == want {
		return local, nil
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	cached := filepath.Join(cache, "nats-server", want, "nats-server")
	if versionOf(cached) == want {
		return cached, nil
	}
	if err := build(root, cached, want); err != nil {
		return "", err
	}
	return cached, nil
}

// pinnedVersion is the nats-server/v2 version this program was built
// with, or (test binaries carry no module list) the one go.mod requires.
func pinnedVersion(root string) (string, error) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == ServerModule {
				if d.Replace != nil {
					return d.Replace.Version, nil
				}
				return d.Version, nil
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("nats-server version: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == ServerModule {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("nats-server version: %s is not required by %s/go.mod", ServerModule, root)
}

// versionOf runs `bin --version` ("nats-server: v2.15.2"); "" if it fails.
func versionOf(bin string) string {
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return ""
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return ""
	}
	return f[len(f)-1]
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

func cacheDir() (string, error) {
	if d := os.Getenv("CORDON_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	return filepath.Join(d, "cordon"), nil
}

// build compiles the server from the module into out, atomically.
func build(root, out, want string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("build nats-server: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".nats-server.*")
	if err != nil {
		return fmt.Errorf("build nats-server: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	goBin := "go"
	if _, err := exec.LookPath(goBin); err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp.Name(), ServerModule)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build nats-server (%s build %s in %s): %w\n%s", goBin, ServerModule, root, err, msg)
	}
	if got := versionOf(tmp.Name()); got != want {
		return fmt.Errorf("build nats-server: built %q, want %s", got, want)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("build nats-server: %w", err)
	}
	return nil
}
