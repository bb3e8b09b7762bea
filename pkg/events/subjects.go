package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ValidateName checks a name used as a subject token (tenant, enforcer, key
// id): 1–64 characters of a–z, A–Z, 0–9, '-' and '_'.
func ValidateName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 64 {
		return fmt.Errorf("%d characters, at most 64", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			continue
		}
		return fmt.Errorf("%q: character %q is not allowed (use a-z, A-Z, 0-9, '-', '_')", s, c)
	}
	return nil
}

// Subject prefixes and request/reply subjects.
const (
	SubjectTokenPrefix   = "cordon.token."
	SubjectKeyPrefix     = "cordon.key."
	SubjectPolicyChanged = "cordon.policy.changed"
	SubjectUsagePrefix   = "cordon.usage."
	SubjectAnomalyPrefix = "cordon.anomaly."
	SubjectDeadPrefix    = "cordon.dead."

	// Automation commands (request/reply).
	SubjectCmdIssue   = "cordon.cmd.issue"
	SubjectCmdRotate  = "cordon.cmd.rotate"
	SubjectCmdRevoke  = "cordon.cmd.revoke"
	SubjectCmdList    = "cordon.cmd.list"
	SubjectCmdInspect = "cordon.cmd.inspect"
	SubjectCmdSQL     = "cordon.cmd.sql"

	// Analysts' requests, answered by the auditor.
	SubjectCmdAnomalies     = "cordon.cmd.anomalies"
	SubjectCmdReport        = "cordon.cmd.report"
	SubjectCmdAuditorStatus = "cordon.cmd.auditor.status"
)

// Subject returns the subject an event is published on.
func Subject(e Envelope) string {
	switch p := e.Data.(type) {
	case *TokenIssued:
		return SubjectTokenPrefix + "issued." + p.Tenant + "." + p.TokenID
	case *TokenRotated:
		return SubjectTokenPrefix + "rotated." + p.Tenant + "." + p.TokenID
	case *TokenRevoked:
		return SubjectTokenPrefix + "revoked." + p.Tenant + "." + p.TokenID
	case *TokenExpired:
		return SubjectTokenPrefix + "expired." + p.Tenant + "." + p.TokenID
	case *TokenRestricted:
		return SubjectTokenPrefix + "restricted." + p.Tenant + "." + p.TokenID
	case *TokenReleased:
		return SubjectTokenPrefix + "released." + p.Tenant + "." + p.TokenID
	case *KeyPublished:
		return SubjectKeyPrefix + "published." + p.KeyID
	case *KeyRetired:
		return SubjectKeyPrefix + "retired." + p.KeyID
	case *UsageDecided:
		return UsageSubject(p.Tenant, p.Enforcer)
	case *AnomalyDetected:
		return SubjectAnomalyPrefix + p.Severity + "." + p.Tenant + "." + p.TokenID
	case *PolicyChanged:
		return SubjectPolicyChanged
	}
	return SubjectDeadPrefix + "unknown"
}

// UsageSubject is the subject of usage events; an empty tenant (token not
// parseable) becomes "_".
func UsageSubject(tenant, enforcer string) string {
	if tenant == "" {
		tenant = "_"
	}
	return SubjectUsagePrefix + tenant + "." + enforcer
}

// Stream and bucket names.
const (
	StreamTokens    = "TOKENS"
	StreamUsage     = "USAGE"
	StreamAnomalies = "ANOMALIES"
	StreamDead      = "DEADLETTER"
	BucketDenylist  = "denylist"
	BucketKeys      = "keys"
)

