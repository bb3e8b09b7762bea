package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Usage batches.
//
// An enforcer publishes its decisions in batches: one JetStream message
// carries up to UsageBatchMaxRecords usage.decided events of one
// (tenant, holder), in the compact binary encoding "CUB1", on
// UsageBatchSubject(tenant, enforcer, holder). The message id
// (Nats-Msg-Id) is the batch id, so JetStream de-duplicates a batch
// published again after a lost acknowledgement or from the spool.
//
// The encoding, all integers little-endian or uvarint:
//
//	magic "CUB1", flags byte (0)
//	batch id (16 bytes, a UUIDv7), schema version (uvarint)
//	source, tenant, enforcer, holder (strings: uvarint length + bytes)
//	base time (varint, unix microseconds), record count n (uvarint, 1..4096)
//	dictionary: count d (uvarint), then d strings; entry k is referenced as k+1,
//	  reference 0 is the empty string
//	n records: time delta (varint µs from base), latency_ns (uvarint),
//	  count (uvarint), then 13 dictionary references: token_id, kid,
//	  service, source_ip, user_agent, method, route, scope, decision,
//	  reason, resource, client, device
//
// The batch's tenant and holder are every record's; the subject's tenant,
// enforcer and holder tokens must be SubjectToken of the header's, so
// decoding is also the attribution check (an enforcer can publish only
// under its own id, natsauth). Event ids are derived, not sent (see
// UsageEventID): stable across re-publication, unique within a batch by
// record index and across batches by the batch id's random bits. Times
// keep microseconds (what ClickHouse stores).

// Bounds of a usage batch.
const (
	// UsageBatchMaxRecords is the most records one batch may carry.
	UsageBatchMaxRecords = 4096
	// UsageBatchMaxBytes is the largest encoded batch (NATS max_payload is 1 MiB).
	UsageBatchMaxBytes = 256 << 10
	// UsageBatchMaxStrings bounds a batch's dictionary.
	UsageBatchMaxStrings = 4 * UsageBatchMaxRecords
	// MaxUsagePartitions is the most USAGE partitions a deployment may have.
	MaxUsagePartitions = 64
	// DefaultUsagePartitions is the USAGE partition count when none is configured.
	DefaultUsagePartitions = 8
)

const (
	usageBatchMagic = "CUB1"
	batchRefs       = 13
	// maxBatchString bounds any one string of a batch (user agents are the
	// longest field an event carries).
	maxBatchString = 4096
)

// ErrUsageBatch is wrapped by every error decoding a usage batch.
var ErrUsageBatch = errors.New("invalid usage batch")

// ErrMisattributed is wrapped when usage names another publisher than the
// subject it arrived on. NATS lets each enforcer's credential publish
// usage only under its own id (pkg/natsauth), so the subject is the
// attribution the server vouches for; a message that claims another
// enforcer is a forgery (or a bug).
var ErrMisattributed = errors.New("usage event not attributable to its publisher")

// SubjectUsagePartPrefix starts the subjects USAGE stores batches under:
// cordon.usage.part.<partition>.<tenant>.<enforcer>.<holder>. The stream's
// subject transform puts them there; nobody publishes on them.
const SubjectUsagePartPrefix = SubjectUsagePrefix + "part."

// SubjectUsageLegacy matches the per-event usage subjects
// (cordon.usage.<tenant>.<enforcer>) of enforcers that do not batch.
const SubjectUsageLegacy = SubjectUsagePrefix + "*.*"

// SubjectToken is s as a subject token: s itself when it is a valid name
// (ValidateName), "_" otherwise (empty, or a holder name a subject cannot
// carry).
func SubjectToken(s string) string {
	if ValidateName(s) != nil {
		return "_"
	}
	return s
}

// UsageBatchSubject is the subject an enforcer publishes a batch on.
func UsageBatchSubject(tenant, enforcer, holder string) string {
	return SubjectUsagePrefix + SubjectToken(tenant) + "." + enforcer + "." + SubjectToken(holder)
}

