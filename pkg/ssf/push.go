package ssf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrRejected: the receiver refused the SET for good (RFC 8935 400 with an
// error code): sending it again cannot help.
var ErrRejected = errors.New("ssf: receiver rejected the SET")

// Pusher delivers SETs to one receiver's push endpoint (RFC 8935).
type Pusher struct {
	// Endpoint is the receiver's URL.
	Endpoint string
	// Authorization, when set, is sent as the Authorization header (for
	// example "Bearer <secret>"); it is never logged.
	Authorization string
	// Client sends the requests (default: a 10 s timeout).
	Client *http.Client
}

// Push sends one SET. nil: the receiver accepted it (202, or any 2xx). An
// error wrapping ErrRejected: refused for good (400 with a JSON error
// code, 401/403 are not: a credential may be fixed). Anything else may be
// retried.
func (p *Pusher) Push(ctx context.Context, set string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Endpoint, strings.NewReader(set))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	req.Header.Set("Content-Type", MediaType)
	req.Header.Set("Accept", "application/json")
	if p.Authorization != "" {
		req.Header.Set("Authorization", p.Authorization)
	}
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ssf: push to %s: %w", redactURL(p.Endpoint), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	if resp.StatusCode == http.StatusBadRequest {
		var e PushError
		if json.Unmarshal(body, &e) == nil && e.Err != "" {
			return fmt.Errorf("%w: %s: %s", ErrRejected, e.Err, e.Description)
		}
	}
	return fmt.Errorf("ssf: push to %s: %s", redactURL(p.Endpoint), resp.Status)
}

// PushError is the body of a receiver's 400 reply (RFC 8935 section 2.3).
type PushError struct {
	Err         string `json:"err"`
	Description string `json:"description,omitempty"`
}

// Error codes of PushError (RFC 8935 section 2.4).
const (
	ErrCodeInvalidRequest = "invalid_request"
	ErrCodeInvalidKey     = "invalid_key"
	ErrCodeInvalidIssuer  = "invalid_issuer"
	ErrCodeInvalidAud     = "invalid_audience"
	ErrCodeAuthFailed     = "authentication_failed"
	ErrCodeAccessDenied   = "access_denied"
)

// redactURL drops a URL's query and user info (they may hold secrets).
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			u = u[:j+3] + u[i+1:]
		}
	}
	return u
}
