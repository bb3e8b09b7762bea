package compose_test

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/internal/natscluster"
)

// The images of deploy/compose/Dockerfile, as executables of this host:
// the cordon binary built exactly as the Dockerfile's build stage builds
// it, nats-server from the module go.mod pins (internal/natscluster's
// builder), and the setup scripts themselves.

// binaries are the executables the images run.
type binaries struct {
	// cordon is the binary of the cordon and setup images; natsServer the
	// nats-server image's.
	cordon, natsServer string
	// tags are the build tags the Dockerfile gives `go build` (CORDON_TAGS).
	tags string
}

var (
	buildOnce sync.Once
	built     binaries
	buildErr  error
	buildDir  string // removed by TestMain
)

// buildImages builds the binaries once per test process.
func buildImages(t testing.TB) binaries {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = buildBinaries() })
	if buildErr != nil {
		t.Fatalf("build the images' binaries: %v", buildErr)
	}
	return built
}

// dockerfile is what the tests read of deploy/compose/Dockerfile.
type dockerfile struct {
	// args are the ARG defaults.
	args map[string]string
	// stages by name, in order.
	stages map[string]*stage
}

// stage is one FROM … AS name of the Dockerfile.
type stage struct {
	name, from string
	env        map[string]string
	runs       []string // RUN instructions, continuation lines joined
	entrypoint []string
	cmd        []string
}

var (
	fromLine = regexp.MustCompile(`^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$`)
	argLine  = regexp.MustCompile(`^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?$`)
	envLine  = regexp.MustCompile(`^ENV\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)$`)
	runMount = regexp.MustCompile(`^(?:--\S+\s+)*`)
	argRef   = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// loadDockerfile parses the instructions the tests need.
func loadDockerfile(path string) (*dockerfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Logical instructions: continuation lines joined, comments dropped.
	var instructions []string
	var cont strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || (l == "" && cont.Len() == 0) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cont.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cont.WriteString(l)
		instructions = append(instructions, strings.TrimSpace(cont.String()))
		cont.Reset()
	}
	df := &dockerfile{args: map[string]string{}, stages: map[string]*stage{}}
	var cur *stage
	for _, ins := range instructions {
		keyword, rest, _ := strings.Cut(ins, " ")
		rest = strings.TrimSpace(rest)
		keyword = strings.ToUpper(keyword)
		if cur == nil && keyword != "FROM" && keyword != "ARG" {
			return nil, fmt.Errorf("%s: %q before the first FROM", path, ins)
		}
		switch keyword {
		case "FROM":
			m := fromLine.FindStringSubmatch(ins)
			if m == nil {
				return nil, fmt.Errorf("%s: cannot read %q", path, ins)
			}
			cur = &stage{name: m[2], from: m[1], env: map[string]string{}}
			df.stages[cur.name] = cur
		case "ARG":
			if m := argLine.FindStringSubmatch(ins); m != nil && m[2] != "" {
				df.args[m[1]] = m[2]
			}
		case "ENV":
			if m := envLine.FindStringSubmatch(ins); m != nil {
				cur.env[m[1]] = m[2]
			}
		case "RUN":
			cur.runs = append(cur.runs, runMount.ReplaceAllString(rest, ""))
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				return nil, fmt.Errorf("%s: %s %s: want the exec form: %v", path, keyword, rest, err)
			}
			if keyword == "CMD" {
				cur.cmd = v
			} else {
				cur.entrypoint = v
			}
		}
	}
	return df, nil
}

// image returns the entrypoint and command of a target, inherited from
// the stage it is built FROM when it sets none.
func (df *dockerfile) image(target string) (entrypoint, cmd []string, err error) {
	for s := df.stages[target]; s != nil; s = df.stages[s.from] {
		if entrypoint == nil {
			entrypoint = s.entrypoint
		}
		if cmd == nil {
			cmd = s.cmd
		}
	}
	if entrypoint == nil {
		return nil, nil, fmt.Errorf("Dockerfile target %q has no ENTRYPOINT", target)
	}
	return entrypoint, cmd, nil
}

