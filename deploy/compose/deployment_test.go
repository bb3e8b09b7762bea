package compose_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/chshim"
	"github.com/cordonhq/cordon/internal/natstest"
)

// deployment is compose.yaml's services running as processes of this
// host: the cordon and nats-server containers as the binaries their
// images run, ClickHouse and the demo upstream as servers of the test
// (chshim on chDB, an echo server). `docker compose up` with no container
// engine.
type deployment struct {
	bins    binaries
	compose composeFile
	df      *dockerfile
	h       *host
	// secrets is the directory bound at ./secrets.
	secrets string

	containers map[string]*container
	// procs are the processes of the deployment's containers, by name;
	// variants are the extra containers tests start (and expect to exit).
	procs    map[string]*proc
	variants []*proc
	// killed are the containers a test killed on purpose (kill).
	killed map[string]bool
	// healthy probes a container as its compose health check does.
	healthy map[string]func() error
	// deadline is how long compose waits for a container to be healthy.
	deadline map[string]time.Duration
	order    []string

	shim     *chshim.Server
	shimSrv  *http.Server
	upstream *echoServer
}

// proc is one container's process.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error // the process's exit, once done is closed
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// whoamiPort is where traefik/whoami listens, on every interface (the
// image's default; compose.yaml gives it no flag).
const whoamiPort = 80

// startDeployment runs the compose setup service into a temporary
// secrets directory and starts every service compose.yaml starts (those
// in no profile), each once its depends_on conditions hold, as `docker
// compose up` does; it returns once every service with a health check is
// healthy. Everything stops when the test ends; on failure each process's
// last log lines are printed.
func startDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{bins: buildImages(t), compose: loadCompose(t), containers: map[string]*container{},
		procs: map[string]*proc{}, healthy: map[string]func() error{}, deadline: map[string]time.Duration{}}
	var err error
	if d.df, err = loadDockerfile("Dockerfile"); err != nil {
		t.Fatal(err)
	}
	d.secrets = filepath.Join(t.TempDir(), "secrets")
	setupSecrets(t, d.bins, d.compose, d.secrets)
	d.h = newHost(t, d.compose, d.secrets)
	t.Cleanup(func() {
		if t.Failed() {
			d.dumpLogs(t)
		}
	})
	t.Cleanup(d.stopAll)

	// Translate every container first, so that each address is known
	// before anything starts: those of a profile too (the admin's
	// addresses must be reachable), and the ports published to the host.
	specs := map[string]*procSpec{}
	for name, s := range d.compose.Services {
		if slices.Contains(s.Profiles, "setup") {
			continue // it ran
		}
		if len(s.Profiles) == 0 {
			d.order = append(d.order, name)
		}
		if s.Build != nil {
			spec, err := d.spec(name, name, s)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Profiles) == 0 {
				specs[name] = spec
			}
		}
		for _, p := range s.Ports {
			port, err := strconv.Atoi(p[strings.LastIndex(p, ":")+1:])
			if err != nil {
				t.Fatalf("%s: ports %q: %v", name, p, err)
			}
			d.h.want(name, port, fmt.Sprintf("the host (ports: %q)", p))
		}
	}
	d.order, err = startOrder(d.compose, d.order)
	if err != nil {
		t.Fatal(err)
	}
	standIn := map[string]func(*testing.T, string, service) error{
		"clickhouse/clickhouse-server": d.startClickHouse,
		"traefik/whoami":               d.startUpstream,
	}
	// The stand-ins start first (nothing they stand in for depends on
	// anything): what they listen on comes from their configuration.
	for _, name := range d.order {
		s := d.compose.Services[name]
		if s.Build != nil {
			continue
		}
		image, _, _ := strings.Cut(s.Image, ":")
		start, ok := standIn[image]
		if !ok {
			t.Fatalf("%s: no stand-in for image %s", name, s.Image)
		}
		if len(s.DependsOn) > 0 {
			t.Fatalf("%s: a stand-in's dependencies are not waited for", name)
		}
		if err := start(t, name, s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := d.setHealthcheck(name, d.containers[name], s.Healthcheck); err != nil {
			t.Fatal(err)
		}
	}
	if u := d.h.unreachable(); len(u) > 0 {
		t.Fatalf("containers reach ports nobody listens on from the network:\n%s", strings.Join(u, "\n"))
	}

	for _, name := range d.order {
		s := d.compose.Services[name]
		for _, dep := range slices.Sorted(maps.Keys(s.DependsOn)) {
			switch cond := s.DependsOn[dep].Condition; cond {
			case "service_healthy":
				d.waitHealthy(t, dep)
			case "service_started", "":
			default:
				t.Fatalf("%s depends on %s with condition %q, which the test does not know", name, dep, cond)
			}
		}
		if spec := specs[name]; spec != nil {
			d.procs[name] = d.run(t, spec)
		}
	}
	for _, name := range d.order {
		if d.healthy[name] != nil {
			d.waitHealthy(t, name)
		}
	}
	return d
}