// UsagePartitionFilter is the subject filter of partition p's batches.
func UsagePartitionFilter(p int) string {
	return SubjectUsagePartPrefix + strconv.Itoa(p) + ".*.*.*"
}

// UsagePartition is the partition (0..partitions-1) of a (tenant, holder):
// the one the USAGE stream's subject transform gives its batches
// (nats-server's partition(): FNV-1a 32 of the subject tokens concatenated,
// modulo the count). Legacy per-event messages carry no partition; a
// consumer assigns them with this function.
func UsagePartition(tenant, holder string, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for _, s := range [2]string{SubjectToken(tenant), SubjectToken(holder)} {
		for i := 0; i < len(s); i++ {
			h ^= uint32(s[i])
			h *= prime
		}
	}
	return int(h % uint32(partitions))
}

// PartitionKey is the (tenant, holder) an event is partitioned by: a
// usage decision's, or the token's of a ledger event (issued, rotated,
// revoked, expired, restricted, released). ok is false for any other
// payload.
func PartitionKey(p Payload) (tenant, holder string, ok bool) {
	switch p := p.(type) {
	case *UsageDecided:
		return p.Tenant, p.Holder, true
	case *TokenIssued:
		return p.Tenant, p.Holder, true
	case *TokenRotated:
		return p.Tenant, p.Holder, true
	case *TokenRevoked:
		return p.Tenant, p.Holder, true
	case *TokenExpired:
		return p.Tenant, p.Holder, true
	case *TokenRestricted:
		return p.Tenant, p.Holder, true
	case *TokenReleased:
		return p.Tenant, p.Holder, true
	}
	return "", "", false
}

// ParseUsagePartSubject splits a stored batch subject
// (cordon.usage.part.<p>.<tenant>.<enforcer>.<holder>).
func ParseUsagePartSubject(subject string) (p int, tenant, enforcer, holder string, err error) {
	rest, ok := strings.CutPrefix(subject, SubjectUsagePartPrefix)
	toks := strings.Split(rest, ".")
	if !ok || len(toks) != 4 {
		return 0, "", "", "", fmt.Errorf("%w: subject %q is not %s<partition>.<tenant>.<enforcer>.<holder>", ErrUsageBatch, subject, SubjectUsagePartPrefix)
	}
	p, err = strconv.Atoi(toks[0])
	if err != nil || p < 0 || p >= MaxUsagePartitions {
		return 0, "", "", "", fmt.Errorf("%w: subject %q: partition %q", ErrUsageBatch, subject, toks[0])
	}
	return p, toks[1], toks[2], toks[3], nil
}

// usageTransform is the USAGE stream's subject transform for p partitions.
func usageTransform(p int) string {
	return SubjectUsagePartPrefix + "{{partition(" + strconv.Itoa(p) + ",1,3)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
}

// UsageEventID is the event id of record i of batch id: a UUIDv7 whose
// time is at (milliseconds), whose random bits are the batch id's, and
// whose last 16 bits are i.
func UsageEventID(batch uuid.UUID, at time.Time, i int) uuid.UUID {
	id := batch
	ms := uint64(at.UnixMilli())
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	id[14], id[15] = byte(i>>8), byte(i)
	return id
}

// UsageBatchBuilder encodes one batch. The zero value is not usable: call
// Reset. A builder is reused batch after batch without allocating once its
// buffers have grown.
type UsageBatchBuilder struct {
	source, tenant, enforcer, holder string

	base    int64 // unix µs of the first record
	n       int
	dict    map[string]uint64
	strs    []string
	strSize int
	recs    []byte
	scratch [batchRefs]uint64
	// last and lastRef are the previous record's strings and their
	// references (valid when n > 0): most fields repeat from one record
	// to the next (the same service, method, decision, client, often the
	// same token), and comparing with the previous value is cheaper than
	// a dictionary lookup.
	last    [batchRefs]string
	lastRef [batchRefs]uint64
}

