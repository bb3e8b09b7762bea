// Tests of the compose deployment that run without a container engine.
//
// The compose file is parsed and checked for what the deployment promises
// (one secrets directory per container, streams replicated 3 ways, only
// flags and environment variables the cordon binary reads); setup.sh and
// gen-certs.sh run for real; and TestComposeStarts starts every service
// of compose.yaml as a process of this host, with the exact command line
// and environment compose gives it (translated by one function,
// (*host).translate), and carries a token through the whole loop.
package compose_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/token"
)

// chdbPath is the data directory of this test process's chDB session (the
// ClickHouse stand-in's engine).
var chdbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cordon-compose-chdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chdbPath = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// secretsDir is the one directory of ./secrets each service may mount.
var secretsDir = map[string]string{
	"nats-1": "nats-server", "nats-2": "nats-server", "nats-3": "nats-server",
	"clickhouse": "clickhouse",
	"issuer":     "issuer", "auditor": "auditor", "auditor-2": "auditor", "revoker": "revoker", "revoker-2": "revoker", "enforcer": "enforcer", "admin": "admin",
	"upstream": "",
}

func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	want := []string{"admin", "auditor", "auditor-2", "clickhouse", "enforcer", "issuer", "nats-1", "nats-2", "nats-3", "revoker", "revoker-2", "setup", "upstream"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	for _, name := range names {
		s := c.Services[name]
		t.Run(name, func(t *testing.T) {
			if s.Image == "" {
				t.Error("no image")
			}
			if s.Build != nil {
				if s.Build.Context != "../.." || s.Build.Dockerfile != "deploy/compose/Dockerfile" {
					t.Errorf("build %+v: want the repository root and deploy/compose/Dockerfile", *s.Build)
				}
				if !slices.Contains(dockerTargets(t), s.Build.Target) {
					t.Errorf("build target %q is not in the Dockerfile (%v)", s.Build.Target, dockerTargets(t))
				}
			}
			for dep := range s.DependsOn {
				if _, ok := c.Services[dep]; !ok {
					t.Errorf("depends on unknown service %q", dep)
				}
			}
			// Host files mounted must exist; ./secrets is made by setup.
			var secretMounts []string
			for _, v := range s.Volumes {
				src, dst, _ := strings.Cut(v, ":")
				if !strings.HasPrefix(src, ".") {
					if _, ok := c.Volumes[src]; !ok {
						t.Errorf("volume %q is not declared", src)
					}
					continue
				}
				if src == "./secrets" || strings.HasPrefix(src, "./secrets/") {
					secretMounts = append(secretMounts, src)
					continue
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("mount %s -> %s: %v", src, dst, err)
				}
			}
			if name == "setup" {
				if !slices.Equal(secretMounts, []string{"./secrets"}) || !slices.Contains(s.Profiles, "setup") {
					t.Errorf("setup mounts %v, profiles %v", secretMounts, s.Profiles)
				}
				return
			}
			wantDir, ok := secretsDir[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			if wantDir == "" && len(secretMounts) > 0 || wantDir != "" && !slices.Equal(secretMounts, []string{"./secrets/" + wantDir}) {
				t.Errorf("mounts secrets %v, want only ./secrets/%s", secretMounts, wantDir)
			}
			for _, p := range s.Ports {
				if strings.Count(p, ":") == 1 && name != "enforcer" {
					t.Errorf("port %s published on every interface (only the enforcer's proxy is)", p)
				}
			}
		})
	}
	// journal splits off the volume mounted at /var/lib/cordon.
	journal := func(vs []string) (string, []string) {
		var j string
		var rest []string
		for _, v := range vs {
			if strings.HasSuffix(v, ":/var/lib/cordon") {
				j = v
				continue
			}
			rest = append(rest, v)
		}
		return j, rest
	}
	for _, r := range []struct{ first, second string }{{"revoker", "revoker-2"}, {"auditor", "auditor-2"}} {
		t.Run(r.second+" is a replica of "+r.first, func(t *testing.T) {
			// One identity, one command: the revoker replicas share their
			// durables and answer cordon.cmd.revoke as one queue group;
			// the auditors share the USAGE partitions by leases (--lease).
			// Each keeps its own directory (the revoker's journal of
			// pending revocations): only the volume behind
			// /var/lib/cordon differs.
			a, b := c.Services[r.first], c.Services[r.second]
			ja, ra := journal(a.Volumes)
			jb, rb := journal(b.Volumes)
			if ja == "" || jb == "" || ja == jb {
				t.Errorf("%s and %s volumes %q and %q: want one each at /var/lib/cordon", r.first, r.second, ja, jb)
			}
			a.Volumes, b.Volumes = ra, rb
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s differs from %s:\n%+v\n%+v", r.second, r.first, b, a)
			}
		})
	}
	t.Run("the auditors share partitions by leases", func(t *testing.T) {
		if !slices.Contains(c.Services["auditor"].Command, "--lease") {
			t.Errorf("auditor runs without --lease: two instances would each run every partition")
		}
	})
	for _, name := range []string{"issuer", "auditor", "auditor-2", "revoker", "revoker-2", "enforcer"} {
		s := c.Services[name]
		t.Run(name+" flags", func(t *testing.T) {
			wantCmd := strings.TrimSuffix(name, "-2")
			if name == "enforcer" {
				wantCmd = "enforce"
			}
			if len(s.Command) == 0 || s.Command[0] != wantCmd {
				t.Fatalf("command %q, want cordon %s", s.Command, wantCmd)
			}
			flags := flagValues(s.Command[1:])
			if !strings.Contains(flags["nats"], "tls://nats-1:4222") || strings.Count(flags["nats"], "tls://") != 3 {
				t.Errorf("--nats %q: want the three nodes over TLS", flags["nats"])
			}
			for _, f := range []string{"nats-creds", "nats-ca", "nats-cert", "nats-key"} {
				if !strings.HasPrefix(flags[f], "/run/secrets/cordon/") {
					t.Errorf("--%s %q: want a file of the service's own secrets", f, flags[f])
				}
			}
			if name != "enforcer" && flags["replicas"] != "3" {
				t.Errorf("--replicas %q, want 3 (streams replicated on the three nodes)", flags["replicas"])
			}
			if name == "enforcer" {
				if _, ok := flags["replicas"]; ok {
					t.Error("the enforcer cannot create streams; --replicas makes no sense")
				}
			}
		})
	}
}