// startOrder orders names so that each comes after what it depends on
// (alphabetically among equals).
func startOrder(c composeFile, names []string) ([]string, error) {
	sort.Strings(names)
	var out []string
	done := map[string]bool{}
	for len(out) < len(names) {
		progress := false
		for _, n := range names {
			if done[n] {
				continue
			}
			ready := true
			for dep := range c.Services[n].DependsOn {
				if !slices.Contains(names, dep) {
					return nil, fmt.Errorf("%s depends on %s, which does not start", n, dep)
				}
				ready = ready && done[dep]
			}
			if ready {
				out = append(out, n)
				done[n] = true
				progress = true
			}
		}
		if !progress {
			return nil, fmt.Errorf("depends_on has a cycle among %v", names)
		}
	}
	return out, nil
}

// procSpec is how a container runs as a process.
type procSpec struct {
	ctr  *container
	exe  string
	args []string
	env  []string
}

// spec translates container name, made from compose service svc (s),
// into a process: its image's entrypoint as the host executable, the
// service's command (or the image's CMD) and environment translated, and
// a nats-server's configuration (-c) translated into a copy.
func (d *deployment) spec(name, svc string, s service) (*procSpec, error) {
	ctr, err := d.h.container(name, svc, s)
	if err != nil {
		return nil, err
	}
	d.containers[name] = ctr
	entrypoint, cmd, err := d.df.image(s.Build.Target)
	if err != nil {
		return nil, err
	}
	if len(s.Command) > 0 {
		cmd = s.Command
	}
	exe, err := d.bins.executable(entrypoint[0])
	if err != nil {
		return nil, err
	}
	args := append(slices.Clone(entrypoint[1:]), cmd...)
	for i := 0; i < len(args); i++ {
		if entrypoint[0] == "nats-server" && (args[i] == "-c" || args[i] == "--config") && i+1 < len(args) {
			i++
			if args[i], err = d.natsConfigFile(ctr, args[i]); err != nil {
				return nil, err
			}
			continue
		}
		if args[i], err = d.h.translate(ctr, args[i]); err != nil {
			return nil, err
		}
	}
	dir := d.h.dir(ctr)
	tmp := filepath.Join(d.h.root, "tmp", name) // the container's tmpfs /tmp
	for _, p := range []string{dir, tmp} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, err
		}
	}
	// What a container's process finds besides compose's environment.
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "TMPDIR=" + tmp, "TZ=UTC"}
	for _, k := range slices.Sorted(maps.Keys(s.Environment)) {
		v, err := d.h.translate(ctr, s.Environment[k])
		if err != nil {
			return nil, fmt.Errorf("%s: environment %s: %w", name, k, err)
		}
		env = append(env, k+"="+v)
	}
	if name == svc {
		if err := d.setHealthcheck(name, ctr, s.Healthcheck); err != nil {
			return nil, err
		}
	}
	return &procSpec{ctr: ctr, exe: exe, args: args, env: env}, nil
}

// natsConfigFile translates the configuration at the container path
// target into a file of the host and returns its path.
func (d *deployment) natsConfigFile(ctr *container, target string) (string, error) {
	src, err := d.h.translate(ctr, target)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(d.h.root, "config", ctr.name, filepath.Base(target))
	out, err := d.h.natsConfig(ctr, target, filepath.Dir(dst), string(b))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, []byte(out), 0o600)
}

var devTCP = regexp.MustCompile(`/dev/tcp/([^/\s]+)/([0-9]+)`)