// StreamOptions tunes the stream definitions to a deployment.
type StreamOptions struct {
	// Replicas is the JetStream replication factor (1 embedded, 3 in a cluster).
	Replicas int
	// UsageMaxAge and UsageMaxBytes bound the USAGE stream.
	UsageMaxAge   time.Duration
	UsageMaxBytes int64
	// Memory selects memory storage (tests); file storage otherwise.
	Memory bool
	// UsagePartitions is how many partitions the USAGE stream's subject
	// transform spreads usage batches over (1..MaxUsagePartitions;
	// DefaultUsagePartitions when 0). It is fixed per deployment: the
	// auditors' detector state is kept per partition.
	UsagePartitions int
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.UsageMaxAge == 0 {
		o.UsageMaxAge = 7 * 24 * time.Hour
	}
	if o.UsageMaxBytes == 0 {
		o.UsageMaxBytes = 8 << 30
	}
	if o.UsagePartitions <= 0 {
		o.UsagePartitions = DefaultUsagePartitions
	}
	o.UsagePartitions = min(o.UsagePartitions, MaxUsagePartitions)
	return o
}

// Streams returns the stream definitions of Cordon.
func Streams(o StreamOptions) []jetstream.StreamConfig {
	o = o.withDefaults()
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.StreamConfig{
		{
			Name:        StreamTokens,
			Description: "token ledger: issued, rotated, revoked, expired; signing keys; policy changes",
			Subjects:    []string{SubjectTokenPrefix + ">", SubjectKeyPrefix + ">", SubjectPolicyChanged},
			Storage:     storage,
			Replicas:    o.Replicas,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew, // never drop ledger history
			Duplicates:  10 * time.Minute,
			DenyDelete:  true,
			DenyPurge:   true,
		},
		{
			Name:        StreamUsage,
			Description: "enforcement decisions: batches by partition of (tenant, holder), and single events",
			Subjects:    []string{SubjectUsagePrefix + ">"},
			// A batch published on cordon.usage.<tenant>.<enforcer>.<holder>
			// is stored under cordon.usage.part.<p>.<tenant>.<enforcer>.<holder>:
			// publishers need not know the partition count.
			SubjectTransform: &jetstream.SubjectTransformConfig{
				Source:      SubjectUsagePrefix + "*.*.*",
				Destination: usageTransform(o.UsagePartitions),
			},
			Storage:   storage,
			Replicas:  o.Replicas,
			Retention: jetstream.LimitsPolicy,
			MaxAge:    o.UsageMaxAge,
			MaxBytes:  o.UsageMaxBytes,
			Discard:   jetstream.DiscardOld,
			// Batches make message ids about a thousand times fewer than
			// events, so a window that covers a spool drained after a long
			// leader election is cheap.
			Duplicates: 20 * time.Minute,
		},
		{
			Name:        StreamAnomalies,
			Description: "anomalies found by the auditor's detectors",
			Subjects:    []string{SubjectAnomalyPrefix + ">"},
			Storage:     storage,
			Replicas:    o.Replicas,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      90 * 24 * time.Hour,
			Duplicates:  10 * time.Minute,
		},
		{
			Name:        StreamDead,
			Description: "messages that could not be decoded or validated, with the reason",
			Subjects:    []string{SubjectDeadPrefix + ">"},
			Storage:     storage,
			Replicas:    o.Replicas,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      30 * 24 * time.Hour,
		},
	}
}

// Buckets returns the KV bucket definitions of Cordon.
func Buckets(o StreamOptions) []jetstream.KeyValueConfig {
	o = o.withDefaults()
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.KeyValueConfig{
		{
			Bucket:      BucketDenylist,
			Description: "revoked token ids and revocation rules; each entry lives until the token would have expired",
			History:     1,
			Storage:     storage,
			Replicas:    o.Replicas,
			// Enables per-key TTLs (jetstream.KeyTTL) and marks their expiry.
			LimitMarkerTTL: time.Hour,
		},
		{
			Bucket:      BucketKeys,
			Description: "issuer Ed25519 public keys by key id",
			History:     1,
			Storage:     storage,
			Replicas:    o.Replicas,
		},
	}
}

// DeadLetterSubject is where a poison message from a consumer is moved.
func DeadLetterSubject(consumer string) string { return SubjectDeadPrefix + consumer }

// Header names used on dead letters.
const (
	HeaderDeadReason  = "Cordon-Dead-Reason"
	HeaderDeadSubject = "Cordon-Dead-Subject"
)