// Reset starts a new batch of (tenant, holder) from enforcer; source is
// the envelope source ("enforcer/<id>").
func (b *UsageBatchBuilder) Reset(source, tenant, enforcer, holder string) error {
	if err := ValidateName(enforcer); err != nil {
		return fmt.Errorf("usage batch: enforcer: %w", err)
	}
	if source == "" || len(source) > maxBatchString {
		return fmt.Errorf("usage batch: source must be 1..%d bytes", maxBatchString)
	}
	if tenant != "" {
		if err := ValidateName(tenant); err != nil {
			return fmt.Errorf("usage batch: tenant: %w", err)
		}
	}
	if len(holder) > maxBatchString {
		return fmt.Errorf("usage batch: holder is %d bytes, at most %d", len(holder), maxBatchString)
	}
	b.source, b.tenant, b.enforcer, b.holder = source, tenant, enforcer, holder
	b.n, b.base, b.strSize = 0, 0, 0
	if b.dict == nil {
		b.dict = make(map[string]uint64)
	}
	clear(b.dict)
	b.strs = b.strs[:0]
	b.recs = b.recs[:0]
	clear(b.last[:]) // keeps no string of the last batch alive
	return nil
}

// Len is the number of records added since Reset.
func (b *UsageBatchBuilder) Len() int { return b.n }

// Size is the encoded size of the batch so far, within a few bytes.
func (b *UsageBatchBuilder) Size() int {
	return 64 + len(b.source) + len(b.tenant) + len(b.enforcer) + len(b.holder) + b.strSize + 3*len(b.strs) + len(b.recs)
}

// Full reports whether the batch has reached a bound: another Add could
// fail.
func (b *UsageBatchBuilder) Full() bool {
	return b.n >= UsageBatchMaxRecords || b.Size() > UsageBatchMaxBytes-2*maxBatchString-64
}

func (b *UsageBatchBuilder) ref(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	if r, ok := b.dict[s]; ok {
		return r, nil
	}
	if len(s) > maxBatchString {
		return 0, fmt.Errorf("a string of %d bytes, at most %d", len(s), maxBatchString)
	}
	if len(b.strs) >= UsageBatchMaxStrings {
		return 0, errors.New("dictionary full")
	}
	b.strs = append(b.strs, s)
	b.strSize += len(s)
	r := uint64(len(b.strs))
	b.dict[s] = r
	return r, nil
}

// Add appends the decision u made at at. u must be valid (Validate) and
// belong to the batch: its tenant, holder and enforcer must be the
// batch's. A full batch (Full) refuses it.
func (b *UsageBatchBuilder) Add(at time.Time, u *UsageDecided) error {
	if b.dict == nil {
		return errors.New("usage batch: Add before Reset")
	}
	if b.Full() {
		return errors.New("usage batch: full")
	}
	if u.Tenant != b.tenant || u.Holder != b.holder || u.Enforcer != b.enforcer {
		return fmt.Errorf("usage batch: event of %q/%q from %q in a batch of %q/%q from %q", u.Tenant, u.Holder, u.Enforcer, b.tenant, b.holder, b.enforcer)
	}
	if err := u.Validate(); err != nil {
		return fmt.Errorf("usage batch: %w", err)
	}
	us := at.UnixMicro()
	if b.n == 0 {
		b.base = us
	}
	fields := [batchRefs]string{u.TokenID, u.KeyID, u.Service, u.SourceIP, u.UserAgent, u.Method, u.Route, u.Scope, u.Decision, u.Reason, u.Resource, u.Client, u.Device}
	mark := len(b.strs)
	for i, s := range fields {
		if b.n > 0 && s == b.last[i] {
			b.scratch[i] = b.lastRef[i]
			continue
		}
		r, err := b.ref(s)
		if err != nil {
			for _, s := range b.strs[mark:] {
				delete(b.dict, s)
				b.strSize -= len(s)
			}
			b.strs = b.strs[:mark]
			return fmt.Errorf("usage batch: field %d: %w", i, err)
		}
		b.scratch[i] = r
	}
	b.recs = binary.AppendVarint(b.recs, us-b.base)
	b.recs = binary.AppendUvarint(b.recs, uint64(u.LatencyNS))
	b.recs = binary.AppendUvarint(b.recs, uint64(u.Count))
	for _, r := range b.scratch {
		b.recs = binary.AppendUvarint(b.recs, r)
	}
	b.last, b.lastRef = fields, b.scratch
	b.n++
	return nil
}