// setHealthcheck turns a compose health check into a probe of the same
// address: `wget … URL` is a GET of the translated URL that must answer
// 2xx (without verifying the certificate when wget is told
// --no-check-certificate), bash's /dev/tcp/HOST/PORT a TCP connection.
// Each probe has the check's timeout; the deadline is compose's.
func (d *deployment) setHealthcheck(name string, ctr *container, hc *healthcheck) error {
	if hc == nil {
		return nil
	}
	deadline, err := hc.deadline()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	timeout := 3 * time.Second
	if hc.Timeout != "" {
		timeout, _ = time.ParseDuration(hc.Timeout)
	}
	d.deadline[name] = deadline
	for _, a := range hc.Test {
		if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
			u, err := d.h.translate(ctr, a)
			if err != nil {
				return err
			}
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: slices.Contains(hc.Test, "--no-check-certificate")}} //nolint:gosec // wget --no-check-certificate
			client := &http.Client{Timeout: timeout, Transport: tr}
			d.healthy[name] = func() error {
				resp, err := client.Get(u)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					return fmt.Errorf("GET %s: %s", u, resp.Status)
				}
				return nil
			}
			return nil
		}
		if m := devTCP.FindStringSubmatch(a); m != nil {
			addr, err := d.h.translate(ctr, m[1]+":"+m[2])
			if err != nil {
				return err
			}
			d.healthy[name] = func() error {
				c, err := net.DialTimeout("tcp", addr, timeout)
				if err != nil {
					return err
				}
				return c.Close()
			}
			return nil
		}
	}
	return fmt.Errorf("%s: health check %q: neither a URL nor /dev/tcp", name, hc.Test)
}

// waitHealthy waits until container name passes its health check, within
// compose's deadline; a process of the deployment that ends meanwhile
// fails the test.
func (d *deployment) waitHealthy(t *testing.T, name string) {
	t.Helper()
	probe := d.healthy[name]
	if probe == nil {
		t.Fatalf("%s has no health check to wait for", name)
	}
	d.waitFor(t, name+" healthy", d.deadline[name], probe)
}

