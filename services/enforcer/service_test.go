package enforcer_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/enforcer"
)

func get(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServiceProxies: the service started with a program's values serves
// the proxy in front of the upstream, its health and metrics apart, and on
// Close publishes the usage events it queued.
func TestServiceProxies(t *testing.T) {
	clearEnv(t)
	nt := natstest.Run(t)
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nt.PublishKey(t, signer)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Header.Get("X-Cordon-Holder"))
	}))
	defer up.Close()
	routes, err := enforce.LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := enforcer.Config{Options: enforce.Options{ID: "svc-test", Routes: routes, MaxStaleness: enforce.DefaultMaxStaleness, FailClosed: true,
		Log: zerolog.Nop()}, NATS: natsconn.Config{URL: nt.Server.ClientURL()}, Upstream: up.URL, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"}
	if _, err := enforcer.Start(ctx, c); !errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), "--trust-anchor is required") {
		t.Fatalf("started without a trust anchor: %v", err)
	}
	c.TrustAnchors = token.Anchors{nt.Anchor.Public()}
	s, err := enforcer.Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	tok, err := signer.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "worker",
		Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr().String()
	if code, body := get(t, base+"/invoices/7", tok); code != 200 || body != "hello worker" {
		t.Fatalf("allowed request: %d %q", code, body)
	}
	if code, body := get(t, base+"/invoices/7", ""); code != 401 {
		t.Fatalf("request without a token: %d %q", code, body)
	}
	if code, body := get(t, "http://"+s.MetricsAddr()+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+s.MetricsAddr()+"/metrics", ""); code != 200 || !strings.Contains(body, `cordon_enforcer_decisions_total{enforcer="svc-test"`) {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	if code, _ := get(t, base+"/metrics", ""); code == 200 {
		t.Error("the proxy serves the metrics")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done is open after Close")
	}
	// The allowed request's usage event was published by Close at the
	// latest.
	st, err := nt.JS.Stream(ctx, events.StreamUsage)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Error("no usage event in USAGE after Close")
	}
	if _, err := http.Get(base + "/invoices/7"); err == nil {
		t.Error("the proxy still serves after Close")
	}
}