// Finish encodes the batch under a new batch id and returns the subject
// to publish it on, its id (the message id) and its bytes, appended to
// dst[:0]. The builder must be Reset before the next batch.
func (b *UsageBatchBuilder) Finish(dst []byte) (subject string, id uuid.UUID, data []byte, err error) {
	if b.n == 0 {
		return "", uuid.Nil, nil, errors.New("usage batch: empty")
	}
	if id, err = uuid.NewV7(); err != nil {
		return "", uuid.Nil, nil, fmt.Errorf("usage batch id: %w", err)
	}
	data = append(dst[:0], usageBatchMagic...)
	data = append(data, 0)
	data = append(data, id[:]...)
	data = binary.AppendUvarint(data, SchemaVersion)
	for _, s := range [4]string{b.source, b.tenant, b.enforcer, b.holder} {
		data = appendBatchString(data, s)
	}
	data = binary.AppendVarint(data, b.base)
	data = binary.AppendUvarint(data, uint64(b.n))
	data = binary.AppendUvarint(data, uint64(len(b.strs)))
	for _, s := range b.strs {
		data = appendBatchString(data, s)
	}
	data = append(data, b.recs...)
	if len(data) > UsageBatchMaxBytes {
		return "", uuid.Nil, nil, fmt.Errorf("usage batch: %d bytes, at most %d", len(data), UsageBatchMaxBytes)
	}
	return UsageBatchSubject(b.tenant, b.enforcer, b.holder), id, data, nil
}

func appendBatchString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// batchRecord is one decoded record: times and counters, and dictionary
// references.
type batchRecord struct {
	delta   int64
	latency uint64
	count   uint64
	refs    [batchRefs]uint64
}

// UsageBatch is a decoded usage batch. Decode into one value again and
// again: its buffers are reused, and only the dictionary's strings are
// allocated, once per batch.
type UsageBatch struct {
	// ID is the batch id, the JetStream message id it was published with.
	ID uuid.UUID
	// Source is the envelope source of its events ("enforcer/<id>").
	Source string
	// Tenant, Enforcer and Holder are every record's.
	Tenant, Enforcer, Holder string
	// Base is the time of the first record.
	Base time.Time

	strs []string
	recs []batchRecord
	next int
}

// Len is the number of records.
func (b *UsageBatch) Len() int { return len(b.recs) }

// batchReader reads a batch's bytes.
type batchReader struct {
	b   []byte
	i   int
	err error
}

func (r *batchReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrUsageBatch}, a...)...)
	}
}

func (r *batchReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.i:])
	if n <= 0 {
		r.fail("%s: truncated or overlong varint at byte %d", what, r.i)
		return 0
	}
	r.i += n
	return v
}

func (r *batchReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.i:])
	if n <= 0 {
		r.fail("%s: truncated or overlong varint at byte %d", what, r.i)
		return 0
	}
	r.i += n
	return v
}

func (r *batchReader) str(what string) string {
	n := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if n > maxBatchString || n > uint64(len(r.b)-r.i) {
		r.fail("%s: length %d beyond the batch or the %d-byte bound", what, n, maxBatchString)
		return ""
	}
	s := string(r.b[r.i : r.i+int(n)])
	r.i += int(n)
	return s
}

