package issuer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newClient returns a client of the harness's API with its admin token.
func (h *harness) newClient(c ClientConfig) *Client {
	h.t.Helper()
	c.URL, c.Token = h.url, h.admin
	cl, err := NewClient(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return cl
}

// TestClient drives every typed method against a real issuer and checks
// the replies against the registry.
func TestClient(t *testing.T) {
	h := newHarness(t)
	c := h.newClient(ClientConfig{})
	ctx := context.Background()

	req := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"}
	first, err := c.Issue(ctx, req, "client-test-1")
	if err != nil {
		t.Fatal(err)
	}
	h.remember(first.Token)
	again, err := c.Issue(ctx, req, "client-test-1")
	if err != nil || again.ID != first.ID || again.Token != first.Token {
		t.Fatalf("retry with the same idempotency key: %+v, %v; want token %s again", again, err, first.ID)
	}
	other, err := c.Issue(ctx, IssueRequest{Tenant: "acme", Holder: "checkout-web", Scopes: []string{"cart:read"}, Environment: "staging"}, "")
	if err != nil || other.ID == first.ID {
		t.Fatalf("second issue: %+v, %v", other, err)
	}
	h.remember(other.Token)

	list, err := c.List(ctx, ListFilter{Holder: "billing-api"})
	if err != nil || len(list.Tokens) != 1 || list.Tokens[0].ID != first.ID {
		t.Fatalf("list --holder billing-api: %+v, %v", list, err)
	}
	if list, err = c.List(ctx, ListFilter{}); err != nil || len(list.Tokens) < 2 {
		t.Fatalf("list all: %+v, %v", list, err)
	}

	rot, err := c.Rotate(ctx, first.ID, RotateRequest{Grace: "0s"}, "client-test-2")
	if err != nil || rot.Predecessor.ID != first.ID || rot.Successor.RotatedFrom != first.ID || rot.Predecessor.Status != StatusRevoked {
		t.Fatalf("rotate: %+v, %v", rot, err)
	}
	h.remember(rot.Token)
	d, err := c.Inspect(ctx, first.ID)
	if err != nil || d.Status != StatusRevoked || d.SuccessorID != rot.Successor.ID || len(d.History) < 2 {
		t.Fatalf("inspect: %+v, %v", d, err)
	}

	keys, err := c.Keys(ctx)
	if err != nil || len(keys.Keys) != 1 || !keys.Keys[0].Active {
		t.Fatalf("keys: %+v, %v", keys, err)
	}
	old := keys.Keys[0].KeyID
	k, err := c.RotateKey(ctx)
	if err != nil || k.KeyID == old || !k.Active {
		t.Fatalf("rotate key: %+v, %v", k, err)
	}
	ret, err := c.RetireKey(ctx, old, RetireRequest{Reason: "client test"})
	if err != nil || ret.KeyID != old || !ret.Retired || !ret.AdminTokenRenewed {
		t.Fatalf("retire key: %+v, %v", ret, err)
	}
	h.assertNoSecrets()
}

// TestClientErrors: an error reply is an *APIError with the API's status
// and code; no reply at all wraps ErrUnreachable; neither repeats the
// admin token.
func TestClientErrors(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.newClient(ClientConfig{})
	stranger, err := NewClient(ClientConfig{URL: h.url, Token: "cordon_not_a_token"})
	if err != nil {
		t.Fatal(err)
	}
	down, err := NewClient(ClientConfig{URL: "http://127.0.0.1:1", Token: h.admin})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
		is     error
	}{
		{"exceeds ceiling", func() error {
			_, err := c.Issue(ctx, IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:delete"}}, "")
			return err
		}, http.StatusUnprocessableEntity, "exceeds_ceiling", nil},
		{"unknown token", func() error { _, err := c.Inspect(ctx, "nope"); return err }, http.StatusNotFound, "not_found", nil},
		{"unknown key", func() error { _, err := c.RetireKey(ctx, "k-none", RetireRequest{}); return err }, http.StatusNotFound, "not_found", nil},
		{"bad filter", func() error { _, err := c.List(ctx, ListFilter{Status: "lost"}); return err }, http.StatusBadRequest, "bad_request", nil},
		{"refused token", func() error { _, err := stranger.Keys(ctx); return err }, http.StatusUnauthorized, "unauthenticated", nil},
		{"issuer down", func() error { _, err := down.Keys(ctx); return err }, 0, "", ErrUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("no error")
			}
			var ae *APIError
			if got := errors.As(err, &ae); got != (tc.status != 0) {
				t.Fatalf("errors.As(*APIError) = %v for %v", got, err)
			}
			if ae != nil && (ae.Status != tc.status || ae.Body.Code != tc.code || !strings.Contains(err.Error(), tc.code)) {
				t.Errorf("got HTTP %d %q (%v), want %d %q", ae.Status, ae.Body.Code, err, tc.status, tc.code)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			if strings.Contains(err.Error(), h.admin) {
				t.Error("the error repeats the admin token")
			}
		})
	}
}

