package compose_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file reads compose.yaml and maps what it gives each container —
// command lines, environment, configuration files, health checks — onto
// this host, where every container becomes a process (no container engine
// is needed). The mapping is one function, (*host).translate.

// composeFile is the part of the compose specification the tests read.
type composeFile struct {
	Name     string             `yaml:"name"`
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Networks map[string]any     `yaml:"networks"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       *build            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Profiles    []string     `yaml:"profiles"`
	User        string       `yaml:"user"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

// healthcheck is a service's compose health check.
type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

// deadline is how long compose waits before it declares the service
// unhealthy: start_period, then retries probes each interval apart, each
// allowed timeout.
func (h *healthcheck) deadline() (time.Duration, error) {
	var d [3]time.Duration
	for i, s := range []string{h.StartPeriod, h.Interval, h.Timeout} {
		if s == "" {
			continue
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("healthcheck duration %q: %w", s, err)
		}
		d[i] = v
	}
	return d[0] + time.Duration(max(h.Retries, 1))*(d[1]+d[2]), nil
}

// interpolation matches compose's variable references: $$, ${NAME},
// ${NAME:-default}, ${NAME-default} and $NAME.
var interpolation = regexp.MustCompile(`\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))`)

// interpolate substitutes compose's variables as `docker compose` does
// with env as its environment (the tests give it none, so that a
// developer's shell cannot change what runs: every default applies).
func interpolate(b []byte, env map[string]string) ([]byte, error) {
	out := interpolation.ReplaceAllFunc(b, func(ref []byte) []byte {
		m := interpolation.FindSubmatch(ref)
		if string(ref) == "$$" {
			return []byte("$")
		}
		name := string(m[1]) + string(m[4])
		v, set := env[name]
		switch string(m[2]) {
		case ":-":
			if v == "" {
				v = string(m[3])
			}
		case "-":
			if !set {
				v = string(m[3])
			}
		}
		return []byte(v)
	})
	if i := bytes.Index(out, []byte("${")); i >= 0 {
		end := min(len(out), i+40)
		return nil, fmt.Errorf("unsupported variable reference at %q", out[i:end])
	}
	return out, nil
}

func loadCompose(t testing.TB) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b, err = interpolate(b, nil); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// endpoint is a port of a container.
type endpoint struct {
	container string
	port      int
}

// mount is one volumes: entry of a container, resolved on this host.
type mount struct {
	target string // the path inside the container
	source string // the host path
}

// container is one container of the deployment as this host runs it.
type container struct {
	// name is the container's name: its compose service's, or a variant's
	// (a second container made from the same service, with its own
	// loopback ports and named volumes).
	name string
	// service is the compose service it is made from.
	service string
	mounts  []mount
}

// host is where the containers of compose.yaml run as processes. It owns
// the ports standing in for the containers' ports and the directories
// standing in for the named volumes.
type host struct {
	// composeDir is this directory (relative binds are relative to it);
	// secrets is the directory bound at ./secrets; root holds the named
	// volumes and the containers' own directories.
	composeDir, secrets, root string
	// services are the compose services, for addresses of the form
	// <service>:<port>.
	services []string
	address  *regexp.Regexp

	mu sync.Mutex
	// ports are the host ports standing in for container ports.
	ports map[endpoint]int
	// exposed are the ports a container listens on on every interface
	// (0.0.0.0:P); wanted the ones other containers reach (<service>:P),
	// with who wants them.
	exposed map[endpoint]bool
	wanted  map[endpoint][]string
	volumes map[string]string
}

// newHost returns a host for compose file c, whose ./secrets is secrets.
func newHost(t testing.TB, c composeFile, secrets string) *host {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{composeDir: dir, secrets: secrets, root: t.TempDir(),
		ports: map[endpoint]int{}, exposed: map[endpoint]bool{}, wanted: map[endpoint][]string{}, volumes: map[string]string{}}
	for name := range c.Services {
		h.services = append(h.services, name)
	}
	// Longest names first, so that nats-1 is not read as nats.
	sort.Slice(h.services, func(i, j int) bool { return len(h.services[i]) > len(h.services[j]) })
	names := []string{`0\.0\.0\.0`, `127\.0\.0\.1`, `localhost`}
	for _, s := range h.services {
		names = append(names, regexp.QuoteMeta(s))
	}
	h.address = regexp.MustCompile(`(^|[^A-Za-z0-9_.-])(` + strings.Join(names, "|") + `):([0-9]{1,5})\b`)
	return h
}

// container returns the container called name made from compose service
// svc (a variant when name is not svc), with its volumes resolved: a bind
// of ./secrets or below to the same place under h.secrets, another
// relative bind to its file in this directory, a named volume to a
// directory of its own (a variant's named volumes are its own too).
func (h *host) container(name, svc string, s service) (*container, error) {
	c := &container{name: name, service: svc}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || !strings.HasPrefix(parts[1], "/") {
			return nil, fmt.Errorf("%s: volume %q: want SOURCE:/TARGET[:MODE]", svc, v)
		}
		src, target := parts[0], filepath.Clean(parts[1])
		switch {
		case src == "./secrets" || strings.HasPrefix(src, "./secrets/"):
			src = filepath.Join(h.secrets, strings.TrimPrefix(src, "./secrets"))
		case strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/"):
			src = filepath.Join(h.composeDir, src)
		default:
			key := src
			if name != svc {
				key = name + "/" + src
			}
			h.mu.Lock()
			dir, ok := h.volumes[key]
			if !ok {
				dir = filepath.Join(h.root, "volumes", strings.ReplaceAll(key, "/", "_"))
				h.volumes[key] = dir
			}
			h.mu.Unlock()
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			src = dir
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("%s: volume %q: %w", svc, v, err)
		}
		c.mounts = append(c.mounts, mount{target: target, source: src})
	}
	// Longest targets first: the innermost bind wins.
	sort.Slice(c.mounts, func(i, j int) bool { return len(c.mounts[i].target) > len(c.mounts[j].target) })
	return c, nil
}

