package natsauth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cordonhq/cordon/pkg/events"
)

// Role is a kind of Cordon process with its own NATS identity.
type Role string

// The roles, one NATS user each.
const (
	// RoleIssuer mints and rotates tokens: it writes the ledger (every
	// cordon.token.* event, signing keys, policy changes) and the keys
	// bucket, and answers cordon.cmd.{issue,rotate,list,inspect}.
	RoleIssuer Role = "issuer"
	// RoleAuditor consumes USAGE and TOKENS with durable consumers (rows)
	// and ordered ones (detectors, in stream order from their checkpoint),
	// publishes anomalies (and writes their rows itself) and dead letters,
	// reads the keys and denylist buckets (to authenticate analysts) and
	// answers the analysts' requests: cordon.cmd.sql, anomalies, report,
	// auditor.status (that one from every instance, not a queue group). Its analyst API's enforcer follows the denylist
	// broadcast (cordon.denylist.change, heartbeat, resync requests). In
	// lease mode it creates and writes the auditor-leases and
	// auditor-state buckets and the auditor-checkpoints object store.
	RoleAuditor Role = "auditor"
	// RoleRevoker consumes TOKENS and ANOMALIES, publishes revocations on
	// the ledger, is the only writer of the denylist bucket, and answers
	// cordon.cmd.revoke.
	RoleRevoker Role = "revoker"
	// RoleEnforcer publishes usage events only as itself — on
	// cordon.usage.<tenant>.<its enforcer id> — reads the denylist and
	// keys buckets, and follows the denylist broadcast (asking a revoker
	// to resync). Nothing else. Every enforcer has an identity of its
	// own (EnforcerPermissions): no enforcer credential can report usage
	// under another enforcer's name.
	RoleEnforcer Role = "enforcer"
	// RoleAdmin is the CLI and automation: it sends cordon.cmd.* requests
	// (which carry their own admin token), watches the ledger and the
	// anomalies as they are published (ids and claims, never a token
	// string), and may create missing streams and buckets and inspect
	// them — never update, delete or purge them: an update could shorten
	// the ledger's or the denylist's retention.
	RoleAdmin Role = "admin"
)

// ErrUnknownRole is returned for a role name that is not one of Roles().
var ErrUnknownRole = errors.New("unknown role")

// ErrEnforcerID is returned when an enforcer identity lacks a valid
// enforcer id: the enforcer role exists only per enforcer.
var ErrEnforcerID = errors.New("enforcer identity needs a valid enforcer id")

// ValidateEnforcerID checks an enforcer id: the subject token of its usage
// events and part of its seed file's name (1–64 of a–z, A–Z, 0–9, '-', '_').
func ValidateEnforcerID(id string) error {
	if err := events.ValidateName(id); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrEnforcerID, id, err)
	}
	return nil
}

// Roles returns every role, in a stable order.
func Roles() []Role {
	return []Role{RoleIssuer, RoleAuditor, RoleRevoker, RoleEnforcer, RoleAdmin}
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles(), r) {
		return "", fmt.Errorf("%w %q (want one of %s)", ErrUnknownRole, s, roleList())
	}
	return r, nil
}