// waitFor polls fn until it returns nil (natstest.WaitFor), failing the
// test at once when a process of the deployment has ended.
func (d *deployment) waitFor(t *testing.T, what string, timeout time.Duration, fn func() error) {
	t.Helper()
	violations := paced(time.Second, d.violations)
	natstest.WaitFor(t, timeout, func() error {
		d.checkAlive(t)
		if err := violations(); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// checkAlive fails the test when a process of the deployment has ended.
func (d *deployment) checkAlive(t *testing.T) {
	t.Helper()
	for _, name := range d.order {
		if p := d.procs[name]; p != nil && p.exited() && !d.killed[name] {
			t.Fatalf("%s exited early (%v); its last log lines:\n%s", name, p.err, p.tail(40))
		}
	}
}

// kill ends container name's process with SIGKILL, as a crash of its
// host would, and waits for it to end; checkAlive then lets it be.
func (d *deployment) kill(t *testing.T, name string) {
	t.Helper()
	p := d.procs[name]
	if p == nil {
		t.Fatalf("no process %s to kill", name)
	}
	if d.killed == nil {
		d.killed = map[string]bool{}
	}
	d.killed[name] = true
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !p.exited() {
		t.Fatalf("kill %s: %v", name, err)
	}
	<-p.done
}

// run starts a process; it is killed if this test process dies.
func (d *deployment) run(t *testing.T, s *procSpec) *proc {
	t.Helper()
	logDir := filepath.Join(d.h.root, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: s.ctr.name, log: filepath.Join(logDir, s.ctr.name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(s.exe, s.args...)
	p.cmd.Dir = d.h.dir(s.ctr)
	p.cmd.Env = s.env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startLocked(p.cmd); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Logf("started %s: %s %s", p.name, filepath.Base(s.exe), strings.Join(s.args, " "))
	return p
}

// forker starts processes from one OS thread that lives as long as the
// test process: the kernel sends a child its Pdeathsig when the thread
// that started it ends, and the Go runtime may end other threads.
var forker struct {
	once sync.Once
	reqs chan forkRequest
}

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startLocked starts cmd on the forker's thread.
func startLocked(cmd *exec.Cmd) error {
	forker.once.Do(func() {
		forker.reqs = make(chan forkRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the process
			for r := range forker.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	r := forkRequest{cmd: cmd, done: make(chan error)}
	forker.reqs <- r
	return <-r.done
}

// paced calls fn at most once per every and otherwise returns its last
// result, so that polling at natstest.WaitFor's pace does not flood a
// service (each request to the enforcer is a usage event).
func paced(every time.Duration, fn func() error) func() error {
	var last time.Time
	err := errors.New("not tried yet")
	return func() error {
		if time.Since(last) >= every {
			last = time.Now()
			err = fn()
		}
		return err
	}
}

// all is every process, variants included.
func (d *deployment) all() []*proc {
	var out []*proc
	for i := len(d.order) - 1; i >= 0; i-- {
		if p := d.procs[d.order[i]]; p != nil {
			out = append(out, p)
		}
	}
	return append(out, d.variants...)
}

// stopAll stops every process: SIGTERM, and SIGKILL for one still running
// half a minute later.
func (d *deployment) stopAll() {
	var wg sync.WaitGroup
	for _, p := range d.all() {
		if p.exited() {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}()
	}
	wg.Wait()
	if d.upstream != nil {
		_ = d.upstream.srv.Close()
	}
	if d.shimSrv != nil {
		_ = d.shimSrv.Close()
		_ = d.shim.Close()
	}
}

// violations returns an error listing the NATS permission violations any
// process logged (nats-server logs each one), nil without any.
func (d *deployment) violations() error {
	var found []string
	for name, text := range d.logs() {
		for _, l := range strings.Split(text, "\n") {
			if permissionViolation.MatchString(l) {
				found = append(found, name+": "+l)
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	sort.Strings(found)
	return fmt.Errorf("%d NATS permission violations:\n%s", len(found), strings.Join(found, "\n"))
}

// dumpLogs prints each process's last log lines.
func (d *deployment) dumpLogs(t *testing.T) {
	for _, p := range d.all() {
		t.Logf("--- %s (%v) last log lines:\n%s", p.name, p.err, p.tail(30))
	}
}

// permissionViolation is how nats-server logs a permission violation.
var permissionViolation = regexp.MustCompile(`(?i)permissions? violation`)

// logs returns the whole log of each process of the deployment, by name.
func (d *deployment) logs() map[string]string {
	out := map[string]string{}
	for _, p := range d.all() {
		b, _ := os.ReadFile(p.log)
		out[p.name] = string(b)
	}
	return out
}

// variant starts a second container made from compose service svc, with
// its own loopback ports and named volumes, and its command's flag --drop
// removed; it is not one the deployment waits for.
func (d *deployment) variant(t *testing.T, svc, drop string) *proc {
	t.Helper()
	s := d.compose.Services[svc]
	var cmd []string
	for _, a := range s.Command {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && name == drop {
			continue
		}
		cmd = append(cmd, a)
	}
	if len(cmd) == len(s.Command) {
		t.Fatalf("%s's command has no --%s", svc, drop)
	}
	s.Command = cmd
	spec, err := d.spec(svc+"-without-"+drop, svc, s)
	if err != nil {
		t.Fatal(err)
	}
	p := d.run(t, spec)
	d.variants = append(d.variants, p)
	return p
}

// cordon runs the cordon binary as container name (a service of a
// profile, such as admin: `docker compose run --rm -T admin ARGS`) with
// its translated environment and stdin, and returns its stdout; stderr
// goes into the error when it fails.
func (d *deployment) cordon(ctx context.Context, name string, stdin io.Reader, args ...string) ([]byte, error) {
	spec, err := d.spec(name, name, d.compose.Services[name])
	if err != nil {
		return nil, err
	}
	// The arguments are the operator's, written for this host (the
	// README's /dev/stdin is a device of every container and host).
	cmd := exec.CommandContext(ctx, spec.exe, args...)
	cmd.Dir, cmd.Env, cmd.Stdin = d.h.dir(spec.ctr), spec.env, stdin
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// echoServer stands in for traefik/whoami: it answers every request with
// the request it got, and records them.
type echoServer struct {
	srv  *http.Server
	mu   sync.Mutex
	seen []*http.Request
}

// requests returns the requests served so far.
func (e *echoServer) requests() []*http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.seen)
}

func (d *deployment) startUpstream(t *testing.T, name string, s service) error {
	ctr, err := d.h.container(name, name, s)
	if err != nil {
		return err
	}
	d.containers[name] = ctr
	addr, err := d.h.addr(ctr, whoamiPort)
	if err != nil {
		return err
	}
	d.h.expose(name, whoamiPort)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	e := &echoServer{}
	e.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.seen = append(e.seen, r.Clone(context.Background()))
		e.mu.Unlock()
		fmt.Fprintf(w, "Hostname: %s\n%s %s %s\nHost: %s\n", name, r.Method, r.URL.RequestURI(), r.Proto, r.Host)
		for _, k := range slices.Sorted(maps.Keys(r.Header)) {
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
		}
	})}
	go func() { _ = e.srv.Serve(ln) }()
	d.upstream = e
	return nil
}

// startClickHouse stands in for the ClickHouse server with chshim on
// chDB, configured from what the container mounts and its environment,
// as the image would be: HTTPS on the https_port of its config.d, with
// the certificate named there; the user of CLICKHOUSE_USER with the
// password of CLICKHOUSE_PASSWORD_FILE (the image's entrypoint makes that
// user and removes "default"); the users of its users.d, with password
// hashes substituted from include_from.
func (d *deployment) startClickHouse(t *testing.T, name string, s service) error {
	ctr, err := d.h.container(name, name, s)
	if err != nil {
		return err
	}
	d.containers[name] = ctr
	read := func(containerPath string) ([]byte, error) {
		p, err := d.h.translate(ctr, containerPath)
		if err != nil {
			return nil, err
		}
		return os.ReadFile(p)
	}
	var conf, users []xmlNode
	for _, m := range ctr.mounts {
		dir := filepath.Dir(m.target)
		if dir != "/etc/clickhouse-server/config.d" && dir != "/etc/clickhouse-server/users.d" {
			continue
		}
		b, err := os.ReadFile(m.source)
		if err != nil {
			return err
		}
		var n xmlNode
		if err := xml.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("%s: %w", m.target, err)
		}
		if strings.HasSuffix(dir, "config.d") {
			conf = append(conf, n)
		} else {
			users = append(users, n)
		}
	}
	text := func(names ...string) string {
		for _, n := range conf {
			cur, ok := n, true
			for _, name := range names {
				if cur, ok = cur.child(name); !ok {
					break
				}
			}
			if ok {
				return strings.TrimSpace(cur.Text)
			}
		}
		return ""
	}
	httpsPort, err := strconv.Atoi(text("https_port"))
	if err != nil {
		return fmt.Errorf("config.d: https_port %q: %w", text("https_port"), err)
	}
	if lh := text("listen_host"); lh == "0.0.0.0" || lh == "::" {
		d.h.expose(name, httpsPort)
	}
	certPEM, err := read(text("openSSL", "server", "certificateFile"))
	if err != nil {
		return err
	}
	keyPEM, err := read(text("openSSL", "server", "privateKeyFile"))
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}

	accounts := map[string]chshim.User{}
	user := s.Environment["CLICKHOUSE_USER"]
	if user == "" {
		user = "default"
	}
	password := s.Environment["CLICKHOUSE_PASSWORD"]
	if f := s.Environment["CLICKHOUSE_PASSWORD_FILE"]; f != "" {
		b, err := read(f)
		if err != nil {
			return fmt.Errorf("CLICKHOUSE_PASSWORD_FILE: %w", err)
		}
		password = strings.TrimRight(string(b), "\n") // as the entrypoint's $(cat …)
	}
	accounts[user] = chshim.User{Password: password}
	substitutions := map[string]string{}
	if inc := text("include_from"); inc != "" {
		b, err := read(inc)
		if err != nil {
			return fmt.Errorf("include_from: %w", err)
		}
		var n xmlNode
		if err := xml.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("include_from %s: %w", inc, err)
		}
		for _, c := range n.Children {
			substitutions[c.XMLName.Local] = strings.TrimSpace(c.Text)
		}
	}
	for _, f := range users {
		us, ok := f.child("users")
		if !ok {
			continue
		}
		for _, u := range us.Children {
			var acc chshim.User
			if p, ok := u.child("password"); ok {
				acc.Password = strings.TrimSpace(p.Text)
			}
			if p, ok := u.child("password_sha256_hex"); ok {
				acc.PasswordSHA256Hex = strings.TrimSpace(p.Text)
				if incl := p.attr("incl"); incl != "" {
					// A missing substitution leaves the hash empty: that
					// user cannot log in.
					acc.PasswordSHA256Hex = substitutions[incl]
					if acc.PasswordSHA256Hex == "" {
						acc.PasswordSHA256Hex = "-"
					}
				}
			}
			accounts[u.XMLName.Local] = acc
		}
	}

	addr, err := d.h.addr(ctr, httpsPort)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	d.shim = chshim.New(chshim.Options{Path: chdbPath, Users: accounts})
	srv := &http.Server{Handler: d.shim, ReadHeaderTimeout: 10 * time.Second,
		// The health check's bare TCP connections are no TLS errors.
		ErrorLog:  log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	d.shimSrv = srv
	return nil
}

// jsonLines reports whether text holds a JSON log record (an object with a
// level), as zerolog writes with CORDON_LOG_FORMAT=json.
func jsonLines(text string) bool {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["level"] != nil {
			return true
		}
	}
	return false
}

// errStillRunning is what waiting for a process that runs returns.
var errStillRunning = errors.New("still running")
