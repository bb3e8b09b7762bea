package compose_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/response"
)

// step bounds each wait of the loop: generous, for a loaded machine.
const step = 2 * time.Minute

// TestComposeStarts is `docker compose up` without a container engine:
// every service of compose.yaml runs as a process with the command line
// and environment compose gives it (startDeployment), and a token goes
// through the whole loop the README walks through — issued by the admin
// container over the issuer's HTTPS API, used through the enforcer over
// HTTPS, probing flagged by the auditor's default detectors and stored in
// ClickHouse, revoked by the revoker under the compose policy, denied by
// the enforcer, and found by `cordon sql` in the admin container; one
// revoker replica is killed and the other revokes alone. Any other
// process that exits, any flag, credential or TLS mismatch fails it; so
// does a NATS permission violation anywhere. Then services started with a
// load-bearing flag removed must fail to start, and the cluster refuses
// what the credentials do not allow.
func TestComposeStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cordon and starts the whole deployment; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	d := startDeployment(t)

	var (
		adminToken string
		issued     struct {
			Token string `json:"token"`
			ID    string `json:"id"`
		}
		anomalyID string
	)
	ok := t.Run("NATS cluster", func(t *testing.T) {
		for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
			want := d.compose.Services[name].Environment["NATS_SERVER_NAME"]
			var varz struct {
				Name string `json:"server_name"`
			}
			if err := d.getJSON(d.containers[name], "http://127.0.0.1:8222/varz", &varz); err != nil {
				t.Fatal(err)
			}
			if varz.Name != want {
				t.Errorf("%s runs as server %q, want NATS_SERVER_NAME %q", name, varz.Name, want)
			}
		}
		_, js := d.natsConnect(t, "admin")
		for _, cfg := range events.Streams(events.StreamOptions{}) {
			s, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				t.Fatal(err)
			}
			if info := s.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				t.Errorf("stream %s: %d replicas, want 3 (the issuer's --replicas)", cfg.Name, info.Config.Replicas)
			}
		}
	})
	ok = ok && t.Run("issue over the issuer's HTTPS API", func(t *testing.T) {
		// README: docker compose exec -T issuer cat /var/lib/cordon/admin.token > admin.token
		p, err := d.h.translate(d.containers["issuer"], "/var/lib/cordon/admin.token")
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("the issuer's admin token: %v", err)
		}
		adminToken = strings.TrimSpace(string(b))
		// README: docker compose run --rm -T admin token issue --token-file /dev/stdin … < admin.token
		out, err := d.cordon(ctx, "admin", strings.NewReader(adminToken), "token", "issue", "--token-file", "/dev/stdin",
			"--tenant", "acme", "--holder", "billing-api", "--scope", "invoices:read,invoices:list", "--ttl", "1h", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &issued); err != nil || issued.Token == "" || issued.ID == "" {
			t.Fatalf("token issue printed %q (%v)", out, err)
		}
	})
	enforcer := d.enforcerClient(t)
	ok = ok && t.Run("use through the enforcer", func(t *testing.T) {
		d.waitFor(t, "GET /invoices/42 allowed", step, paced(250*time.Millisecond, func() error {
			status, reason, body, err := enforcer.get(ctx, "GET", "/invoices/42", issued.Token)
			if err != nil {
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("status %d, reason %q", status, reason)
			}
			if !strings.Contains(body, "GET /invoices/42 ") {
				return fmt.Errorf("the upstream's echo %q is not of the request", body)
			}
			return nil
		}))
		var seen bool
		for _, r := range d.upstream.requests() {
			if r.URL.Path != "/invoices/42" {
				continue
			}
			seen = true
			if r.Header.Get("Authorization") != "" {
				t.Error("the enforcer passed the token upstream")
			}
			if got := r.Header.Get("X-Cordon-Token-Id"); got != issued.ID {
				t.Errorf("the upstream was told token %q, want %s", got, issued.ID)
			}
		}
		if !seen {
			t.Error("the upstream never saw the request")
		}
	})
	// probes are what an attacker with a stolen read-only token tries.
	probes := []struct{ method, path string }{
		{"POST", "/invoices"}, {"PUT", "/invoices/42"}, {"DELETE", "/invoices/42"},
		{"GET", "/customers/7/invoices"}, {"GET", "/admin/users"},
	}
	ok = ok && t.Run("probing is flagged and stored in ClickHouse", func(t *testing.T) {
		// What an attacker with a stolen read-only token does: try what
		// else it opens, one action after another.
		for _, probe := range probes {
			status, reason, _, err := enforcer.get(ctx, probe.method, probe.path, issued.Token)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusForbidden || reason != "scope_missing" {
				t.Fatalf("%s %s: status %d, reason %q; want 403 scope_missing", probe.method, probe.path, status, reason)
			}
		}
		d.waitFor(t, "the probing anomaly in ClickHouse", step, paced(250*time.Millisecond, func() error {
			rows, err := d.clickhouse(ctx, "SELECT anomaly_id, detector, severity FROM anomalies WHERE token_id = '"+issued.ID+"'")
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r["detector"] == "scope_probing" {
					if r["severity"] != "high" {
						t.Fatalf("scope_probing anomaly of severity %v, want high (the default)", r["severity"])
					}
					anomalyID, _ = r["anomaly_id"].(string)
					return nil
				}
			}
			return fmt.Errorf("anomalies of the token: %v", rows)
		}))
	})
	ok = ok && t.Run("revoked by the revoker, denied by the enforcer", func(t *testing.T) {
		d.waitFor(t, "GET /invoices/42 denied as revoked", step, paced(250*time.Millisecond, func() error {
			status, reason, _, err := enforcer.get(ctx, "GET", "/invoices/42", issued.Token)
			if err != nil {
				return err
			}
			if reason != "revoked" {
				return fmt.Errorf("status %d, reason %q", status, reason)
			}
			return nil
		}))
		// The rules of the compose policy's response: section, by name.
		resp, err := response.LoadFile("policy.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var rules []string
		for _, r := range resp.Rules {
			rules = append(rules, "response rule "+r.Name+")")
		}
		// README: docker compose run --rm -T admin sql … (the analyst API of
		// the auditor, over NATS, as ClickHouse's read-only analyst user).
		query := "SELECT type, anomaly_id, reason FROM token_ledger WHERE token_id = '" + issued.ID + "' ORDER BY time"
		d.waitFor(t, "the revocation in the ledger, through cordon sql", step, paced(500*time.Millisecond, func() error {
			out, err := d.cordon(ctx, "admin", strings.NewReader(adminToken), "sql", "--token-file", "/dev/stdin", "-o", "csv", query)
			if err != nil {
				return err
			}
			rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
			if err != nil {
				return fmt.Errorf("cordon sql printed %q: %w", out, err)
			}
			for _, r := range rows {
				if len(r) != 3 || r[0] != "revoked" {
					continue
				}
				if r[1] != anomalyID {
					t.Fatalf("revoked for anomaly %q, want the probing anomaly %s", r[1], anomalyID)
				}
				if !slices.ContainsFunc(rules, func(rule string) bool { return strings.HasSuffix(r[2], rule) }) {
					t.Fatalf("revoked for %q: not by a rule of policy.yaml's response section (%v)", r[2], rules)
				}
				return nil
			}
			return fmt.Errorf("cordon sql printed %q", out)
		}))
	})
	// revokeAnother issues a token, uses it through the enforcer at path,
	// revokes it with the admin CLI over NATS and waits for the enforcer
	// to deny it as revoked.
	type issuedToken struct {
		Token string `json:"token"`
		ID    string `json:"id"`
	}
	// issueAnother issues a read-only token of billing-api with the admin
	// CLI over NATS.
	issueAnother := func(t *testing.T) issuedToken {
		t.Helper()
		out, err := d.cordon(ctx, "admin", strings.NewReader(adminToken), "token", "issue", "--token-file", "/dev/stdin",
			"--tenant", "acme", "--holder", "billing-api", "--scope", "invoices:read", "--ttl", "1h", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var another issuedToken
		if err := json.Unmarshal(out, &another); err != nil || another.ID == "" {
			t.Fatalf("token issue printed %q (%v)", out, err)
		}
		return another
	}
	revokeAnother := func(t *testing.T, path string) {
		t.Helper()
		another := issueAnother(t)
		if status, reason, _, err := enforcer.get(ctx, "GET", path, another.Token); err != nil || status != http.StatusOK {
			t.Fatalf("token: status %d, reason %q, %v", status, reason, err)
		}
		// README: docker compose run --rm -T admin revoke --token-file /dev/stdin --token <token id> --reason "leaked" < admin.token
		if _, err := d.cordon(ctx, "admin", strings.NewReader(adminToken), "revoke", "--token-file", "/dev/stdin",
			"--token", another.ID, "--reason", "leaked"); err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, "the token denied as revoked", step, paced(250*time.Millisecond, func() error {
			status, reason, _, err := enforcer.get(ctx, "GET", path, another.Token)
			if err != nil {
				return err
			}
			if reason != "revoked" {
				return fmt.Errorf("status %d, reason %q", status, reason)
			}
			return nil
		}))
	}
	ok = ok && t.Run("revoked by the admin over NATS", func(t *testing.T) { revokeAnother(t, "/invoices/7") })
	ok = ok && t.Run("either revoker replica alone revokes", func(t *testing.T) {
		for _, name := range []string{"revoker", "revoker-2"} {
			if err := d.healthy[name](); err != nil {
				t.Fatalf("%s is not healthy: %v", name, err)
			}
		}
		// One replica dies without a word (SIGKILL); the other serves
		// cordon.cmd.revoke alone.
		d.kill(t, "revoker")
		revokeAnother(t, "/invoices/8")
	})
	ok = ok && t.Run("either auditor alone detects: the other's partitions are taken over", func(t *testing.T) {
		// One auditor dies without a word (SIGKILL); once its leases
		// expire the other runs every USAGE partition, and keeps
		// flagging: probing with a token issued after the kill.
		d.kill(t, "auditor")
		u, err := d.h.translate(d.containers["auditor-2"], "http://127.0.0.1:9090/metrics")
		if err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, "auditor-2 running every USAGE partition", step, paced(250*time.Millisecond, func() error {
			resp, err := http.Get(u)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if n := strings.Count(string(body), "\ncordon_auditor_partition_lag{"); n != events.DefaultUsagePartitions {
				return fmt.Errorf("auditor-2 runs %d of %d partitions", n, events.DefaultUsagePartitions)
			}
			return nil
		}))
		another := issueAnother(t)
		for _, probe := range probes {
			if status, reason, _, err := enforcer.get(ctx, probe.method, probe.path, another.Token); err != nil || reason != "scope_missing" {
				t.Fatalf("%s %s: status %d, reason %q, %v", probe.method, probe.path, status, reason, err)
			}
		}
		d.waitFor(t, "the probing anomaly of a token used after the kill", step, paced(250*time.Millisecond, func() error {
			rows, err := d.clickhouse(ctx, "SELECT detector FROM anomalies WHERE token_id = '"+another.ID+"'")
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r["detector"] == "scope_probing" {
					return nil
				}
			}
			return fmt.Errorf("anomalies of the token: %v", rows)
		}))
	})
	if !ok {
		return
	}
	t.Run("no permission violation, no secret in the logs, nothing written outside the volumes", func(t *testing.T) {
		secrets := map[string]string{"the admin token": adminToken, "the issued token": issued.Token}
		for _, f := range []string{"private/clickhouse-password", "private/clickhouse-analyst-password", "issuer/anchor.key",
			"issuer/nats.nk", "auditor/nats.nk", "revoker/nats.nk", "enforcer/nats.nk", "admin/nats.nk"} {
			b, err := os.ReadFile(filepath.Join(d.secrets, f))
			if err != nil {
				t.Fatal(err)
			}
			// The secret lines: not comments, PEM boundaries or headers.
			for i, l := range strings.Split(string(b), "\n") {
				if l = strings.TrimSpace(l); !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "-----") && !strings.Contains(l, ": ") {
					secrets[fmt.Sprintf("%s line %d", f, i+1)] = l
				}
			}
		}
		if err := d.violations(); err != nil {
			t.Error(err)
		}
		for name, log := range d.logs() {
			for what, s := range secrets {
				if len(s) >= 16 && strings.Contains(log, s) {
					t.Errorf("%s logged %s", name, what)
				}
			}
			if s := d.compose.Services[name]; s.Build != nil && s.Build.Target == "cordon" && !jsonLines(log) {
				t.Errorf("%s did not log JSON: CORDON_LOG_FORMAT=json was not read", name)
			}
			entries, err := os.ReadDir(d.h.dir(d.containers[name]))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				t.Errorf("%s wrote %s into its working directory (the container's read-only root filesystem)", name, e.Name())
			}
		}
		if r := d.shim.Refused(); len(r) > 0 {
			t.Errorf("ClickHouse refused %d requests for their credentials (first as user %q)", len(r), r[0].User)
		}
	})

	// Removing a flag breaks it: each of these services, started once more
	// with one flag of its compose command removed, fails to start and
	// says why.
	t.Run("removing a flag breaks it", func(t *testing.T) {
		cases := []struct {
			svc, drop string
			// why: the log names one of these (case-insensitive).
			why []string
		}{
			{"auditor", "nats-ca", []string{"certificate signed by unknown authority"}},
			{"auditor", "clickhouse-ca-file", []string{"certificate signed by unknown authority"}},
			{"auditor", "clickhouse-password-file", []string{"AUTHENTICATION_FAILED"}},
			{"enforcer", "trust-anchor", []string{"trust-anchor.pub", "trust anchor"}},
			{"enforcer", "nats-cert", []string{"client certificate"}},
			{"revoker", "nats-creds", []string{"without credentials", "authorization violation"}},
		}
		procs := make([]*proc, len(cases))
		for i, tc := range cases {
			procs[i] = d.variant(t, tc.svc, tc.drop)
		}
		for i, tc := range cases {
			p := procs[i]
			t.Run(tc.svc+" without --"+tc.drop, func(t *testing.T) {
				d.waitFor(t, p.name+" exits", step, func() error {
					if !p.exited() {
						return errStillRunning
					}
					return nil
				})
				if p.err == nil {
					t.Fatalf("exited with status 0; log:\n%s", p.tail(20))
				}
				log := strings.ToLower(p.tail(20))
				for _, w := range tc.why {
					if strings.Contains(log, strings.ToLower(w)) {
						t.Logf("%v; log: %s", p.err, p.tail(3))
						return
					}
				}
				t.Errorf("%v, but the log names none of %q:\n%s", p.err, tc.why, p.tail(20))
			})
		}
		d.checkAlive(t)
	})

	t.Run("the cluster refuses what the credentials do not allow", func(t *testing.T) {
		url, opts := d.natsOptions(t, "enforcer")
		violations := make(chan string, 8)
		nc, err := nats.Connect(url, append(opts, nats.Name("compose-test enforcer edge-1"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			violations <- err.Error()
		}))...)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for _, forged := range []string{"cordon.token.revoked.acme.x", events.UsageSubject("acme", "edge-2")} {
			if err := nc.Publish(forged, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			select {
			case v := <-violations:
				if !strings.Contains(v, `Publish to "`+forged+`"`) {
					t.Fatalf("violation %s", v)
				}
			case <-ctx.Done():
				t.Fatal("no violation reported")
			}
		}
		dir := filepath.Join(d.secrets, "enforcer")
		if _, err := nats.Connect(url, natsauth.ConnectOption(filepath.Join(dir, "nats.nk")), nats.RootCAs(filepath.Join(dir, "ca.pem")), nats.MaxReconnects(0)); err == nil {
			t.Error("connected without a client certificate")
		}
		_, err = nats.Connect(url, nats.RootCAs(filepath.Join(dir, "ca.pem")), nats.ClientCert(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")), nats.MaxReconnects(0))
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("certificate only: %v, want authorization violation", err)
		}
	})
	d.checkAlive(t)
}

