// Package up runs the whole of Cordon in one process — the embedded
// default behind `cordon up` and `make run`: NATS JetStream in-process,
// ClickHouse as chDB, the issuer, the auditor with its detectors, the
// revoker, and an enforcing proxy in front of a small demo service.
//
// The embedded NATS is secured like a deployment: it knows only the
// per-role identities of pkg/natsauth, generated (or reused) in
// <data dir>/creds, and refuses every unauthenticated connection, over TCP
// and in-process alike. Each service connects with its own identity — the
// issuer, the auditor (and its analyst API), the revoker, the demo
// enforcer (which may report usage only under its own id) and the admin
// (the leak drill, and the CLI next to the data directory) — so that one
// compromised part can do no more than its job.
package up

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/privdir"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/enforcer"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

//go:embed demo/policy.yaml
var demoPolicy []byte

//go:embed demo/routes.yaml
var demoRoutes []byte

// Options configures the all-in-one system.
type Options struct {
	// DataDir holds everything: NATS, chDB, signing keys, the admin token
	// and detector checkpoints (default ".cordon").
	DataDir string
	// PolicyFile and RoutesFile default to the embedded demo files.
	PolicyFile string
	RoutesFile string
	// NATSPort is the client port of the embedded NATS (default 4222;
	// -1 picks a free one).
	NATSPort int
	// IssuerListen, ProxyListen and UpstreamListen are HTTP addresses
	// (defaults 127.0.0.1:7400, 127.0.0.1:8080, 127.0.0.1:0).
	IssuerListen   string
	ProxyListen    string
	UpstreamListen string
	// AlertWebhook, when set, receives on-call alerts (Alertmanager format).
	AlertWebhook string
	// LeakGitHubKeys, when set, turns on the issuer's GitHub secret
	// scanning intake (issuer.Config.LeakGitHubKeys).
	LeakGitHubKeys string
	// ChDBPath is chDB's data directory (default DataDir/chdb). chDB holds
	// one path per process: a process that already opened chDB elsewhere
	// must pass that path, and Database tells this system's tables apart.
	ChDBPath string
	Database string
	// EnforcerID names the demo proxy's enforcer (default "edge-1"); its
	// NATS identity may publish usage only under this id.
	EnforcerID string
	// MaxStaleness bounds how old the demo enforcer's denylist view may
	// get (default enforce.DefaultMaxStaleness); past it the enforcer
	// denies every request (fail closed) unless FailOpen is set.
	MaxStaleness time.Duration
	FailOpen     bool
	// ExtraEnforcers are the ids of more enforcers to generate NATS
	// identities for, to be run next to the system (EnforcerCredsFile,
	// Connect), such as the benchmarks'.
	ExtraEnforcers []string
	// UsagePartitions is the USAGE stream's partition count (flag
	// --usage-partitions): the count the stream is created with; a stream
	// that exists with another count is refused
	// (natsconn.CheckUsagePartitions). 0 keeps the stream's count
	// (events.DefaultUsagePartitions for a new one).
	UsagePartitions int
	// Log receives every service's logs.
	Log zerolog.Logger
}

func (o *Options) defaults() {
	if o.DataDir == "" {
		o.DataDir = ".cordon"
	}
	if o.NATSPort == 0 {
		o.NATSPort = 4222
	}
	if o.IssuerListen == "" {
		o.IssuerListen = "127.0.0.1:7400"
	}
	if o.ProxyListen == "" {
		o.ProxyListen = "127.0.0.1:8080"
	}
	if o.UpstreamListen == "" {
		o.UpstreamListen = "127.0.0.1:0"
	}
	if o.EnforcerID == "" {
		o.EnforcerID = "edge-1"
	}
	if o.MaxStaleness == 0 {
		o.MaxStaleness = enforce.DefaultMaxStaleness
	}
	if o.ChDBPath == "" {
		o.ChDBPath = filepath.Join(o.DataDir, "chdb")
	}
}

// System is a running all-in-one Cordon.
type System struct {
	Opts Options
	NATS *natsrun.Server
	// CredsDir holds the NATS identities (seeds and auth.conf).
	CredsDir string
	// NC and JS are the admin's connection: it sends cordon.cmd.* requests
	// and watches the ledger and the anomalies. The services have their
	// own connections, each with its own identity.
	NC       *nats.Conn
	JS       jetstream.JetStream
	Policy   *policy.Policy
	Store    *store.Store
	Detector *detect.Engine
	Issuer   *issuer.Issuer
	Auditor  *auditor.Auditor
	Revoker  *revoker.Revoker
	Enforcer *enforce.Enforcer
	// ProxyURL is the enforcing proxy; UpstreamURL the demo service behind it.
	ProxyURL, UpstreamURL string

	servers []*http.Server
	closers []func() error
}

