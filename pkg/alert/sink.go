package alert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Sink delivers alerts to one receiver.
type Sink interface {
	// Name names the sink in logs and metrics ("alertmanager", "slack",
	// "pagerduty"); never the URL or key.
	Name() string
	// Send delivers the alert. retry reports whether a failure is
	// transient and worth another attempt.
	Send(ctx context.Context, a *Alert) (retry bool, err error)
}

// ErrBadConfig is wrapped by sink constructors rejecting their config.
var ErrBadConfig = errors.New("bad alert sink config")

// defaultClient is used when a sink config has no client.
var defaultClient = &http.Client{Timeout: 15 * time.Second}

// checkURL validates a receiver URL without ever echoing it (it may hold a
// secret, as Slack webhook URLs do).
func checkURL(kind, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %s: the URL must be an absolute http or https URL", ErrBadConfig, kind)
	}
	return nil
}

// post sends body as JSON and classifies the answer: 2xx is success, 429
// and 5xx and network errors are worth a retry, other statuses are not.
// Errors never contain the URL.
func post(ctx context.Context, client *http.Client, rawURL string, body []byte) (bool, error) {
	if client == nil {
		client = defaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("build request: invalid receiver URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cordon-revoker")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s request: %w", ue.Op, ue.Err)
		}
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("receiver answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	default:
		return false, fmt.Errorf("receiver rejected the alert: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