// dir is the container's own directory on the host (its working directory
// and HOME: the read-only root filesystem of the container).
func (h *host) dir(c *container) string {
	return filepath.Join(h.root, "containers", c.name)
}

// containerPath matches an absolute path where a value starts: at the
// start, after '=', ',', a quote or white space (so that the // of a URL
// is not one).
var containerPath = regexp.MustCompile(`(^|[\s=,"'])(/[^\s,"';:]*)`)

// translate rewrites s, something compose gives container c — an argument
// of its command, an environment value, a line of a configuration file it
// reads, a health check's address — into what it means on this host,
// where c is a process. Three rules, applied mechanically and nothing
// else:
//
//	(a) an absolute container path becomes the host path its volumes: entry
//	    binds (the innermost bind wins): ./secrets/<dir> → the test's
//	    secrets directory, ./<file> → this directory's file, a named volume
//	    → a directory of the host. A path no volume binds is an error:
//	    the container would not find it either.
//	(b) <service>:<port>, another container reached by its compose name,
//	    becomes 127.0.0.1:<the host port standing in for that container's
//	    port>; the target must listen on every interface (rule c's
//	    0.0.0.0), else the deployment cannot reach it (h.unreachable).
//	(c) a listen address of c itself — 0.0.0.0:P, 127.0.0.1:P or
//	    localhost:P — becomes 127.0.0.1:<the host port standing in for
//	    port P of c>. Every container has its own loopback, so two
//	    containers' 127.0.0.1:9090 are two host ports; 0.0.0.0:P also
//	    marks port P of c reachable by the others.
//
// A host port is chosen free once per container port and kept, so rules b
// and c agree: --listen=0.0.0.0:7400 of the issuer and https://issuer:7400
// of the admin are the same host port.
func (h *host) translate(c *container, s string) (string, error) {
	var errs []error
	s = replaceSubmatches(h.address, s, func(m []string) string {
		name, port := m[2], m[3]
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: port %q", c.name, port))
			return m[0]
		}
		ep := endpoint{container: c.name, port: p}
		switch name {
		case "0.0.0.0":
			h.mu.Lock()
			h.exposed[ep] = true
			h.mu.Unlock()
		case "127.0.0.1", "localhost":
		default:
			ep.container = name
			h.mu.Lock()
			if !slices.Contains(h.wanted[ep], c.name) {
				h.wanted[ep] = append(h.wanted[ep], c.name)
			}
			h.mu.Unlock()
		}
		hp, err := h.port(ep)
		if err != nil {
			errs = append(errs, err)
			return m[0]
		}
		return m[1] + "127.0.0.1:" + strconv.Itoa(hp)
	})
	s = replaceSubmatches(containerPath, s, func(m []string) string {
		p := filepath.Clean(m[2])
		for _, mt := range c.mounts {
			if p == mt.target {
				return m[1] + mt.source
			}
			if rest, ok := strings.CutPrefix(p, mt.target+"/"); ok {
				return m[1] + filepath.Join(mt.source, rest)
			}
		}
		errs = append(errs, fmt.Errorf("%s: container path %s is bound by none of its volumes", c.name, m[2]))
		return m[0]
	})
	if len(errs) > 0 {
		return "", errs[0]
	}
	return s, nil
}