// DecodeUsageBatch decodes and validates the batch data stored under
// subject (a cordon.usage.part.<p>.<tenant>.<enforcer>.<holder> subject as
// USAGE stores it, or the cordon.usage.<tenant>.<enforcer>.<holder> it was
// published on) into b. Every record is validated as DecodeAs would
// validate the same event, and the subject must name the batch's tenant,
// enforcer and holder. On error b holds no records.
func DecodeUsageBatch(subject string, data []byte, b *UsageBatch) error {
	b.recs, b.strs, b.next = b.recs[:0], b.strs[:0], 0
	if err := b.decode(subject, data); err != nil {
		b.recs, b.strs = b.recs[:0], b.strs[:0]
		return err
	}
	return nil
}

func (b *UsageBatch) decode(subject string, data []byte) error {
	if len(data) > UsageBatchMaxBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrUsageBatch, len(data), UsageBatchMaxBytes)
	}
	if len(data) < len(usageBatchMagic)+1+16 || string(data[:4]) != usageBatchMagic {
		return fmt.Errorf("%w: not a CUB1 batch", ErrUsageBatch)
	}
	if data[4] != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrUsageBatch, data[4])
	}
	copy(b.ID[:], data[5:21])
	if b.ID.Version() != 7 || b.ID.Variant() != uuid.RFC4122 {
		return fmt.Errorf("%w: batch id is not a UUIDv7", ErrUsageBatch)
	}
	r := batchReader{b: data, i: 21}
	if v := r.uvarint("version"); r.err == nil && v != SchemaVersion {
		return fmt.Errorf("%w: %w: v=%d, this build speaks v=%d", ErrUsageBatch, ErrVersion, v, SchemaVersion)
	}
	b.Source, b.Tenant, b.Enforcer, b.Holder = r.str("source"), r.str("tenant"), r.str("enforcer"), r.str("holder")
	base := r.varint("base time")
	n := r.uvarint("record count")
	d := r.uvarint("dictionary size")
	if r.err != nil {
		return r.err
	}
	if b.Source == "" {
		return fmt.Errorf("%w: %w: source", ErrUsageBatch, ErrMissingField)
	}
	if err := ValidateName(b.Enforcer); err != nil {
		return fmt.Errorf("%w: enforcer: %w", ErrUsageBatch, err)
	}
	if err := checkBatchSubject(subject, b); err != nil {
		return err
	}
	if n == 0 || n > UsageBatchMaxRecords {
		return fmt.Errorf("%w: %d records, want 1..%d", ErrUsageBatch, n, UsageBatchMaxRecords)
	}
	if d > UsageBatchMaxStrings || d > uint64(len(data)) {
		return fmt.Errorf("%w: dictionary of %d strings", ErrUsageBatch, d)
	}
	if base < -(1<<53) || base > 1<<53 {
		return fmt.Errorf("%w: base time %d out of range", ErrUsageBatch, base)
	}
	b.Base = time.UnixMicro(base).UTC()
	for range d {
		b.strs = append(b.strs, r.str("dictionary"))
	}
	for range n {
		var rec batchRecord
		rec.delta = r.varint("time")
		rec.latency = r.uvarint("latency")
		rec.count = r.uvarint("count")
		for k := range rec.refs {
			rec.refs[k] = r.uvarint("reference")
			if rec.refs[k] > d {
				r.fail("record %d: reference %d beyond the dictionary of %d", len(b.recs), rec.refs[k], d)
			}
		}
		if r.err != nil {
			return r.err
		}
		if rec.latency > math.MaxInt64 || rec.count > MaxUsageCount {
			return fmt.Errorf("%w: record %d: latency or count out of range", ErrUsageBatch, len(b.recs))
		}
		if rec.delta < -(1<<40) || rec.delta > 1<<40 {
			return fmt.Errorf("%w: record %d: time %dµs from the base", ErrUsageBatch, len(b.recs), rec.delta)
		}
		b.recs = append(b.recs, rec)
	}
	if r.i != len(data) {
		return fmt.Errorf("%w: %d bytes after the last record", ErrUsageBatch, len(data)-r.i)
	}
	var e Envelope
	var u UsageDecided
	for i := range b.recs {
		b.record(i, &e, &u)
		if err := e.Validate(); err != nil {
			return fmt.Errorf("%w: record %d: %w", ErrUsageBatch, i, err)
		}
	}
	return nil
}

