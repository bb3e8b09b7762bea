package auditor_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestRequestContextThroughThePipeline: the request context the real
// enforcer reports (route pattern and resource, normalised client, client
// certificate thumbprint) and the issuance context on the ledger travel
// JetStream → auditor → ClickHouse intact, on the fast decoder's path and
// on the strict one, and the token report shows them.
func TestRequestContextThroughThePipeline(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "request_context")
	ctx := context.Background()

	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	env.PublishKey(t, signer)
	routes, err := enforce.LoadRoutes("../../testdata/routes/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := enforce.New(enforce.Options{ID: "edge-1", Routes: routes, TrustAnchors: env.Anchors(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Start(startCtx, env.JS); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	claims := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"},
		Audience: []string{"invoices"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	tok, err := signer.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	// The ledger says where the token was requested from.
	issued, err := events.New("issuer/test", now, &events.TokenIssued{TokenID: claims.ID, Tenant: "acme", Holder: "billing-api",
		KeyID: signer.KeyID, Actor: "ops", Claims: events.TokenClaims{Scopes: claims.Scopes, Audience: claims.Audience,
			NotBefore: now.Add(-time.Minute).UTC().Truncate(time.Second), Expiry: now.Add(time.Hour).UTC().Truncate(time.Second)},
		Requested: &events.IssuanceContext{SourceIP: "10.20.1.7", Client: "Boto3/1"}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := events.Encode(issued)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.Publish(ctx, events.Subject(issued), data, jetstream.WithMsgID(issued.MsgID())); err != nil {
		t.Fatal(err)
	}

	cert := &x509.Certificate{Raw: []byte("laptop-1 certificate")}
	thumb := token.Thumbprint(cert.Raw)
	h := e.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	requests := []struct {
		path, ua string
		tls      bool
		want     []any // route, resource, client, device, decision
	}{
		{"/invoices/42", "curl/8.5.0", true, []any{"/invoices/{id}", "42", "curl/8", thumb, "allow"}},
		{"/invoices/%C3%BCn%C3%AF", "python-requests/2.31.0", false, []any{"/invoices/{id}", "ünï", "python-requests/2", "", "allow"}},
		{"/invoices/a%22b/pdf", `Go-http-client/1.1 "quoted"`, false, []any{"/invoices/{id}/pdf", `a"b`, "Go-http-client/1", "", "allow"}},
		{"/admin/users/7", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
			false, []any{"/admin/{path...}", "users/7", "Edge/124", "", "deny"}},
	}
	for i, rq := range requests {
		r := httptest.NewRequest("GET", rq.path, nil)
		r.RemoteAddr = "10.0.0.5:40000"
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("User-Agent", rq.ua)
		if rq.tls {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if want := rq.want[4] == "allow"; (w.Code == http.StatusNoContent) != want {
			t.Fatalf("request %d %s: status %d", i, rq.path, w.Code)
		}
	}
	flushCtx, cancelFlush := context.WithTimeout(ctx, 10*time.Second)
	defer cancelFlush()
	if err := e.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}

	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Log: zerolog.Nop(), BatchWait: 20 * time.Millisecond})
	natstest.WaitFor(t, 20*time.Second, func() error {
		if st := a.Stats(); st.Usage != uint64(len(requests)) || st.Ledger != 1 || st.Dead != 0 {
			return fmt.Errorf("auditor stats %+v", st)
		}
		return nil
	})
	res, err := s.Query(ctx, "SELECT toString(route), resource, toString(client), device, toString(decision) FROM usage_events "+
		"WHERE token_id = '"+claims.ID+"' ORDER BY time")
	if err != nil {
		t.Fatal(err)
	}
	var want [][]any
	for _, rq := range requests {
		want = append(want, rq.want)
	}
	if got := fmt.Sprint(res.Rows); got != fmt.Sprint(want) {
		t.Fatalf("usage rows\n got %s\nwant %s", got, want)
	}
	rep, err := s.TokenReport(ctx, claims.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Grant == nil || rep.Grant.RequestedIP != "10.20.1.7" || rep.Grant.RequestedClient != "Boto3/1" {
		t.Fatalf("report grant %+v", rep.Grant)
	}
	if len(rep.Resources) != 3 || rep.Resources[0].Route != "/invoices/{id}" || rep.Resources[0].Distinct != 2 {
		t.Fatalf("report resources %+v", rep.Resources)
	}
}