// TestClientConfig: NewClient refuses what cannot work before sending
// anything.
func TestClientConfig(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    ClientConfig
		is   error
		want string
	}{
		{"not a URL", ClientConfig{URL: "127.0.0.1:7400", Token: "t"}, ErrClientURL, `"127.0.0.1:7400"`},
		{"other scheme", ClientConfig{URL: "nats://127.0.0.1:4222", Token: "t"}, ErrClientURL, "not an http(s) URL"},
		{"no host", ClientConfig{URL: "http://", Token: "t"}, ErrClientURL, "not an http(s) URL"},
		{"no token", ClientConfig{URL: "http://127.0.0.1:7400"}, nil, "an admin token is required"},
		{"missing CA", ClientConfig{URL: "https://127.0.0.1:7400", Token: "t", CAFile: filepath.Join(t.TempDir(), "none.pem")}, fs.ErrNotExist, "read CA"},
		{"CA without a certificate", ClientConfig{URL: "https://127.0.0.1:7400", Token: "t", CAFile: garbage}, nil, "no PEM certificate found in CA file " + garbage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.c)
			if err == nil || c != nil {
				t.Fatalf("NewClient = %v, %v; want an error", c, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestClientTLS: an HTTPS API is reached with the CA given in CAFile, and
// refused without it.
func TestClientTLS(t *testing.T) {
	cert := selfSigned(t, "127.0.0.1")
	h := &harness{t: t, tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	h.init()
	h.start()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.url, "https://") {
		t.Fatalf("the harness serves %s", h.url)
	}
	if keys, err := h.newClient(ClientConfig{CAFile: ca}).Keys(context.Background()); err != nil || len(keys.Keys) != 1 {
		t.Fatalf("keys over HTTPS with the CA: %+v, %v", keys, err)
	}
	if _, err := h.newClient(ClientConfig{}).Keys(context.Background()); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("keys over HTTPS without the CA: %v, want a certificate error", err)
	}
}

func TestReadAdminToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, path, want, err string
		warned                bool
	}{
		{name: "trimmed", path: write("ok.token", "  cordon_abc\n", 0o600), want: "cordon_abc"},
		{name: "readable by others", path: write("loose.token", "cordon_abc\n", 0o644), want: "cordon_abc", warned: true},
		{name: "empty", path: write("empty.token", " \n", 0o600), err: "is empty"},
		{name: "missing", path: filepath.Join(dir, "none.token"), err: "does not exist: the issuer writes one to <data dir>/" + AdminTokenFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var warn bytes.Buffer
			got, err := ReadAdminToken(tc.path, &warn)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.path) {
					t.Fatalf("err = %v, want one naming %s with %q", err, tc.path, tc.err)
				}
			} else if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			if tc.name == "missing" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%v is not fs.ErrNotExist", err)
			}
			if w := strings.Contains(warn.String(), "readable by others"); w != tc.warned {
				t.Errorf("warning %q, want one: %v", warn.String(), tc.warned)
			}
			if strings.Contains(warn.String(), "cordon_abc") {
				t.Error("the warning repeats the token")
			}
		})
	}
}