// replaceSubmatches is ReplaceAllStringFunc with the submatches.
func replaceSubmatches(re *regexp.Regexp, s string, fn func(m []string) string) string {
	var b strings.Builder
	last := 0
	for _, loc := range re.FindAllStringSubmatchIndex(s, -1) {
		m := make([]string, len(loc)/2)
		for i := range m {
			if loc[2*i] >= 0 {
				m[i] = s[loc[2*i]:loc[2*i+1]]
			}
		}
		b.WriteString(s[last:loc[0]])
		b.WriteString(fn(m))
		last = loc[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// port returns the host port standing in for ep, choosing a free one the
// first time: below the kernel's ephemeral range (ip_local_port_range),
// so that neither an outgoing connection nor another test's listener on
// port 0 takes it before the container's process binds it.
func (h *host) port(ep endpoint) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.ports[ep]; ok {
		return p, nil
	}
	taken := map[int]bool{}
	for _, p := range h.ports {
		taken[p] = true
	}
	lo, hi := 20000, ephemeralLow()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if taken[p] {
			continue
		}
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			_ = ln.Close()
			h.ports[ep] = p
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port in [%d, %d) for %s:%d", lo, hi, ep.container, ep.port)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
			return n
		}
	}
	return 32768
}

// addr is the host address of a container's port, as its own processes
// reach it (rule c).
func (h *host) addr(c *container, port int) (string, error) {
	return h.translate(c, "127.0.0.1:"+strconv.Itoa(port))
}

// expose records that an image listens on every interface on port: what a
// container of an image the tests stand in for (ClickHouse, whoami) does
// by its own configuration, not by its command line.
func (h *host) expose(container string, port int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.exposed[endpoint{container: container, port: port}] = true
}

// want records that who reaches port of container (a port compose
// publishes to the host, say).
func (h *host) want(container string, port int, who string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ep := endpoint{container: container, port: port}
	h.wanted[ep] = append(h.wanted[ep], who)
}

// unreachable lists the container ports other containers reach (rule b)
// that their container does not listen on every interface for: in a real
// deployment those connections are refused.
func (h *host) unreachable() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for ep, who := range h.wanted {
		if !h.exposed[ep] {
			out = append(out, fmt.Sprintf("%s:%d (wanted by %s) is not a port %s listens on on every interface", ep.container, ep.port, strings.Join(who, ", "), ep.container))
		}
	}
	sort.Strings(out)
	return out
}

// includeLine is a nats-server configuration include.
var includeLine = regexp.MustCompile(`^(\s*include\s+)"([^"]+)"`)

// natsConfig translates the nats-server configuration that container c
// reads at the container path target into a copy in the host directory
// dir: each line but comments goes through translate. nats-server reads
// an include relative to the configuration's directory, whatever its
// form, so an include's container path (relative to target's directory)
// is translated and then written relative to dir.
func (h *host) natsConfig(c *container, target, dir, text string) (string, error) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "#") || strings.HasPrefix(t, "//") {
			continue
		}
		var err error
		if m := includeLine.FindStringSubmatch(l); m != nil {
			var p string
			if p, err = h.translate(c, filepath.Join(filepath.Dir(target), m[2])); err == nil {
				if p, err = filepath.Rel(dir, p); err == nil {
					l = m[1] + strconv.Quote(p) + l[len(m[0]):]
				}
			}
		} else {
			l, err = h.translate(c, l)
		}
		if err != nil {
			return "", fmt.Errorf("%s line %d: %w", target, i+1, err)
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n"), nil
}