// flagValues maps --name=value (or a bare --name) to its value.
func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok {
			v = "true"
		}
		m[k] = v
	}
	return m
}

// TestComposeFlagsExist: every flag a compose service passes to cordon is
// one the binary the image runs defines (its -h lists it), and every
// environment variable compose sets for a cordon container is one the
// binary reads. A flag the binary lacks makes the container exit with
// "flag provided but not defined"; TestComposeStarts shows that too, this
// test names the flag.
func TestComposeFlagsExist(t *testing.T) {
	b := buildImages(t)
	c := loadCompose(t)
	for _, name := range []string{"issuer", "auditor", "auditor-2", "revoker", "revoker-2", "enforcer"} {
		s := c.Services[name]
		cmd := s.Command[0]
		have := helpFlags(t, b.cordon, cmd)
		for f := range flagValues(s.Command[1:]) {
			if !have[f] {
				t.Errorf("compose passes `cordon %s --%s`, which the binary does not define", cmd, f)
			}
		}
	}
}

// readElsewhere are environment variables compose sets that cordon reads
// for every command, which no command's -h names, with the test that
// shows the binary reads them.
var readElsewhere = map[string]string{
	"CORDON_LOG_FORMAT": "TestComposeStarts: each service logs JSON",
}

// TestComposeEnvironmentRead: each environment variable compose gives a
// cordon container is one its command reads (its -h names $VAR): for the
// admin container, whose command is whatever the operator runs, one of
// the commands the README runs there.
func TestComposeEnvironmentRead(t *testing.T) {
	b := buildImages(t)
	c := loadCompose(t)
	adminCommands := [][]string{{"token", "issue"}, {"revoke"}, {"sql"}, {"anomalies"}}
	for name, s := range c.Services {
		if s.Build == nil || s.Build.Target != "cordon" {
			continue
		}
		commands := adminCommands
		if name != "admin" {
			commands = [][]string{{s.Command[0]}}
		}
		var help strings.Builder
		for _, cmd := range commands {
			help.WriteString(helpText(t, b.cordon, cmd...))
		}
		for v := range s.Environment {
			if _, ok := readElsewhere[v]; ok {
				continue
			}
			if !strings.Contains(help.String(), "$"+v+")") && !strings.Contains(help.String(), "$"+v+";") {
				t.Errorf("compose sets %s for %s, which no `cordon … -h` of %q names", v, name, commands)
			}
		}
	}
}