// Start brings the whole system up and returns once every part serves.
// On error, whatever was started is stopped again.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	o.defaults()
	s := &System{Opts: o}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := natsauth.ValidateEnforcerID(o.EnforcerID); err != nil {
		return nil, fmt.Errorf("enforcer id: %w", err)
	}
	// Private directories: the data directory holds signing keys, the
	// admin token, NATS seeds and detector state.
	s.CredsDir = filepath.Join(o.DataDir, natsauth.CredsSubdir)
	dirs := []string{o.DataDir, s.CredsDir, filepath.Join(o.DataDir, "nats"), filepath.Join(o.DataDir, "keys"), filepath.Join(o.DataDir, "auditor"), filepath.Join(o.DataDir, "revoker")}
	if o.ChDBPath == filepath.Join(o.DataDir, "chdb") {
		dirs = append(dirs, o.ChDBPath)
	}
	for _, d := range dirs {
		if err := privdir.EnsureLogged(d, o.Log); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	if s.Policy, err = loadPolicy(o.PolicyFile); err != nil {
		return nil, err
	}
	routes, err := loadRoutes(o.RoutesFile)
	if err != nil {
		return nil, err
	}
	detCfg, err := detect.DecodeConfig(s.Policy.File, s.Policy.Detectors)
	if err != nil {
		return nil, err
	}
	respPolicy, err := response.Decode(s.Policy.File, s.Policy.Response)
	if err != nil {
		return nil, err
	}

	// NATS JetStream, in-process, knowing only Cordon's identities: the
	// same per-role credentials as a deployment, kept (or made) in
	// CredsDir, where the CLI finds the admin's.
	if _, err := natsauth.Generate(s.CredsDir, natsauth.GenerateOptions{Enforcers: append([]string{o.EnforcerID}, o.ExtraEnforcers...)}); err != nil {
		return nil, err
	}
	users, err := natsauth.ServerAuth(s.CredsDir)
	if err != nil {
		return nil, err
	}
	if s.NATS, err = natsrun.Start(natsrun.Options{DataDir: filepath.Join(o.DataDir, "nats"), Port: o.NATSPort, NkeyUsers: users}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.NATS.Stop(); return nil })
	// Streams and buckets are created or updated to this version's
	// definitions by a one-time identity that exists only in memory for
	// the time of it (natsrun.Server.Bootstrap): no role may update a
	// stream, on purpose, and none is given the right here either.
	if err := s.NATS.Bootstrap(ctx, events.StreamOptions{UsagePartitions: o.UsagePartitions}); err != nil {
		return nil, err
	}
	if s.NC, s.JS, err = s.connectAs("cordon-up-admin", s.CredsFile(natsauth.RoleAdmin)); err != nil {
		return nil, err
	}

	// Issuer.
	iss, err := issuer.Start(ctx, issuer.Config{NATS: s.natsAs("cordon-up-issuer", s.CredsFile(natsauth.RoleIssuer)),
		DataDir: o.DataDir, Policy: s.Policy, Listen: o.IssuerListen, Source: "issuer/up", LeakGitHubKeys: o.LeakGitHubKeys,
		UsagePartitions: o.UsagePartitions,
		Log:             o.Log.With().Str("svc", "issuer").Logger()})
	if err != nil {
		return nil, fmt.Errorf("start issuer: %w", err)
	}
	s.closers = append(s.closers, iss.Close)
	s.Issuer = iss.Issuer()
	// Every verifier trusts the keys the issuer's anchor endorses, and
	// nothing else written to the keys bucket.
	anchors := token.Anchors{s.Issuer.TrustAnchor()}

	// Revoker, with an on-call webhook if configured.
	var sinks []alert.Sink
	if o.AlertWebhook != "" {
		wh, err := alert.NewWebhook(alert.WebhookConfig{URL: o.AlertWebhook, Receiver: "on-call"})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, wh)
	}
	rev, err := revoker.Start(ctx, revoker.Config{NATS: s.natsAs("cordon-up-revoker", s.CredsFile(natsauth.RoleRevoker)),
		TrustAnchors: anchors, Response: respPolicy, MaxTokenTTL: s.Policy.MaxTokenLife(), Sinks: sinks,
		Alerts: alert.Options{Backoff: 100 * time.Millisecond}, Source: "revoker/up", DataDir: filepath.Join(o.DataDir, "revoker"), UsagePartitions: o.UsagePartitions,
		Log: o.Log.With().Str("svc", "revoker").Logger()})
	if err != nil {
		return nil, fmt.Errorf("start revoker: %w", err)
	}
	s.closers = append(s.closers, rev.Close)
	s.Revoker = rev.Revoker()

	// The auditor with its detectors, writing to ClickHouse in-process
	// (chDB), and the analysts' API (cordon sql, anomalies, report):
	// callers need an admin token the ledger knows, with cordon:read
	// (pkg/adminauth). The API uses the auditor's identity (which reads
	// the keys, the denylist and the ledger and answers cordon.cmd.sql).
	aud, err := auditor.Start(ctx, auditor.Config{NATS: s.natsAs("cordon-up-auditor", s.CredsFile(natsauth.RoleAuditor)),
		TrustAnchors: anchors, Store: auditor.StoreCHDB, ChDBPath: o.ChDBPath, Database: o.Database, Detectors: &detCfg,
		StateDir: filepath.Join(o.DataDir, "auditor"), BatchWait: 20 * time.Millisecond, AnomalyWait: 20 * time.Millisecond, Source: "auditor/up", UsagePartitions: o.UsagePartitions,
		Log: o.Log.With().Str("svc", "auditor").Logger()})
	if err != nil {
		return nil, fmt.Errorf("start auditor: %w", err)
	}
	s.closers = append(s.closers, aud.Close)
	s.Auditor, s.Store, s.Detector = aud.Auditor(), aud.Store(), aud.Detector()

	// The demo service and the enforcing proxy in front of it.
	upstream, err := s.serve(o.UpstreamListen, demoService())
	if err != nil {
		return nil, err
	}
	s.UpstreamURL = "http://" + upstream
	enf, err := enforcer.Start(ctx, enforcer.Config{
		Options: enforce.Options{ID: o.EnforcerID, Routes: routes, TrustAnchors: anchors, MaxStaleness: o.MaxStaleness, FailClosed: !o.FailOpen,
			SpoolDir: filepath.Join(o.DataDir, "spool", o.EnforcerID), Log: o.Log.With().Str("svc", "enforcer").Logger()},
		NATS:     s.natsAs("cordon-up-enforcer-"+o.EnforcerID, s.EnforcerCredsFile(o.EnforcerID)),
		Upstream: s.UpstreamURL, Listen: o.ProxyListen})
	if err != nil {
		return nil, fmt.Errorf("start enforcer: %w", err)
	}
	s.closers = append(s.closers, enf.Close)
	s.Enforcer = enf.Enforcer()
	s.ProxyURL = "http://" + enf.Addr().String()
	return s, nil
}