// TestTranslate holds the translation to its three rules on values of
// the kinds compose.yaml has.
func TestTranslate(t *testing.T) {
	c := composeFile{Services: map[string]service{"issuer": {}, "nats-1": {}, "nats-2": {}, "admin": {}, "nats": {}}}
	h := newHost(t, c, t.TempDir())
	for _, d := range []string{"issuer", "admin"} {
		if err := os.MkdirAll(filepath.Join(h.secrets, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	issuer, err := h.container("issuer", "issuer", service{Volumes: []string{
		"./secrets/issuer:/run/secrets/cordon:ro", "./policy.yaml:/etc/cordon/policy.yaml:ro", "issuer-data:/var/lib/cordon",
	}})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := h.container("admin", "admin", service{Volumes: []string{"./secrets/admin:/run/secrets/cordon:ro"}})
	if err != nil {
		t.Fatal(err)
	}
	variant, err := h.container("issuer-variant", "issuer", service{Volumes: []string{"issuer-data:/var/lib/cordon"}})
	if err != nil {
		t.Fatal(err)
	}
	port := func(container string, p int) string {
		hp, err := h.port(endpoint{container, p})
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(hp)
	}
	for _, tc := range []struct {
		c        *container
		in, want string
	}{
		{issuer, "--nats-creds=/run/secrets/cordon/nats.nk", "--nats-creds=" + filepath.Join(h.secrets, "issuer", "nats.nk")},
		{admin, "/run/secrets/cordon/nats.nk", filepath.Join(h.secrets, "admin", "nats.nk")},
		{issuer, "--policy=/etc/cordon/policy.yaml", "--policy=" + filepath.Join(h.composeDir, "policy.yaml")},
		{issuer, "--data=/var/lib/cordon", "--data=" + h.volumes["issuer-data"]},
		{variant, "--data=/var/lib/cordon/", "--data=" + h.volumes["issuer-variant/issuer-data"]},
		{issuer, "--nats=tls://nats-1:4222,tls://nats-2:4222", "--nats=tls://127.0.0.1:" + port("nats-1", 4222) + ",tls://127.0.0.1:" + port("nats-2", 4222)},
		{issuer, "--listen=0.0.0.0:7400", "--listen=127.0.0.1:" + port("issuer", 7400)},
		{admin, "https://issuer:7400", "https://127.0.0.1:" + port("issuer", 7400)},
		{issuer, "--metrics-listen=127.0.0.1:9090", "--metrics-listen=127.0.0.1:" + port("issuer", 9090)},
		{admin, "http://localhost:9090/healthz", "http://127.0.0.1:" + port("admin", 9090) + "/healthz"},
		{variant, "--metrics-listen=127.0.0.1:9090", "--metrics-listen=127.0.0.1:" + port("issuer-variant", 9090)},
		{issuer, `  store_dir: "/var/lib/cordon/js"`, `  store_dir: "` + filepath.Join(h.volumes["issuer-data"], "js") + `"`},
		{issuer, "json", "json"},
		{issuer, "invoices:read", "invoices:read"},
		{issuer, "nats-route://nats-2:6222", "nats-route://127.0.0.1:" + port("nats-2", 6222)},
	} {
		got, err := h.translate(tc.c, tc.in)
		if err != nil {
			t.Errorf("%s: %q: %v", tc.c.name, tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: %q became %q, want %q", tc.c.name, tc.in, got, tc.want)
		}
	}
	if p1, p2 := port("issuer", 9090), port("admin", 9090); p1 == p2 {
		t.Error("two containers' loopback port 9090 are one host port")
	}
	for _, bad := range []string{"--routes=/etc/cordon/routes.yaml", "--data=/var/lib/cordonx", "x=/etc/passwd"} {
		if got, err := h.translate(issuer, bad); err == nil {
			t.Errorf("%q became %q: a path no volume binds must be an error", bad, got)
		}
	}
	// The admin reaches issuer:7400, which the issuer listens on on every
	// interface; the NATS ports nobody exposed.
	if got := h.unreachable(); len(got) != 3 || !strings.HasPrefix(got[0], "nats-1:4222") || !strings.HasPrefix(got[1], "nats-2:4222") || !strings.HasPrefix(got[2], "nats-2:6222") {
		t.Errorf("unreachable %q, want nats-1:4222, nats-2:4222 and nats-2:6222", got)
	}

	conf, err := h.container("nats-1", "nats-1", service{Volumes: []string{"./secrets/admin:/etc/nats/secrets:ro"}})
	if err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(h.root, "config", "nats-1")
	out, err := h.natsConfig(conf, "/etc/nats/nats.conf", confDir, "# listen on /everything\nlisten: \"0.0.0.0:4222\"\ninclude \"secrets/auth.conf\"\n")
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(confDir, filepath.Join(h.secrets, "admin", "auth.conf"))
	want := "# listen on /everything\nlisten: \"127.0.0.1:" + port("nats-1", 4222) + "\"\ninclude " + strconv.Quote(rel) + "\n"
	if out != want {
		t.Errorf("nats.conf became\n%s\nwant\n%s", out, want)
	}
	if len(h.unreachable()) != 2 {
		t.Errorf("after nats-1 listens on 0.0.0.0:4222: unreachable %q", h.unreachable())
	}

	for _, tc := range []struct{ in, want string }{
		{"image: cordon/cordon:${CORDON_VERSION:-dev}", "image: cordon/cordon:dev"},
		{"X: ${CORDON_ALERT_WEBHOOK:-}", "X: "},
		{"X: ${UNSET-x} $$HOME $UNSET.", "X: x $HOME ."},
	} {
		got, err := interpolate([]byte(tc.in), nil)
		if err != nil || string(got) != tc.want {
			t.Errorf("interpolate %q = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := interpolate([]byte("${NEEDED:?set it}"), nil); err == nil {
		t.Error("an unsupported reference was interpolated")
	}
}