// helpText is the -h output of `cordon <cmd…>`.
func helpText(t testing.TB, bin string, cmd ...string) string {
	t.Helper()
	out, _ := exec.Command(bin, append(cmd, "-h")...).CombinedOutput()
	if !strings.Contains(string(out), "Usage") {
		t.Fatalf("cordon %s -h printed no usage:\n%s", strings.Join(cmd, " "), out)
	}
	return string(out)
}

var flagLine = regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`)

// helpFlags are the flags `cordon <cmd> -h` lists.
func helpFlags(t testing.TB, bin, cmd string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(helpText(t, bin, cmd), -1) {
		out[m[1]] = true
	}
	return out
}

var fromRe = regexp.MustCompile(`(?im)^FROM\s+\S+\s+AS\s+(\S+)\s*$`)

func dockerTargets(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, m := range fromRe.FindAllStringSubmatch(string(b), -1) {
		targets = append(targets, m[1])
	}
	return targets
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if got := dockerTargets(t); !slices.Equal(got, []string{"build", "base", "cordon", "nats-server", "setup"}) {
		t.Errorf("targets %v", got)
	}
	for _, src := range regexp.MustCompile(`(?m)^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$`).FindAllStringSubmatch(s, -1) {
		for _, p := range strings.Fields(src[1]) {
			if p == "." || strings.HasPrefix(p, "/") {
				continue
			}
			if _, err := os.Stat(filepath.Join("../..", p)); err != nil {
				t.Errorf("COPY %s: %v", p, err)
			}
		}
	}
	for _, want := range []string{"./cmd/cordon", natscluster.ServerModule, "USER 65532:65532", "CGO_ENABLED=0"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if _, err := os.Stat("../../cmd/cordon/main.go"); err != nil {
		t.Error(err)
	}
	// The build context is the repository root: secrets must stay out.
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"deploy/compose/secrets", "**/*.nk", "**/*-key.pem"} {
		if !slices.Contains(strings.Split(string(ignore), "\n"), want) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}

// TestClickHouseConfig: tls.xml is well-formed, serves HTTPS on the port
// the auditor uses, and names certificate files that setup.sh makes in the
// directory compose mounts there.
func TestClickHouseConfig(t *testing.T) {
	b, err := os.ReadFile("clickhouse/tls.xml")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		XMLName   xml.Name `xml:"clickhouse"`
		HTTPSPort int      `xml:"https_port"`
		HTTPPort  struct {
			Remove string `xml:"remove,attr"`
		} `xml:"http_port"`
		Server struct {
			Cert string `xml:"certificateFile"`
			Key  string `xml:"privateKeyFile"`
			CA   string `xml:"caConfig"`
		} `xml:"openSSL>server"`
	}
	if err := xml.Unmarshal(b, &conf); err != nil {
		t.Fatalf("tls.xml: %v", err)
	}
	c := loadCompose(t)
	if flags := flagValues(c.Services["auditor"].Command[1:]); flags["clickhouse-addr"] != fmt.Sprintf("clickhouse:%d", conf.HTTPSPort) {
		t.Errorf("auditor --clickhouse-addr %q, ClickHouse serves HTTPS on %d", flags["clickhouse-addr"], conf.HTTPSPort)
	}
	if conf.HTTPPort.Remove == "" {
		t.Error("plaintext http_port is not removed")
	}
	const mount = "/etc/clickhouse-server/secrets/"
	if !slices.Contains(c.Services["clickhouse"].Volumes, "./secrets/clickhouse:"+strings.TrimSuffix(mount, "/")+":ro") {
		t.Errorf("clickhouse does not mount ./secrets/clickhouse at %s", mount)
	}
	for _, f := range []string{conf.Server.Cert, conf.Server.Key, conf.Server.CA} {
		name, ok := strings.CutPrefix(f, mount)
		if !ok || !slices.Contains([]string{"server.pem", "server-key.pem", "ca.pem"}, name) {
			t.Errorf("tls.xml names %q, not a file setup.sh puts in %s", f, mount)
		}
	}
}

// xmlNode is any XML element, for config files read generically.
type xmlNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xmlNode  `xml:",any"`
}

// child returns the first child named name.
func (n xmlNode) child(name string) (xmlNode, bool) {
	for _, c := range n.Children {
		if c.XMLName.Local == name {
			return c, true
		}
	}
	return xmlNode{}, false
}

// path walks children by name.
func (n xmlNode) path(t *testing.T, names ...string) xmlNode {
	t.Helper()
	for _, name := range names {
		c, ok := n.child(name)
		if !ok {
			t.Fatalf("no <%s> under <%s>", name, n.XMLName.Local)
		}
		n = c
	}
	return n
}

func (n xmlNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func loadXML(t *testing.T, path string) xmlNode {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n xmlNode
	if err := xml.Unmarshal(b, &n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestClickHouseAnalystUser holds the analyst user's profile (analyst.xml)
// to what the auditor sends for analysts' queries (store.QuerySettings):
// readonly=1 and not changeable; every other setting the store sends may
// be set by the read-only user, within bounds that admit the store's
// defaults; the overflow modes cannot be relaxed to "break"; the user reads
// the auditor's database only; and the server settings it relies on
// (access.xml) are on, both files mounted where ClickHouse reads them.
func TestClickHouseAnalystUser(t *testing.T) {
	conf := loadXML(t, "clickhouse/analyst.xml")
	profile := conf.path(t, "profiles", "cordon_analyst")
	if v := strings.TrimSpace(profile.path(t, "readonly").Text); v != "1" {
		t.Errorf("profile readonly = %q, want 1", v)
	}
	constraints := profile.path(t, "constraints")
	if _, ok := constraints.child("readonly"); ok {
		t.Error("readonly has a constraint: a read-only user must not change it")
	}
	settings, err := store.Options{}.QuerySettings()
	if err != nil {
		t.Fatal(err)
	}
	sent := []string{"http_write_exception_in_output_format"} // clickhouse-go's own
	for _, st := range settings {
		if st.Name == "readonly" {
			continue
		}
		sent = append(sent, st.Name)
		c, ok := constraints.child(st.Name)
		if !ok {
			t.Errorf("the store sends %s, which the read-only profile does not let it set", st.Name)
			continue
		}
		if _, ok := c.child("changeable_in_readonly"); !ok {
			t.Errorf("constraint %s lacks changeable_in_readonly", st.Name)
		}
		num := func(v any) (float64, bool) {
			f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
			return f, err == nil
		}
		if v, isNum := num(st.Value); isNum {
			for _, bound := range []string{"min", "max"} {
				b, ok := c.child(bound)
				if !ok {
					t.Errorf("constraint %s has no %s", st.Name, bound)
					continue
				}
				lim, _ := num(strings.TrimSpace(b.Text))
				if bound == "min" && v < lim || bound == "max" && v > lim {
					t.Errorf("the store's default %s = %v is outside the profile's %s %v", st.Name, st.Value, bound, lim)
				}
			}
		}
		if strings.HasSuffix(st.Name, "_overflow_mode") {
			d, ok := c.child("disallowed")
			if !ok || strings.TrimSpace(d.Text) != "break" {
				t.Errorf("constraint %s does not forbid break (a truncated result instead of an error)", st.Name)
			}
		}
	}
	for _, c := range constraints.Children {
		if !slices.Contains(sent, c.XMLName.Local) {
			t.Errorf("the profile lets the read-only user set %s, which Cordon never sends", c.XMLName.Local)
		}
	}
	user := conf.path(t, "users", "cordon_analyst")
	if p := strings.TrimSpace(user.path(t, "profile").Text); p != "cordon_analyst" {
		t.Errorf("user profile %q", p)
	}
	if incl := user.path(t, "password_sha256_hex").attr("incl"); incl != "cordon_analyst_password_sha256" {
		t.Errorf("password hash incl=%q, want the substitution setup.sh writes", incl)
	}
	var grants []string
	for _, g := range user.path(t, "grants").Children {
		grants = append(grants, strings.TrimSpace(g.Text))
	}
	if !slices.Equal(grants, []string{"GRANT SELECT ON cordon.*"}) {
		t.Errorf("grants %q, want SELECT on the cordon database only", grants)
	}

	access := loadXML(t, "clickhouse/access.xml")
	if inc := strings.TrimSpace(access.path(t, "include_from").Text); inc != "/etc/clickhouse-server/secrets/substitutions.xml" {
		t.Errorf("include_from %q: not the file setup.sh writes in the mounted secrets", inc)
	}
	for _, k := range []string{"settings_constraints_replace_previous", "select_from_system_db_requires_grant", "select_from_information_schema_requires_grant"} {
		if v := strings.TrimSpace(access.path(t, "access_control_improvements", k).Text); v != "true" {
			t.Errorf("%s = %q, want true", k, v)
		}
	}

	c := loadCompose(t)
	for _, m := range []string{
		"./clickhouse/analyst.xml:/etc/clickhouse-server/users.d/analyst.xml:ro",
		"./clickhouse/access.xml:/etc/clickhouse-server/config.d/access.xml:ro",
	} {
		if !slices.Contains(c.Services["clickhouse"].Volumes, m) {
			t.Errorf("clickhouse does not mount %s", m)
		}
	}
	flags := flagValues(c.Services["auditor"].Command[1:])
	if flags["clickhouse-analyst-user"] != "cordon_analyst" || flags["clickhouse-database"] != "cordon" ||
		flags["clickhouse-analyst-password-file"] != "/run/secrets/cordon/clickhouse-analyst-password" {
		t.Errorf("auditor flags %v: want the analyst user, its password file and database cordon", flags)
	}
}

// TestDemoPolicyAndRoutes: the demo policy loads, and every holder's
// audience includes the service the enforcer's routes protect.
func TestDemoPolicyAndRoutes(t *testing.T) {
	p, err := policy.Load("policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := enforce.LoadRoutes("../../testdata/routes/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Holders) == 0 {
		t.Fatal("no holders")
	}
	for _, h := range p.Holders {
		if !slices.Contains(h.Audiences, rs.Service) {
			t.Errorf("holder %s/%s: audiences %v lack the demo service %q", h.Tenant, h.Holder, h.Audiences, rs.Service)
		}
	}
}

// runSetup runs the compose setup service (setup.sh, and so gen-certs.sh)
// twice into a temporary directory, which it returns: it must be
// idempotent.
func runSetup(t *testing.T) string {
	t.Helper()
	b, c := buildImages(t), loadCompose(t)
	out := filepath.Join(t.TempDir(), "secrets")
	for range 2 {
		setupSecrets(t, b, c, out)
	}
	return out
}

// setupSecrets runs the compose setup service into dir, which stands for
// its ./secrets: the setup image's entrypoint (setup.sh) with the
// service's command or the image's CMD, translated, and $CORDON set to
// the cordon binary (the image has it on its PATH). It skips the test
// when openssl is missing.
func setupSecrets(t testing.TB, b binaries, c composeFile, dir string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: the setup service needs it to make the certificates (gen-certs.sh)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := c.Services["setup"]
	df, err := loadDockerfile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	entrypoint, cmd, err := df.image(s.Build.Target)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Command) > 0 {
		cmd = s.Command
	}
	h := newHost(t, c, dir)
	ctr, err := h.container("setup", "setup", s)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := b.executable(entrypoint[0])
	if err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(entrypoint[1:]), cmd...)
	for i, a := range args {
		if args[i], err = h.translate(ctr, a); err != nil {
			t.Fatal(err)
		}
	}
	run := exec.Command(exe, args...)
	run.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "CORDON=" + b.cordon}
	if msg, err := run.CombinedOutput(); err != nil {
		t.Fatalf("setup (%s %s): %v\n%s", exe, strings.Join(args, " "), err, msg)
	}
}

func TestSetupMakesEachServiceItsOwnSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs openssl; skipped with -short")
	}
	out := runSetup(t)
	ca := loadCert(t, filepath.Join(out, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	want := map[string][]string{
		"nats-server": {"ca.pem", "server.pem", "server-key.pem", "auth.conf"},
		"clickhouse":  {"ca.pem", "server.pem", "server-key.pem", "password", "substitutions.xml"},
		"issuer":      {"ca.pem", "client.pem", "client-key.pem", "nats.nk", "https.pem", "https-key.pem", "anchor.key"},
		"auditor":     {"ca.pem", "client.pem", "client-key.pem", "nats.nk", "clickhouse-password", "clickhouse-analyst-password", "trust-anchor.pub"},
		"revoker":     {"ca.pem", "client.pem", "client-key.pem", "nats.nk", "trust-anchor.pub"},
		"enforcer":    {"ca.pem", "client.pem", "client-key.pem", "nats.nk", "https.pem", "https-key.pem", "trust-anchor.pub"},
		"admin":       {"ca.pem", "client.pem", "client-key.pem", "nats.nk"},
	}
	for dir, files := range want {
		t.Run(dir, func(t *testing.T) {
			entries, err := os.ReadDir(filepath.Join(out, dir))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
				info, _ := e.Info()
				secret := strings.HasSuffix(e.Name(), "key.pem") || strings.HasSuffix(e.Name(), ".nk") || strings.Contains(e.Name(), "password") || strings.HasSuffix(e.Name(), ".key")
				if secret && info.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, want 0600", e.Name(), info.Mode().Perm())
				}
			}
			sort.Strings(got)
			sorted := slices.Clone(files)
			sort.Strings(sorted)
			if !slices.Equal(got, sorted) {
				t.Errorf("files %v, want %v", got, sorted)
			}
			if role, err := natsauth.ParseRole(dir); err == nil {
				pub, err := natsauth.PublicKeyOf(filepath.Join(out, dir, "nats.nk"))
				if err != nil {
					t.Fatal(err)
				}
				auth, _ := os.ReadFile(filepath.Join(out, "nats-server", "auth.conf"))
				if !strings.Contains(string(auth), pub) {
					t.Errorf("auth.conf does not know the %s key", role)
				}
				c := loadCert(t, filepath.Join(out, dir, "client.pem"))
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
					t.Errorf("client certificate: %v", err)
				}
			}
		})
	}
	t.Run("the verifiers trust the issuer's anchor", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(out, "issuer", "anchor.key"))
		if err != nil {
			t.Fatal(err)
		}
		anchor, err := token.UnmarshalAnchor(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{"auditor", "revoker", "enforcer"} {
			pub, err := token.LoadAnchorKey(filepath.Join(out, dir, "trust-anchor.pub"))
			if err != nil {
				t.Fatal(err)
			}
			if pub.String() != anchor.Public().String() {
				t.Errorf("%s trusts anchor %s, the issuer endorses with %s", dir, pub.ID(), anchor.Public().ID())
			}
		}
	})
	t.Run("the enforcer's identity is its --id", func(t *testing.T) {
		id := flagValues(loadCompose(t).Services["enforcer"].Command[1:])["id"]
		pub, err := natsauth.PublicKeyOf(filepath.Join(out, "enforcer", "nats.nk"))
		if err != nil {
			t.Fatal(err)
		}
		users, err := natsauth.ServerAuth(filepath.Join(out, "nats-server"))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, u := range users {
			allow := u.Permissions.Publish.Allow
			if slices.Contains(allow, events.SubjectUsagePrefix+">") {
				t.Errorf("user %s may publish usage under any enforcer's name", u.Nkey)
			}
			if u.Nkey == pub {
				found = true
				if want := []string{natsauth.UsagePublishSubject(id), natsauth.UsageBatchPublishSubject(id)}; !slices.Equal(usageAllows(allow), want) {
					t.Errorf("the mounted enforcer seed may publish usage on %v, want only %v (compose runs --id=%s)", usageAllows(allow), want, id)
				}
			}
		}
		if !found {
			t.Error("auth.conf does not know the enforcer's seed")
		}
	})
	for _, tc := range []struct {
		file string
		dns  string
	}{
		{"nats-server/server.pem", "nats-2"}, {"clickhouse/server.pem", "clickhouse"},
		{"enforcer/https.pem", "enforcer"}, {"issuer/https.pem", "issuer"},
	} {
		c := loadCert(t, filepath.Join(out, tc.file))
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.dns}); err != nil {
			t.Errorf("%s for %s: %v", tc.file, tc.dns, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "clickhouse", "password")); len(strings.TrimSpace(string(b))) < 32 {
		t.Errorf("clickhouse password %d characters", len(strings.TrimSpace(string(b))))
	}
	// The analyst user's password: the auditor has it, the server only its
	// hash, where analyst.xml's incl= finds it.
	writer, _ := os.ReadFile(filepath.Join(out, "auditor", "clickhouse-password"))
	analyst, _ := os.ReadFile(filepath.Join(out, "auditor", "clickhouse-analyst-password"))
	pass := strings.TrimSpace(string(analyst))
	if len(pass) < 32 || pass == strings.TrimSpace(string(writer)) {
		t.Errorf("analyst password: %d characters, same as the writer's: %v", len(pass), pass == strings.TrimSpace(string(writer)))
	}
	subst, err := os.ReadFile(filepath.Join(out, "clickhouse", "substitutions.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var incl struct {
		XMLName xml.Name `xml:"clickhouse"`
		Hash    string   `xml:"cordon_analyst_password_sha256"`
	}
	if err := xml.Unmarshal(subst, &incl); err != nil {
		t.Fatalf("substitutions.xml: %v", err)
	}
	if sum := sha256.Sum256([]byte(pass)); incl.Hash != hex.EncodeToString(sum[:]) {
		t.Errorf("substitutions.xml holds hash %q, not the SHA-256 of the auditor's analyst password", incl.Hash)
	}
	if strings.Contains(string(subst), pass) {
		t.Error("substitutions.xml holds the analyst password itself")
	}
}

// usageAllows are the usage subjects among allow.
func usageAllows(allow []string) []string {
	var out []string
	for _, a := range allow {
		if strings.HasPrefix(a, events.SubjectUsagePrefix) {
			out = append(out, a)
		}
	}
	return out
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}
