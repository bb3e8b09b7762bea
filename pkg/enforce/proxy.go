package enforce

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// NewProxy returns a reverse proxy to upstream behind the enforcer's
// Middleware. X-Forwarded-For is rebuilt: the client's chain is kept only
// when the socket peer is a trusted proxy.
func NewProxy(e *Enforcer, upstream *url.URL) (http.Handler, error) {
	if upstream == nil || upstream.Scheme == "" || upstream.Host == "" {
		return nil, fmt.Errorf("%w: upstream %v must be an absolute URL", ErrConfig, upstream)
	}
	if upstream.Scheme != "http" && upstream.Scheme != "https" {
		return nil, fmt.Errorf("%w: upstream scheme %q is not http or https", ErrConfig, upstream.Scheme)
	}
	log := e.log.With().Str("upstream", upstream.Redacted()).Logger()
	errLog := log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			if e.trusted(socketAddr(pr.In.RemoteAddr)) {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			errLog.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).
				Str("token_id", r.Header.Get(HeaderTokenID)).Msg("upstream request failed")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"bad_gateway"}` + "\n"))
		},
		BufferPool: bufferPool{},
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
	return e.Middleware(rp), nil
}

// bufferPool recycles the reverse proxy's copy buffers (32 KiB each).
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Get implements httputil.BufferPool.
func (bufferPool) Get() []byte { return *copyBuffers.Get().(*[]byte) }

// Put implements httputil.BufferPool.
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