func roleList() string {
	s := make([]string, 0, len(Roles()))
	for _, r := range Roles() {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}

// Durables returns the durable consumers role r is granted: the ones its
// service creates with the default prefixes (events.AuditorDurables,
// events.RevokerDurables). Every other role is denied those names. A
// deployment that renames the durables must regenerate the permissions.
func Durables(r Role) []events.Durable {
	switch r {
	case RoleAuditor:
		return events.AuditorDurables(events.DurableAuditor)
	case RoleRevoker:
		return events.RevokerDurables(events.DurableRevoker)
	}
	return nil
}

// ResponseTTL is how long a responder (issuer, auditor, revoker) may answer
// a request it received; each request allows one reply.
const ResponseTTL = 2 * time.Minute

// Permissions returns the NATS permissions of role for a user whose
// private inbox prefix is inbox (InboxPrefix of its public key). The
// enforcer role has no permissions of its own: each enforcer's are
// EnforcerPermissions (Permissions(RoleEnforcer, …) fails with
// ErrEnforcerID).
func Permissions(r Role, inbox string) (*server.Permissions, error) {
	if r == RoleEnforcer {
		return nil, fmt.Errorf("permissions of %s: %w: use EnforcerPermissions", r, ErrEnforcerID)
	}
	return permissions(r, "", inbox)
}

// EnforcerPermissions returns the NATS permissions of the enforcer whose
// id is id: it may publish usage on cordon.usage.*.<id> and usage batches
// on cordon.usage.*.<id>.* (any tenant and holder, its own name) and read the denylist and keys buckets.
func EnforcerPermissions(id, inbox string) (*server.Permissions, error) {
	if err := ValidateEnforcerID(id); err != nil {
		return nil, fmt.Errorf("permissions of %s: %w", RoleEnforcer, err)
	}
	return permissions(RoleEnforcer, id, inbox)
}

// BootstrapPermissions are those of the one-time identity that creates and
// updates Cordon's streams and buckets on the embedded server
// (natsrun.Server.Bootstrap): the stream create, update and info API of
// Cordon's streams and nothing else. No role has them — updating a stream
// can shorten the ledger's retention — and no seed of this identity is
// ever written: it exists in memory for the time of the bootstrap.
func BootstrapPermissions(inbox string) (*server.Permissions, error) {
	if err := validInbox(inbox); err != nil {
		return nil, fmt.Errorf("bootstrap permissions: %w", err)
	}
	var p perms
	p.pub("$JS.API.INFO")
	for _, s := range streamNames() {
		p.pub("$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s)
	}
	p.subs = append(p.subs, inbox+".>")
	return p.build(), nil
}

func validInbox(inbox string) error {
	if inbox == "" || strings.ContainsAny(inbox, "*> ") || strings.HasSuffix(inbox, ".") {
		return fmt.Errorf("invalid inbox prefix %q", inbox)
	}
	return nil
}

// UsagePublishSubject is the subject pattern an enforcer with id may
// publish its usage events on: every tenant, its own name.
func UsagePublishSubject(id string) string { return events.SubjectUsagePrefix + "*." + id }

// UsageBatchPublishSubject is the subject pattern an enforcer with id may
// publish its usage batches on: every tenant and holder, its own name
// (events.UsageBatchSubject). The USAGE stream moves them to their
// partition; no enforcer can name a partition.
func UsageBatchPublishSubject(id string) string { return UsagePublishSubject(id) + ".*" }

func permissions(r Role, enforcer, inbox string) (*server.Permissions, error) {
	if err := validInbox(inbox); err != nil {
		return nil, fmt.Errorf("permissions of %s: %w", r, err)
	}
	var p perms
	switch r {
	case RoleEnforcer:
		p.pub(UsagePublishSubject(enforcer), UsageBatchPublishSubject(enforcer))
		// Canary tokens presented to it, under its own name only.
		p.pub(events.CanarySubject(enforcer))
		// The denylist broadcast: listen, and ask a revoker for changes
		// missed while disconnected.
		p.subs = append(p.subs, events.SubjectDenyChange, events.SubjectDenyHeartbeat)
		p.pub(events.SubjectDenyResyncPrefix + ">")
		p.kvRead(events.BucketDenylist)
		p.kvRead(events.BucketKeys)
	case RoleIssuer:
		p.pub(events.SubjectTokenPrefix+">", events.SubjectKeyPrefix+">", events.SubjectPolicyChanged)
		// Leak reports: a critical leaked_public anomaly per live token
		// found in public (services/issuer leak.go).
		p.pub(events.SubjectAnomalyPrefix + events.SeverityCritical + ".>")
		p.kvRead(events.BucketKeys)
		// A canary is handed out once the revoker has denied it.
		p.kvRead(events.BucketDenylist)
		p.kvWrite(events.BucketKeys)
		p.ordered(events.StreamTokens)
		p.bootstrap()
		p.serve(events.SubjectCmdIssue, events.SubjectCmdRotate, events.SubjectCmdList, events.SubjectCmdInspect, events.SubjectCmdReportLeak)
	case RoleRevoker:
		p.pub(events.SubjectTokenPrefix+"revoked.>", events.SubjectDeadPrefix+">")
		// Graduated response (restrict.go): restrictions and releases.
		p.pub(events.SubjectTokenPrefix+"restricted.>", events.SubjectTokenPrefix+"released.>")
		p.kvRead(events.BucketDenylist)
		p.kvWrite(events.BucketDenylist)
		// The denylist broadcast: each replica announces its changes and
		// heartbeats, follows the other replicas' and answers resyncs.
		p.pub(events.SubjectDenyChange, events.SubjectDenyHeartbeat)
		p.subs = append(p.subs, events.SubjectDenyChange)
		// Canary tokens presented to the enforcers (canary.go).
		p.subs = append(p.subs, events.SubjectCanaryPrefix+">")
		p.kvRead(events.BucketKeys)
		p.ordered(events.StreamTokens)
		p.durables(Durables(r))
		p.bootstrap()
		p.serve(events.SubjectCmdRevoke, events.SubjectCmdRestrict, events.SubjectCmdRelease, events.SubjectDenyResyncPrefix+">")
	case RoleAuditor:
		p.pub(events.SubjectAnomalyPrefix+">", events.SubjectDeadPrefix+">")
		p.durables(Durables(r))
		p.readInOrder(events.StreamUsage, events.SubjectUsagePrefix+">")
		p.readInOrder(events.StreamTokens, events.SubjectTokenPrefix+">")
		// Its analyst API authenticates with an enforcer, which follows
		// the denylist broadcast like every enforcer.
		p.subs = append(p.subs, events.SubjectDenyChange, events.SubjectDenyHeartbeat)
		p.pub(events.SubjectDenyResyncPrefix + ">")
		p.kvRead(events.BucketDenylist)
		p.kvRead(events.BucketKeys)
		// Lease mode: partition leases, intents and checkpoint
		// pointers, checkpoints (services/auditor lease.go,
		// statestore_jetstream.go); what the partitions' detectors share
		// (knowledge.go). Created by the auditor when missing.
		for _, b := range []string{events.BucketAuditorLeases, events.BucketAuditorState, events.BucketAuditorKnowledge} {
			p.pub("$JS.API.STREAM.CREATE.KV_" + b)
			p.kvRead(b)
			p.kvWrite(b)
		}
		p.objectStore(events.ObjectStoreAuditorCheckpoints)
		p.bootstrap()
		p.serve(events.SubjectCmdSQL, events.SubjectCmdAnomalies, events.SubjectCmdReport, events.SubjectCmdAuditorStatus)
	case RoleAdmin:
		p.pub("cordon.cmd.>")
		p.manage()
		// Watching, read-only: ledger events and anomalies carry token ids
		// and claims, never a token string (those travel only in replies,
		// to the requester's private inbox).
		p.subs = append(p.subs, events.SubjectTokenPrefix+">", events.SubjectAnomalyPrefix+">")
	default:
		return nil, fmt.Errorf("permissions: %w %q", ErrUnknownRole, string(r))
	}
	p.pub("$JS.API.INFO")
	p.subs = append(p.subs, inbox+".>")
	return p.build(), nil
}

// Subjects a role must never publish to unless its job is to: the deny
// list of each role is every entry here that none of its allows covers,
// so that a future, broader allow cannot open them by accident.
var guarded = []string{
	events.SubjectUsagePrefix + ">",
	events.SubjectTokenPrefix + "issued.>",
	events.SubjectTokenPrefix + "rotated.>",
	events.SubjectTokenPrefix + "revoked.>",
	events.SubjectTokenPrefix + "expired.>",
	events.SubjectTokenPrefix + "restricted.>",
	events.SubjectTokenPrefix + "released.>",
	events.SubjectKeyPrefix + ">",
	events.SubjectPolicyChanged,
	events.SubjectAnomalyPrefix + ">",
	"cordon.cmd.>",
	"$KV." + events.BucketDenylist + ".>",
	"$KV." + events.BucketKeys + ".>",
	events.SubjectDenyChange,
	events.SubjectDenyHeartbeat,
	events.SubjectCanaryPrefix + ">",
	"$JS.API.STREAM.UPDATE.>",
	"$JS.API.STREAM.DELETE.>",
	"$JS.API.STREAM.PURGE.>",
	"$JS.API.STREAM.MSG.DELETE.>",
}

// perms collects allow lists while a role's permissions are assembled.
type perms struct {
	pubs, subs []string
	responses  bool
	// own are the durable consumers of the role ("<stream>.<name>").
	own []string
}

// durables are the durable consumers of Cordon's services, as
// "<stream>.<name>". A role that may create, read from or delete consumers
// with random names on a stream (ordered consumers, KV watches) could name
// one of these — the request body carries the configuration, so a create
// by name can squat or reconfigure another service's durable (deliver only
// new messages, no acknowledgements), a pull can steal its messages and a
// delete drops its position. Every such subject of a durable the role does
// not own is denied by name.
var durables = func() []string {
	var out []string
	for _, r := range Roles() {
		for _, d := range Durables(r) {
			out = append(out, d.String())
		}
	}
	return out
}()

func (p *perms) pub(subjects ...string) { p.pubs = append(p.pubs, subjects...) }

// kvRead allows opening a bucket, getting keys (direct get) and watching
// it: KV watches are ordered push consumers with flow control, whose
// flow-control replies go to $JS.FC.<stream>.… (or, with the server's
// js_ack_fc_v2 feature flag, $JS.FC.<domain>.<account hash>.<stream>.…).
// Consumer names are random and cannot be listed, so DELETE (used when a
// watch stops) cannot be aimed at another client's watch.
func (p *perms) kvRead(bucket string) {
	s := "KV_" + bucket
	p.pub(
		"$JS.API.STREAM.INFO."+s,
		"$JS.API.DIRECT.GET."+s,
		"$JS.API.DIRECT.GET."+s+".>",
		"$JS.API.CONSUMER.CREATE."+s,
		"$JS.API.CONSUMER.CREATE."+s+".>",
		"$JS.API.CONSUMER.DELETE."+s+".*",
		"$JS.FC."+s+".>",
		"$JS.FC.*.*."+s+".>",
	)
}

// objectStore allows creating an object store and putting, getting,
// listing and deleting its objects: chunks and metadata are published on
// $O.<bucket>.>, an overwritten or deleted object's chunks are purged,
// metadata is read by direct get and chunks with an ordered consumer.
func (p *perms) objectStore(bucket string) {
	s := "OBJ_" + bucket
	p.pub(
		"$JS.API.STREAM.INFO."+s,
		"$JS.API.STREAM.CREATE."+s,
		"$JS.API.STREAM.PURGE."+s,
		"$JS.API.STREAM.MSG.GET."+s,
		"$JS.API.DIRECT.GET."+s,
		"$JS.API.DIRECT.GET."+s+".>",
		"$JS.API.CONSUMER.CREATE."+s,
		"$JS.API.CONSUMER.CREATE."+s+".>",
		"$JS.API.CONSUMER.DELETE."+s+".*",
		"$JS.FC."+s+".>",
		"$JS.FC.*.*."+s+".>",
		"$O."+bucket+".>",
	)
}

// kvWrite allows put, create, update and delete of a bucket's keys.
func (p *perms) kvWrite(bucket string) { p.pub("$KV." + bucket + ".>") }

// ordered allows ordered (ephemeral, unacknowledged) consumers on stream
// and reading its info and last messages.
func (p *perms) ordered(stream string) {
	p.pub(
		"$JS.API.STREAM.INFO."+stream,
		"$JS.API.STREAM.MSG.GET."+stream,
		"$JS.API.DIRECT.GET."+stream,
		"$JS.API.DIRECT.GET."+stream+".>",
		"$JS.API.CONSUMER.CREATE."+stream+".*",
		"$JS.API.CONSUMER.CREATE."+stream+".*.>",
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".*",
		"$JS.API.CONSUMER.INFO."+stream+".*",
		"$JS.API.CONSUMER.DELETE."+stream+".*",
	)
}

// readInOrder allows the ordered consumers the auditor's detectors read
// stream with, filtered on filter (services/auditor detection.go). nats.go
// puts a single filter into the create subject
// ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>), so exactly that
// filter is allowed there, besides the unfiltered form. The consumer name
// is random and cannot be allowed by name; the durables of the other
// services are denied by name instead (see durables). Message gets tell a
// runner whether the stream holds a message of its own it has not handled
// (services/auditor caughtUp): nothing a consumer could not read.
func (p *perms) readInOrder(stream, filter string) {
	p.pub(
		"$JS.API.STREAM.INFO."+stream,
		"$JS.API.STREAM.MSG.GET."+stream,
		"$JS.API.CONSUMER.CREATE."+stream+".*",
		"$JS.API.CONSUMER.CREATE."+stream+".*."+filter,
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".*",
		"$JS.API.CONSUMER.INFO."+stream+".*",
		"$JS.API.CONSUMER.DELETE."+stream+".*",
	)
}

// durables allows each of ds (see durable).
func (p *perms) durables(ds []events.Durable) {
	for _, d := range ds {
		p.durable(d.Stream, d.Name)
	}
}

// durable allows creating, reading from and acknowledging one named
// durable consumer on stream. Acknowledgements go to
// $JS.ACK.<stream>.<consumer>.… (or $JS.ACK.<domain>.<account hash>.… with
// the server's js_ack_fc_v2 feature flag).
func (p *perms) durable(stream, name string) {
	p.own = append(p.own, stream+"."+name)
	p.pub(
		"$JS.API.STREAM.INFO."+stream,
		"$JS.API.CONSUMER.CREATE."+stream+"."+name,
		"$JS.API.CONSUMER.CREATE."+stream+"."+name+".>",
		"$JS.API.CONSUMER.INFO."+stream+"."+name,
		"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+name,
		"$JS.ACK."+stream+"."+name+".>",
		"$JS.ACK.*.*."+stream+"."+name+".>",
	)
}

// streamNames are the JetStream streams behind Cordon's streams and buckets.
func streamNames() []string {
	var names []string
	for _, s := range events.Streams(events.StreamOptions{}) {
		names = append(names, s.Name)
	}
	for _, b := range events.Buckets(events.StreamOptions{}) {
		names = append(names, "KV_"+b.Bucket)
	}
	return names
}

// bootstrap lets a service create Cordon's streams and buckets when they
// are missing. A create never changes an existing stream: it fails when
// the stream exists with another configuration.
func (p *perms) bootstrap() {
	for _, s := range streamNames() {
		p.pub("$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.CREATE."+s)
	}
}

// manage lets the admin create missing streams and buckets, inspect them
// and list their consumers. Updating stays forbidden (a new MaxAge would
// empty the ledger or the denylist), like deleting and purging; changing a
// stream's configuration is an operator's job with the server's own
// credentials.
func (p *perms) manage() {
	p.pub("$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")
	for _, s := range streamNames() {
		p.pub(
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.STREAM.CREATE."+s,
			"$JS.API.CONSUMER.NAMES."+s,
			"$JS.API.CONSUMER.LIST."+s,
			"$JS.API.CONSUMER.INFO."+s+".*",
		)
	}
}

// serve lets a service subscribe to request subjects (in a queue group,
// or, for cordon.cmd.auditor.status, each instance: every auditor answers
// and the requester gathers the replies in its private inbox) and answer
// each request once.
func (p *perms) serve(subjects ...string) {
	p.subs = append(p.subs, subjects...)
	p.responses = true
}

func (p *perms) build() *server.Permissions {
	pubs := dedupe(p.pubs)
	var deny []string
	for _, g := range guarded {
		if !coveredBy(g, pubs) {
			deny = append(deny, g)
		}
	}
	for _, d := range durables {
		if slices.Contains(p.own, d) {
			continue
		}
		for _, api := range []string{"CREATE", "DELETE", "MSG.NEXT"} {
			for _, s := range []string{"$JS.API.CONSUMER." + api + "." + d, "$JS.API.CONSUMER." + api + "." + d + ".>"} {
				if coveredBy(s, pubs) {
					deny = append(deny, s)
				}
			}
		}
	}
	out := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pubs, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: dedupe(p.subs)},
	}
	if p.responses {
		out.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: ResponseTTL}
	}
	return out
}

// coveredBy reports whether any allow in allows could match a subject that
// pattern matches (so denying pattern would take something away).
func coveredBy(pattern string, allows []string) bool {
	for _, a := range allows {
		if server.SubjectsCollide(pattern, a) {
			return true
		}
	}
	return false
}

func dedupe(s []string) []string {
	seen := make(map[string]struct{}, len(s))
	out := make([]string, 0, len(s))
	for _, x := range s {
		if _, ok := seen[x]; ok {
			continue
		}
		seen[x] = struct{}{}
		out = append(out, x)
	}
	return out
}
