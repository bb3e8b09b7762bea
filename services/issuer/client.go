package issuer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// ErrUnreachable is returned by a Client that cannot reach the API at all
// (no HTTP reply): the issuer is down or the URL is wrong.
var ErrUnreachable = errors.New("cannot reach the issuer API")

// ErrClientURL is returned by NewClient for a URL that is not http(s).
var ErrClientURL = errors.New("not an http(s) URL")

// DefaultClientTimeout bounds each request of a Client built without an
// HTTP client of its own.
const DefaultClientTimeout = 30 * time.Second

// maxReply bounds the size of an API reply a Client reads.
const maxReply = 64 << 20

// ClientConfig configures NewClient.
type ClientConfig struct {
	// URL is the API's base URL, http://host:port or https://host:port.
	URL string
	// Token is the admin token sent with every request (see
	// ReadAdminToken); never logged.
	Token string
	// CAFile is a PEM file of the CA that signed an HTTPS API's
	// certificate; empty trusts the system's roots.
	CAFile string
	// HTTPClient, when set, sends the requests (CAFile is then ignored):
	// for a client certificate, a proxy or a test transport.
	HTTPClient *http.Client
}

// Client calls the issuer's HTTP API as an admin: what `cordon token` and
// `cordon key` use, and what automation can use instead of the NATS
// commands (cmd.go). Its methods return *APIError for an error reply and
// an error wrapping ErrUnreachable when there was no reply.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// CheckURL checks that u can be the base URL of the API: http or https,
// with a host. The error wraps ErrClientURL.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("issuer API %q: %w", u, ErrClientURL)
	}
	return nil
}

// NewClient checks the configuration and returns a client; it sends
// nothing.
func NewClient(c ClientConfig) (*Client, error) {
	if err := CheckURL(c.URL); err != nil {
		return nil, err
	}
	if c.Token == "" {
		return nil, errors.New("issuer API client: an admin token is required")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no PEM certificate found in CA file %s", c.CAFile)
			}
			hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		}
	}
	return &Client{base: strings.TrimRight(c.URL, "/"), token: c.Token, hc: hc}, nil
}

// missingTokenFile is the error of ReadAdminToken for a file that does not
// exist: it says where the issuer writes one.
type missingTokenFile struct{ path string }

func (e missingTokenFile) Error() string {
	return fmt.Sprintf("admin token file %s does not exist: the issuer writes one to <data dir>/%s at first start", e.path, AdminTokenFile)
}

func (e missingTokenFile) Unwrap() error { return fs.ErrNotExist }

// ReadAdminToken reads an admin token from a file, such as the bootstrap
// token the issuer writes to <data dir>/AdminTokenFile. A missing file is
// an error wrapping fs.ErrNotExist that says where the issuer writes one;
// an empty file is an error. When warn is set, it receives a warning if
// the file is readable by others than its owner.
func ReadAdminToken(path string, warn io.Writer) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", missingTokenFile{path}
		}
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if warn != nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(warn, "warning: admin token file %s is readable by others (mode %v); chmod 600 it\n", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
}

// APIError is an error reply of the API: its HTTP status and body.
type APIError struct {
	Status int
	Body   ErrorBody
}

// Error reads "scope … is not in the ceiling … (HTTP 422, exceeds_ceiling)".
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Body.Error, e.Status, e.Body.Code)
}

// Issue mints a token (POST /v1/tokens). A non-empty idempotencyKey makes
// the call replay-safe: retrying with it returns the same token.
func (c *Client) Issue(ctx context.Context, req IssueRequest, idempotencyKey string) (*IssueResponse, error) {
	return send[IssueResponse](ctx, c, http.MethodPost, "/v1/tokens", req, idempotencyKey)
}

// List lists the tokens that match the filter (GET /v1/tokens).
func (c *Client) List(ctx context.Context, f ListFilter) (*TokenList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"tenant": f.Tenant, "holder": f.Holder, "status": f.Status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/tokens"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return send[TokenList](ctx, c, http.MethodGet, path, nil, "")
}

// Inspect returns a token's registry entry and ledger history (GET
// /v1/tokens/{id}).
func (c *Client) Inspect(ctx context.Context, id string) (*TokenDetail, error) {
	return send[TokenDetail](ctx, c, http.MethodGet, "/v1/tokens/"+url.PathEscape(id), nil, "")
}

// Rotate mints a successor of a token and revokes the token after the grace
// period (POST /v1/tokens/{id}/rotate); idempotencyKey as for Issue.
func (c *Client) Rotate(ctx context.Context, id string, req RotateRequest, idempotencyKey string) (*RotateResponse, error) {
	return send[RotateResponse](ctx, c, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/rotate", req, idempotencyKey)
}

// Keys lists the issuer's signing keys (GET /v1/keys).
func (c *Client) Keys(ctx context.Context) (*KeyList, error) {
	return send[KeyList](ctx, c, http.MethodGet, "/v1/keys", nil, "")
}

// RotateKey makes a new signing key active (POST /v1/keys/rotate); older
// keys keep verifying until retired.
func (c *Client) RotateKey(ctx context.Context) (*KeyInfo, error) {
	return send[KeyInfo](ctx, c, http.MethodPost, "/v1/keys/rotate", nil, "")
}

// RetireKey retires a signing key that is not the active one (POST
// /v1/keys/{kid}/retire): tokens it signed stop verifying everywhere.
func (c *Client) RetireKey(ctx context.Context, kid string, req RetireRequest) (*RetireResponse, error) {
	return send[RetireResponse](ctx, c, http.MethodPost, "/v1/keys/"+url.PathEscape(kid)+"/retire", req, "")
}

// send sends a request and returns its decoded reply.
func send[T any](ctx context.Context, c *Client, method, path string, in any, idempotencyKey string) (*T, error) {
	var out T
	if err := c.do(ctx, method, path, in, &out, idempotencyKey); err != nil {
		return nil, err
	}
	return &out, nil
}

// do sends a request with the admin token and decodes a 2xx reply into out;
// an error reply becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, in, out any, idempotencyKey string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request of %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		req.Header.Set(HeaderIdempotencyKey, idempotencyKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return fmt.Errorf("read reply of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(raw, &e.Body) != nil || e.Body.Error == "" {
			e.Body = ErrorBody{Error: strings.TrimSpace(string(raw)), Code: http.StatusText(resp.StatusCode)}
		}
		return e
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode reply of %s %s: %w", method, path, err)
	}
	return nil
}