// natsOptions are the NATS URL and connect options container name uses:
// its command's --nats… flags, else (the admin's) its CORDON_NATS…
// environment, translated.
func (d *deployment) natsOptions(t *testing.T, name string) (string, []nats.Option) {
	t.Helper()
	s := d.compose.Services[name]
	ctr := d.containers[name]
	if ctr == nil {
		var err error
		if ctr, err = d.h.container(name, name, s); err != nil {
			t.Fatal(err)
		}
	}
	flags := map[string]string{}
	if len(s.Command) > 0 {
		for k, v := range flagValues(s.Command[1:]) {
			flags[k] = v
		}
	}
	for k, v := range s.Environment {
		if f, ok := strings.CutPrefix(k, "CORDON_"); ok {
			if name := strings.ReplaceAll(strings.ToLower(f), "_", "-"); flags[name] == "" {
				flags[name] = v
			}
		}
	}
	get := func(f string) string {
		v, err := d.h.translate(ctr, flags[f])
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	opts, err := natsauth.ClientOptions(get("nats-creds"), get("nats-ca"), get("nats-cert"), get("nats-key"))
	if err != nil {
		t.Fatal(err)
	}
	return get("nats"), opts
}

// natsConnect connects as container name.
func (d *deployment) natsConnect(t *testing.T, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	url, opts := d.natsOptions(t, name)
	nc, err := nats.Connect(url, append(opts, nats.Name("compose-test "+name))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// getJSON GETs a container's own URL (rule c) and decodes the JSON answer.
func (d *deployment) getJSON(ctr *container, rawURL string, v any) error {
	u, err := d.h.translate(ctr, rawURL)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// caPool is the deployment's CA (README: sudo cat secrets/ca.pem > ca.pem).
func (d *deployment) caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.secrets, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("secrets/ca.pem holds no certificate")
	}
	return pool
}

// httpsClient calls the enforcer from the host, as the README's curl
// --cacert ca.pem https://localhost:8443/… does: the port compose
// publishes, the certificate verified against the deployment's CA.
type httpsClient struct {
	base string
	c    *http.Client
}

func (d *deployment) enforcerClient(t *testing.T) *httpsClient {
	t.Helper()
	s := d.compose.Services["enforcer"]
	if len(s.Ports) != 1 {
		t.Fatalf("enforcer publishes %q, want one port", s.Ports)
	}
	port, err := strconv.Atoi(s.Ports[0][strings.LastIndex(s.Ports[0], ":")+1:])
	if err != nil {
		t.Fatalf("enforcer port %q: %v", s.Ports[0], err)
	}
	addr, err := d.h.addr(d.containers["enforcer"], port)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.caPool(t), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &httpsClient{base: "https://" + addr, c: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// get sends one request with the token and returns the status, the deny
// reason of the enforcer's JSON answer (the wire contract: {"reason": …})
// and the body.
func (c *httpsClient) get(ctx context.Context, method, path, tok string) (status int, reason, body string, err error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		var deny struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(b, &deny)
		reason = deny.Reason
	}
	return resp.StatusCode, reason, string(b), nil
}

// clickhouse runs a query on the ClickHouse stand-in over HTTPS, as the
// auditor's writer user with its password, in the database the README's
// queries and analyst.xml's grants name, and returns the rows.
func (d *deployment) clickhouse(ctx context.Context, query string) ([]map[string]any, error) {
	flags := flagValues(d.compose.Services["auditor"].Command[1:])
	auditor := d.containers["auditor"]
	addr, err := d.h.translate(auditor, flags["clickhouse-addr"])
	if err != nil {
		return nil, err
	}
	passFile, err := d.h.translate(auditor, flags["clickhouse-password-file"])
	if err != nil {
		return nil, err
	}
	pass, err := os.ReadFile(passFile)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(d.secrets, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	u := "https://" + addr + "/?" + url.Values{"database": {"cordon"}, "default_format": {"JSONEachRow"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, "POST", u, strings.NewReader(query))
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-ClickHouse-User", flags["clickhouse-user"])
	req.Header.Set("X-ClickHouse-Key", strings.TrimSpace(string(pass)))
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("clickhouse: %s: %s", resp.Status, b)
	}
	var rows []map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}