// checkBatchSubject holds the subject to the batch's header.
func checkBatchSubject(subject string, b *UsageBatch) error {
	var tenant, enforcer, holder string
	if strings.HasPrefix(subject, SubjectUsagePartPrefix) {
		var err error
		if _, tenant, enforcer, holder, err = ParseUsagePartSubject(subject); err != nil {
			return err
		}
	} else {
		rest, _ := strings.CutPrefix(subject, SubjectUsagePrefix)
		toks := strings.Split(rest, ".")
		if len(toks) != 3 || !strings.HasPrefix(subject, SubjectUsagePrefix) {
			return fmt.Errorf("%w: subject %q is not a usage batch subject", ErrUsageBatch, subject)
		}
		tenant, enforcer, holder = toks[0], toks[1], toks[2]
	}
	if tenant != SubjectToken(b.Tenant) || enforcer != b.Enforcer || holder != SubjectToken(b.Holder) {
		return fmt.Errorf("%w: %w: subject %q does not name the batch's tenant %q, enforcer %q and holder %q", ErrUsageBatch, ErrMisattributed, subject, b.Tenant, b.Enforcer, b.Holder)
	}
	return nil
}

// record fills e and u with record i. e.Data points at u.
func (b *UsageBatch) record(i int, e *Envelope, u *UsageDecided) {
	rec := &b.recs[i]
	s := func(k int) string {
		if r := rec.refs[k]; r > 0 {
			return b.strs[r-1]
		}
		return ""
	}
	at := b.Base.Add(time.Duration(rec.delta) * time.Microsecond)
	*u = UsageDecided{
		TokenID: s(0), Tenant: b.Tenant, Holder: b.Holder, KeyID: s(1),
		Enforcer: b.Enforcer, Service: s(2), SourceIP: s(3), UserAgent: s(4),
		Method: s(5), Route: s(6), Scope: s(7), Decision: s(8), Reason: s(9),
		LatencyNS: int64(rec.latency), Count: int64(rec.count),
		Resource: s(10), Client: s(11), Device: s(12),
	}
	*e = Envelope{
		ID:      UsageEventID(b.ID, at, i),
		Type:    TypeUsageDecided,
		Time:    at,
		Source:  b.Source,
		Version: SchemaVersion,
		Data:    u,
	}
}

// Next fills e and u with the next record and reports whether there was
// one. e.Data points at u, so both are overwritten by the next call.
func (b *UsageBatch) Next(e *Envelope, u *UsageDecided) bool {
	if b.next >= len(b.recs) {
		return false
	}
	b.record(b.next, e, u)
	b.next++
	return true
}

// Rewind makes Next start again at the first record.
func (b *UsageBatch) Rewind() { b.next = 0 }

// UsagePartitionsOf is the partition count of a USAGE stream definition
// (its subject transform's), or 0 when the stream does not partition
// (one created by a version before batches: batches are then stored
// under the subject they were published on).
func UsagePartitionsOf(cfg jetstream.StreamConfig) int {
	t := cfg.SubjectTransform
	if t == nil || t.Source != SubjectUsagePrefix+"*.*.*" {
		return 0
	}
	for p := 1; p <= MaxUsagePartitions; p++ {
		if t.Destination == usageTransform(p) {
			return p
		}
	}
	return 0
}