// cordonBuild is the build stage's command that builds ./cmd/cordon into
// /out, with the ARG defaults substituted.
func (df *dockerfile) cordonBuild() (string, error) {
	b := df.stages["build"]
	if b == nil {
		return "", fmt.Errorf("the Dockerfile has no build stage")
	}
	for _, run := range b.runs {
		for _, c := range strings.Split(run, "&&") {
			c = strings.TrimSpace(c)
			if !strings.HasPrefix(c, "go build") || !strings.HasSuffix(c, " ./cmd/cordon") {
				continue
			}
			var missing []string
			c = argRef.ReplaceAllStringFunc(c, func(ref string) string {
				name := argRef.FindStringSubmatch(ref)[1]
				v, ok := df.args[name]
				if !ok {
					missing = append(missing, name)
				}
				return v
			})
			if len(missing) > 0 {
				return "", fmt.Errorf("the build of ./cmd/cordon uses ARG %v, which has no default", missing)
			}
			return c, nil
		}
	}
	return "", fmt.Errorf("the build stage has no `go build … ./cmd/cordon`")
}

// buildBinaries builds cordon with the build stage's own command (its
// ARG defaults, its ENV, /out replaced by a temporary directory) in the
// repository root, and finds nats-server with internal/natscluster.
func buildBinaries() (binaries, error) {
	df, err := loadDockerfile("Dockerfile")
	if err != nil {
		return binaries{}, err
	}
	command, err := df.cordonBuild()
	if err != nil {
		return binaries{}, err
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return binaries{}, err
	}
	if buildDir, err = os.MkdirTemp("", "cordon-compose-bin-"); err != nil {
		return binaries{}, err
	}
	command = strings.ReplaceAll(command, "/out/", buildDir+"/")
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if _, err := exec.LookPath("go"); err != nil {
		cmd.Env = append(cmd.Env, "PATH="+filepath.Join(runtime.GOROOT(), "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	for k, v := range df.stages["build"].env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, fmt.Errorf("%s (in %s): %w\n%s", command, root, err, out)
	}
	b := binaries{cordon: filepath.Join(buildDir, "cordon"), tags: df.args["CORDON_TAGS"]}
	info, err := buildinfo.ReadFile(b.cordon)
	if err != nil {
		return binaries{}, fmt.Errorf("built cordon: %w", err)
	}
	for _, s := range info.Settings {
		if s.Key == "-tags" && s.Value != b.tags {
			return binaries{}, fmt.Errorf("built cordon with tags %q, the Dockerfile's CORDON_TAGS default is %q", s.Value, b.tags)
		}
	}
	if b.natsServer, err = natscluster.Binary(); err != nil {
		return binaries{}, err
	}
	return b, nil
}

// executable is the host file an image's entrypoint names: cordon and
// nats-server are the binaries built above, the setup image's setup.sh is
// the script of this directory (the Dockerfile copies it).
func (b binaries) executable(name string) (string, error) {
	switch name {
	case "cordon":
		return b.cordon, nil
	case "nats-server":
		return b.natsServer, nil
	case "setup.sh":
		return filepath.Abs("setup.sh")
	}
	return "", fmt.Errorf("no host executable for the image entrypoint %q", name)
}

// TestImagesBuild: the binaries build as the Dockerfile builds them, with
// its CORDON_TAGS default (the server images carry no chDB).
func TestImagesBuild(t *testing.T) {
	b := buildImages(t)
	if b.tags != "nochdb" {
		t.Errorf("CORDON_TAGS defaults to %q, want nochdb (the server images talk to a ClickHouse server)", b.tags)
	}
	out, err := exec.Command(b.cordon, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("cordon version: %v\n%s", err, out)
	}
	df, err := loadDockerfile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]string{"cordon": "cordon", "nats-server": "nats-server", "setup": "setup.sh"} {
		ep, _, err := df.image(target)
		if err != nil {
			t.Fatal(err)
		}
		if ep[0] != want {
			t.Errorf("target %s runs %q, want %s", target, ep[0], want)
		}
		if _, err := b.executable(ep[0]); err != nil {
			t.Error(err)
		}
	}
}
