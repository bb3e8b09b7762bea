package enforce

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/spool"
	"github.com/cordonhq/cordon/pkg/token"
)

// Defaults of Options.
const (
	DefaultCacheSize         = 16384
	DefaultNegativeCacheSize = 1024
	DefaultUsageBuffer       = 16384
	DefaultUsageBatch        = 1000
	DefaultUsageLinger       = 50 * time.Millisecond
	DefaultUsageBatchBytes   = events.UsageBatchMaxBytes
	DefaultUsageFormat       = UsageFormatBatch
	DefaultSpoolMaxBytes     = spool.DefaultMaxBytes
	DefaultDeviceHeader      = "X-Client-Cert-Thumbprint"

	// DefaultMaxStaleness is the denylist staleness bound the shipped
	// proxies (`cordon enforce`, `cordon up`) fail closed at by default.
	// The library itself fails closed only when asked (Options.FailClosed):
	// an embedded enforcer without NATS has no denylist to keep current.
	DefaultMaxStaleness = 10 * time.Second

	// DefaultThrottleBurst failed verifications from one source within
	// DefaultThrottleWindow throttle it for DefaultThrottleCooldown;
	// DefaultThrottleSources sources are tracked at most.
	DefaultThrottleBurst    = 32
	DefaultThrottleWindow   = 10 * time.Second
	DefaultThrottleCooldown = 30 * time.Second
	DefaultThrottleSources  = 8192

	// DefaultAggregateInterval is how long token-less denials of one source
	// are folded into one usage event; DefaultAggregateSources bounds the
	// (source, reason, key id) entries folded per interval.
	DefaultAggregateInterval = time.Second
	DefaultAggregateSources  = 4096
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
	// without it staleness is only reported (Stats, logs). Off by default in
	// the library; the shipped proxies turn it on with DefaultMaxStaleness
	// (StalenessPolicy says which applies).
	//
	// When the view is current: while a revoker is heard on the denylist
	// broadcast (a heartbeat within max(8 of its intervals, 2s)), as of
	// the oldest, over the revoker replicas, of the arrival of the latest
	// heartbeat by which every change the replica announced was applied
	// (from the broadcast, a resync, or the bucket). A replica with a
	// change nobody could supply keeps the view stale, even once silent,
	// until the bucket holds it. With no revoker heard lately (or ever:
	// an embedded enforcer without one), the bucket watch and its probe
	// decide, as before the broadcast. The bound is measured from a
	// heartbeat's arrival at this enforcer, never from the revoker's
	// clock: a heartbeat delayed in transit counts as fresh as it arrives.
	MaxStaleness time.Duration
	FailClosed   bool
	// ProbeInterval is how often the enforcer asks JetStream for the
	// denylist's last revision to confirm its view is current (default
	// 1s, or MaxStaleness/4 when that is shorter).
	ProbeInterval time.Duration

	// ThrottleBurst is how many failed verifications (malformed token,
	// unknown key, bad signature) one source (an IPv4 address, an IPv6 /64)
	// may cause within ThrottleWindow; past it, the source's tokens that are
	// not already verified are denied with ReasonThrottled, without running
	// the signature check, for ThrottleCooldown. ThrottleSources bounds the
	// sources tracked. Defaults: DefaultThrottleBurst, DefaultThrottleWindow,
	// DefaultThrottleCooldown, DefaultThrottleSources; a negative
	// ThrottleBurst turns throttling off. A Request without RemoteAddr is
	// never throttled (it has no source to hold to account).
	ThrottleBurst    int
	ThrottleWindow   time.Duration
	ThrottleCooldown time.Duration
	ThrottleSources  int

	// AggregateInterval is how long the denials that name no token (no
	// token, a malformed one, an unknown key, a bad signature, a throttled
	// source, a bad path, no route) are folded, per source, reason and key
	// id, into one usage event whose Count says how many there were
	// (default DefaultAggregateInterval; negative: every decision is its
	// own event). AggregateSources bounds the entries of one interval
	// (default DefaultAggregateSources); past it, decisions fold into one
	// entry per reason from source 0.0.0.0, counted in Stats.
	AggregateInterval time.Duration
	AggregateSources  int

	// UsageFormat is how decisions are published: UsageFormatBatch (the
	// default) in usage batches, one JetStream message per batch of a
	// (tenant, holder) (events.UsageBatchBuilder); UsageFormatEvent as one
	// JSON usage.decided event each, for auditors older than batches and
	// to roll back.
	UsageFormat string
	// UsageBuffer bounds the usage events waiting to be published (default
	// DefaultUsageBuffer); when it is full, events are dropped and counted.
	// UsageBatch is the most records of one batch (default
	// DefaultUsageBatch, at most events.UsageBatchMaxRecords); in the
	// event format, the most events published before waiting for their
	// acknowledgements. UsageBatchBytes bounds the encoded size of one
	// batch (default and at most events.UsageBatchMaxBytes, at least 1 KiB;
	// with a spool, also a sixteenth of SpoolMaxBytes, the spool's segment).
	UsageBuffer     int
	UsageBatch      int
	UsageBatchBytes int
	// UsageLinger is how long the publisher lets batches fill before
	// publishing them (default DefaultUsageLinger; negative publishes at
	// once): a batch goes out at UsageBatch records, UsageBatchBytes or
	// UsageLinger after the window's first decision, whichever comes first.
	UsageLinger time.Duration
	// DisableUsage turns usage events off (benchmarks, embedded checks).
	DisableUsage bool
	// SpoolDir, when set, is a directory of this enforcer's own where the
	// usage events JetStream does not acknowledge are kept on disk and
	// republished, oldest first and with their original message ids, once
	// it accepts again (and after a restart); empty: no spool, such events
	// are counted failed. SpoolMaxBytes bounds the spool's files (default
	// DefaultSpoolMaxBytes, at least 64 KiB): when full, the oldest events
	// are dropped and counted (Stats.UsageSpoolDropped).
	SpoolDir      string
	SpoolMaxBytes int64

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
	if o.SpoolMaxBytes == 0 {
		o.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if o.SpoolDir != "" && o.SpoolMaxBytes < spoolMinBytes {
		return o, fmt.Errorf("%w: spool size %d bytes: want at least %d", ErrConfig, o.SpoolMaxBytes, spoolMinBytes)
	}
	if err := checkUsageFormat(&o); err != nil {
		return o, err
	}
	o.UsageBatchBytes = batchBytes(&o)
	if o.Leeway < 0 || o.MaxStaleness < 0 {
		return o, fmt.Errorf("%w: leeway and max staleness must not be negative", ErrConfig)
	}
	if o.ThrottleBurst == 0 {
		o.ThrottleBurst = DefaultThrottleBurst
	}
	if o.ThrottleWindow <= 0 {
		o.ThrottleWindow = DefaultThrottleWindow
	}
	if o.ThrottleCooldown <= 0 {
		o.ThrottleCooldown = DefaultThrottleCooldown
	}
	if o.ThrottleSources <= 0 {
		o.ThrottleSources = DefaultThrottleSources
	}
	if o.AggregateInterval == 0 {
		o.AggregateInterval = DefaultAggregateInterval
	}
	if o.AggregateSources <= 0 {
		o.AggregateSources = DefaultAggregateSources
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
		if o.MaxStaleness > 0 && o.MaxStaleness/4 < o.ProbeInterval {
			o.ProbeInterval = max(o.MaxStaleness/4, 10*time.Millisecond)
		}
	}
	return o, nil
}

// StalenessPolicy says in one line what the enforcer does when its denylist
// view goes stale, for the start-up message of a proxy: "failing closed
// when the denylist is older than 10s", or that it does not.
func (o Options) StalenessPolicy() string {
	switch {
	case o.FailClosed && o.MaxStaleness > 0:
		return fmt.Sprintf("failing closed when the denylist is older than %v", o.MaxStaleness)
	case o.MaxStaleness > 0:
		return fmt.Sprintf("NOT failing closed: a denylist older than %v is only reported (fail-closed is off)", o.MaxStaleness)
	}
	return "NOT failing closed: the denylist's staleness is not bounded (no max staleness)"
}
