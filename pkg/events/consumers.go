package events

// Durable consumers. The auditor and the revoker read their streams with
// durable JetStream consumers whose names are built here from a prefix (the
// services' Options.Durable); the NATS permissions of their roles
// (pkg/natsauth) grant exactly the durables the services create with the
// default prefixes, and deny every other role those names. A deployment
// that changes a prefix must regenerate the permissions.
const (
	// DurableAuditor is the default prefix of the auditor's durables.
	DurableAuditor = "auditor"
	// DurableRevoker is the default prefix of the revoker's durables.
	DurableRevoker = "revoker"
)

// Durable names one durable consumer: the stream it reads and its name.
type Durable struct {
	Stream string
	Name   string
}

// String is "<stream>.<name>", the form the consumer's API subjects carry.
func (d Durable) String() string { return d.Stream + "." + d.Name }

// AuditorLedgerDurable is the auditor's durable consumer of TOKENS (ledger
// rows), for its durable prefix.
func AuditorLedgerDurable(prefix string) Durable {
	return Durable{Stream: StreamTokens, Name: prefix + "-ledger"}
}

// RevokerTokensDurable is the revoker's durable consumer of TOKENS (the
// denylist projection), for its durable prefix.
func RevokerTokensDurable(prefix string) Durable {
	return Durable{Stream: StreamTokens, Name: prefix + "-tokens"}
}

// RevokerAnomaliesDurable is the revoker's durable consumer of ANOMALIES
// (the response policy), for its durable prefix.
func RevokerAnomaliesDurable(prefix string) Durable {
	return Durable{Stream: StreamAnomalies, Name: prefix + "-anomalies"}
}

// AuditorDurables are every durable consumer an auditor with prefix
// creates: the ledger rows'. Each USAGE partition is read by an ordered
// consumer whose progress the auditor keeps itself (with its insert
// intents and checkpoints), and it writes the anomalies it detects
// itself: it has no durable on USAGE or ANOMALIES.
func AuditorDurables(prefix string) []Durable {
	return []Durable{AuditorLedgerDurable(prefix)}
}

// RevokerDurables are every durable consumer a revoker with prefix creates.
func RevokerDurables(prefix string) []Durable {
	return []Durable{RevokerTokensDurable(prefix), RevokerAnomaliesDurable(prefix), RevokerSSFDurable(prefix)}
}

// RevokerSSFDurable is the revoker's durable consumer of the ledger's
// revocations that pushes them as Shared Signals events, for its durable
// prefix (created only when receivers are configured).
func RevokerSSFDurable(prefix string) Durable {
	return Durable{Stream: StreamTokens, Name: prefix + "-ssf"}
}

// Dead-letter names: the consumer token of the subject each service moves
// the messages it cannot use to (DeadLetterSubject), whatever its durable
// prefix.
const (
	DeadLetterAuditor = "auditor"
	DeadLetterRevoker = "revoker"
)

// The auditor's partition ownership and state in lease mode
// (services/auditor lease.go, statestore_jetstream.go).
const (
	// BucketAuditorLeases is the KV bucket of partition leases and
	// instance heartbeats.
	BucketAuditorLeases = "auditor-leases"
	// BucketAuditorState is the KV bucket of each partition's insert
	// intent and checkpoint pointer.
	BucketAuditorState = "auditor-state"
	// BucketAuditorKnowledge is the KV bucket the partitions' detectors
	// share what they learnt through (services/auditor knowledge.go).
	BucketAuditorKnowledge = "auditor-knowledge"
	// ObjectStoreAuditorCheckpoints is the object store of partition
	// checkpoints.
	ObjectStoreAuditorCheckpoints = "auditor-checkpoints"
)