// CredsFile is the seed file of a role's NATS identity in this system
// (the enforcers': EnforcerCredsFile).
func (s *System) CredsFile(r natsauth.Role) string { return natsauth.SeedFile(s.CredsDir, r) }

// EnforcerCredsFile is the seed file of the NATS identity of the enforcer
// with id (Options.EnforcerID or one of Options.ExtraEnforcers).
func (s *System) EnforcerCredsFile(id string) string {
	return natsauth.EnforcerSeedFile(s.CredsDir, id)
}

// Connect opens an in-process connection to the system's NATS with the
// identity in seedFile (CredsFile, EnforcerCredsFile); the caller closes
// it. Without an identity the server refuses the connection.
func (s *System) Connect(name, seedFile string) (*nats.Conn, error) {
	return s.NATS.Connect(name, natsauth.ConnectOption(seedFile))
}

// natsAs is how a service of the system reaches the embedded NATS: in
// process, with the identity in seedFile.
func (s *System) natsAs(name, seedFile string) natsconn.Config {
	return natsconn.Config{URL: s.NATS.ClientURL(), Creds: seedFile, Name: name,
		Options: []nats.Option{nats.InProcessServer(s.NATS.Server)}}
}

// connectAs opens a connection of the system (closed by Close) with the
// identity in seedFile.
func (s *System) connectAs(name, seedFile string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := s.Connect(name, seedFile)
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

func (s *System) serve(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	go srv.Serve(ln)
	return ln.Addr().String(), nil
}

// Close stops everything, in the reverse order of Start; the auditor
// writes its final detector checkpoint.
func (s *System) Close() error {
	var errs []error
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.Shutdown(ctx))
		cancel()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

func loadPolicy(path string) (*policy.Policy, error) {
	if path == "" {
		return policy.Parse("demo/policy.yaml (embedded)", demoPolicy)
	}
	return policy.Load(path)
}

func loadRoutes(path string) (*enforce.Routes, error) {
	if path == "" {
		return enforce.ParseRoutes("demo/routes.yaml (embedded)", demoRoutes)
	}
	return enforce.LoadRoutes(path)
}

// demoService is the small upstream the proxy protects: it answers with
// what it was asked and who the enforcer says the caller is.
func demoService() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"service": "invoices",
			"method":  r.Method,
			"path":    r.URL.Path,
			"token":   r.Header.Get(enforce.HeaderTokenID),
			"holder":  r.Header.Get("X-Cordon-Holder"),
		})
	})
}
