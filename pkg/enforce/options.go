package enforce

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Defaults of Options.
const (
	DefaultCacheSize         = 16384
	DefaultNegativeCacheSize = 1024
	DefaultUsageBuffer       = 16384
	DefaultUsageBatch        = 512
	DefaultUsageLinger       = 20 * time.Millisecond
	DefaultDeviceHeader      = "X-Client-Cert-Thumbprint"
)

// Sentinel errors.
var (
	// ErrConfig wraps every invalid Options or Routes error.
	ErrConfig = errors.New("invalid enforcer configuration")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("enforcer already started")
	// ErrClosed is returned when the enforcer was closed.
	ErrClosed = errors.New("enforcer closed")
)

// Options configures an Enforcer.
type Options struct {
	// ID names this enforcer instance in usage events and subjects
	// (events.ValidateName: a–z, A–Z, 0–9, '-', '_').
	ID string
	// Service is the service this enforcer protects: a token must name it
	// (or "*") in its audience. Taken from Routes when empty.
	Service string
	// Environment is where the enforcer runs ("prod", "staging"); a token
	// bound to another environment is denied. Taken from Routes when empty.
	Environment string
	// Routes map method and path to the scope they require (Middleware and
	// NewProxy); nil denies every HTTP request with ReasonNoRoute.
	Routes *Routes

	// TrustAnchors endorse the signing keys Start takes from the keys
	// bucket: a key without a valid endorsement by one of them is ignored,
	// so a write to the bucket alone cannot add a key. Start fails without
	// one. Keys given to AddKey are trusted by the embedding program.
	TrustAnchors token.Anchors

	// TrustedProxies are the socket peers whose X-Forwarded-For, X-Real-IP
	// and device header are believed. Empty trusts no one.
	TrustedProxies []netip.Prefix
	// DeviceHeader is the header a trusted proxy sets to the client
	// certificate: a hex SHA-256 thumbprint, or a URL-escaped PEM certificate
	// (nginx $ssl_client_escaped_cert). Default DefaultDeviceHeader.
	DeviceHeader string
	// KeepAuthorization forwards the Authorization header upstream; by
	// default it is removed once the token is checked.
	KeepAuthorization bool

	// CacheSize bounds the cache of verified tokens (default
	// DefaultCacheSize); NegativeCacheSize bounds the cache of rejected
	// token strings (default DefaultNegativeCacheSize).
	CacheSize         int
	NegativeCacheSize int
	// Leeway tolerates clock skew on not-before and expiry (default 0).
	Leeway time.Duration

	// MaxStaleness, when positive, bounds how old the denylist view may be:
	// with FailClosed every token is denied with ReasonDenylistStale while
	// the view has not been known current for longer than MaxStaleness;
	// without it staleness is only reported (Stats, logs). Off by default.
	MaxStaleness time.Duration
	FailClosed   bool
	// ProbeInterval is how often the enforcer asks JetStream for the
	// denylist's last revision to confirm its view is current (default
	// 1s, or MaxStaleness/4 when that is shorter).
	ProbeInterval time.Duration

	// UsageBuffer bounds the usage events waiting to be published (default
	// DefaultUsageBuffer); when it is full, events are dropped and counted.
	// UsageBatch is the most events published before waiting for their
	// acknowledgements (default DefaultUsageBatch).
	UsageBuffer int
	UsageBatch  int
	// UsageLinger is how long the publisher lets a batch fill before
	// publishing it (default DefaultUsageLinger; negative publishes at once).
	UsageLinger time.Duration
	// DisableUsage turns usage events off (benchmarks, embedded checks).
	DisableUsage bool

	// Log receives the enforcer's logs; token strings are never logged.
	Log zerolog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Routes != nil {
		if o.Service == "" {
			o.Service = o.Routes.Service
		}
		if o.Environment == "" {
			o.Environment = o.Routes.Environment
		}
	}
	if err := events.ValidateName(o.ID); err != nil {
		return o, fmt.Errorf("%w: id: %v", ErrConfig, err)
	}
	if o.Service == "" {
		return o, fmt.Errorf("%w: service is required", ErrConfig)
	}
	for _, p := range o.TrustedProxies {
		if !p.IsValid() {
			return o, fmt.Errorf("%w: trusted proxy %v is not a CIDR", ErrConfig, p)
		}
	}
	if o.DeviceHeader == "" {
		o.DeviceHeader = DefaultDeviceHeader
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.NegativeCacheSize <= 0 {
		o.NegativeCacheSize = DefaultNegativeCacheSize
	}
	if o.UsageBuffer <= 0 {
		o.UsageBuffer = DefaultUsageBuffer
	}
	if o.UsageBatch <= 0 {
		o.UsageBatch = DefaultUsageBatch
	}
	if o.UsageLinger == 0 {
		o.UsageLinger = DefaultUsageLinger
	}
	if o.Leeway < 0 || o.MaxStaleness < 0 {
		return o, fmt.Errorf("%w: leeway and max staleness must not be negative", ErrConfig)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
		if o.MaxStaleness > 0 && o.MaxStaleness/4 < o.ProbeInterval {
			o.ProbeInterval = max(o.MaxStaleness/4, 10*time.Millisecond)
		}
	}
	return o, nil
}
