package up_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

// TestEdgeAttacksOnCordonUp replays issue 8's edge findings against a
// running `cordon up`, through its real proxy, issuer and NATS: path tricks
// that reached /admin on an upstream that cleans paths, alternative
// encodings of a token, a flood of token-less requests stored as one row
// each, and a signing key written to the keys bucket by a credential that
// may write it. Each attempt must fail.
func TestEdgeAttacksOnCordonUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: t.TempDir(), NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "edges", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	res, err := sys.Issuer.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
		Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	tok := res.Token

	// get sends a request to the proxy; the demo service answers with the
	// path it was asked for.
	get := func(rawPath, bearer string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", sys.ProxyURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = rawPath // sent as written, no client-side cleaning
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body struct{ Path, Reason string }
		_ = json.Unmarshal(b, &body)
		return resp.StatusCode, body.Path, body.Reason
	}
	if code, path, _ := get("/invoices/42", tok); code != 200 || path != "/invoices/42" {
		t.Fatalf("legit request: %d %q", code, path)
	}

	t.Run("path tricks never reach /admin", func(t *testing.T) {
		for _, p := range []string{
			"/invoices/..%2Fadmin%2Fx", "/invoices/..%2fadmin%2fx", "/invoices/%2e%2e/admin/x",
			"/invoices/%2E%2E%2Fadmin%2Fx", "/invoices/..%5Cadmin%5Cx", "/invoices/%252e%252e%252fadmin",
			"/invoices/./../admin/x", "//admin/x", "/invoices//..//admin/x", "/invoices/x%00/../../admin",
		} {
			code, path, reason := get(p, tok)
			if code == 200 || strings.Contains(path, "admin") {
				t.Errorf("GET %s: %d, upstream saw %q", p, code, path)
			}
			if code != 200 && reason == "" {
				t.Errorf("GET %s: %d without a deny reason", p, code)
			}
		}
	})

	t.Run("alternative encodings of a token are refused", func(t *testing.T) {
		body := strings.TrimPrefix(tok[:len(tok)-6], token.Prefix)
		sig := body[strings.LastIndexByte(body, '.')+1:]
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		// The last of 86 characters carries 2 data bits and 4 padding
		// bits: its 15 siblings decode to the same signature leniently.
		last := strings.IndexByte(alphabet, sig[len(sig)-1])
		tried := 0
		for i := 0; i < 64; i++ {
			if i == last || i>>4 != last>>4 {
				continue
			}
			alt := token.Seal(body[:len(body)-1] + string(alphabet[i]))
			tried++
			if code, _, reason := get("/invoices/42", alt); code == 200 {
				t.Errorf("alternative encoding %d allowed (%s)", i, reason)
			}
		}
		if tried != 15 {
			t.Fatalf("tried %d alternative encodings, want 15", tried)
		}
	})

	t.Run("token-less floods are counted, not stored one row each", func(t *testing.T) {
		const n = 300
		for range n {
			if code, _, _ := get("/invoices/1", ""); code != http.StatusUnauthorized {
				t.Fatalf("token-less request: %d", code)
			}
		}
		if err := sys.Enforcer.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		var rows, requests int
		natstest.WaitFor(t, 30*time.Second, func() error {
			res, err := sys.Store.Query(ctx, "SELECT count(), sum(count) FROM usage_events WHERE reason = 'missing'")
			if err != nil {
				return err
			}
			rows, requests = asInt(res.Rows[0][0]), asInt(res.Rows[0][1])
			if requests < n {
				return fmt.Errorf("%d of %d token-less requests stored", requests, n)
			}
			return nil
		})
		if requests != n || rows > 10 {
			t.Fatalf("%d token-less requests stored as %d rows summing to %d; want a handful of rows summing to %d", n, rows, requests, n)
		}
	})

	t.Run("a key written to the keys bucket is not accepted", func(t *testing.T) {
		// The issuer's own credential may write the bucket: the attacker
		// who holds it still cannot add a key the enforcers accept.
		nc, err := sys.Connect("attacker", sys.CredsFile(natsauth.RoleIssuer))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, events.BucketKeys)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := token.GenerateSigner(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := json.Marshal(events.KeyRecord{KeyID: signer.KeyID, PublicKey: signer.Public(), Created: time.Now()})
		rev, err := kv.Put(ctx, signer.KeyID, rec)
		if err != nil {
			t.Fatal(err)
		}
		natstest.WaitFor(t, 10*time.Second, func() error {
			if got := sys.Enforcer.KeysRevision(); got < rev {
				return fmt.Errorf("enforcer at keys revision %d, want %d", got, rev)
			}
			return nil
		})
		forged, err := signer.Mint(token.Claims{ID: "01900000-0000-7000-8000-000000000001", Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"admin:all", "invoices:read"}, Audience: []string{"invoices"}, Environment: "demo",
			IssuedAt: time.Now().Unix(), NotBefore: time.Now().Add(-time.Minute).Unix(), Expiry: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		if code, path, reason := get("/admin/x", forged); code == 200 || reason != "unknown_key" {
			t.Fatalf("token signed by the injected key: %d %q %q, want 401 unknown_key", code, path, reason)
		}
		keys, err := sys.Issuer.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listed := false
		for _, k := range keys {
			if k.KeyID == signer.KeyID {
				listed = true
				if k.Accepted {
					t.Errorf("key list says the injected key is accepted: %+v", k)
				}
			}
		}
		if !listed {
			t.Error("cordon key list does not show the injected key")
		}
	})
}

// asInt reads a ClickHouse integer cell (UInt64 comes as a string).
func asInt(v any) int {
	var n int
	fmt.Sscan(fmt.Sprint(v), &n)
	return n
}
