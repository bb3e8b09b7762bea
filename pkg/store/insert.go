package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// maxInsertBytes splits very large batches into several inserts. Each insert
// is atomic; a batch split in two is still safe to retry as a whole, because
// the tables are idempotent (see the package documentation).
const maxInsertBytes = 16 << 20

// usageSchema is the usage row as the encoders write it: every column of
// usage_events_raw, in the order the values are appended (toRow,
// appendUsageRow, appendUsageRowBinary), with the type the value travels as
// in RowBinary (usageStructure). The wire types are those of the table
// without what does not change the bytes: LowCardinality(String) travels
// as String, DateTime64(6, 'UTC') as DateTime64(6) (microseconds since the
// epoch, whatever the zone) and Enum8('allow' = 1, 'deny' = 2) as its Int8
// value, which ClickHouse casts to the enum on insert; so the structure
// holds no quote. TestUsageSchemaMatchesTable holds it to the migrations.
var usageSchema = [...]struct{ name, wire string }{
	{"event_id", "UUID"},
	{"time", "DateTime64(6)"},
	{"token_id", "String"},
	{"tenant", "String"},
	{"holder", "String"},
	{"kid", "String"},
	{"enforcer", "String"},
	{"service", "String"},
	{"source_ip", "String"},
	{"user_agent", "String"},
	{"method", "String"},
	{"route", "String"},
	{"scope", "String"},
	{"decision", "Int8"},
	{"reason", "String"},
	{"latency_ns", "UInt64"},
	{"count", "UInt32"},
	{"resource", "String"},
	{"client", "String"},
	{"device", "String"},
}

// usageStructure is the structure of a RowBinary usage row, as ClickHouse's
// file() table function takes it: "event_id UUID, time DateTime64(6), …".
var usageStructure = func() string {
	var b strings.Builder
	for i, c := range usageSchema {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.name + " " + c.wire)
	}
	return b.String()
}()

// The columns each raw table is written with, in the order of the values
// toRow returns. Rows travel as JSONCompactEachRow
// (one JSON array per line): ClickHouse parses it about twice as fast as
// JSONEachRow, whose every row repeats the column names. Usage rows travel
// in RowBinary instead when the backend is a BinaryInserter.
var (
	usageColumns = func() []string {
		cols := make([]string, len(usageSchema))
		for i, c := range usageSchema {
			cols[i] = c.name
		}
		return cols
	}()
	anomalyColumns = []string{"anomaly_id", "time", "detector", "severity", "token_id", "tenant", "holder", "event_id",
		"event_time", "source_ip", "evidence_seen", "evidence_baseline", "evidence_details"}
	ledgerColumns = []string{"event_id", "time", "type", "token_id", "tenant", "holder", "kid", "scopes", "audience",
		"networks", "environment", "windows", "device", "nbf", "exp", "grace_until", "actor", "reason", "kind",
		"successor_id", "rotated_from", "break_glass", "anomaly_id", "requested_ip", "requested_client", "step", "would",
		"until", "rule", "risk"}
)

// Table names rows of each kind are written to.
const (
	tableUsage     = "usage_events_raw"
	tableAnomalies = "anomalies_raw"
	tableLedger    = "token_ledger_raw"
)

// TableFor returns the raw table events of type t are written to, and false
// for types the store does not keep (keys, policy changes).
func TableFor(t events.Type) (string, bool) {
	switch t {
	case events.TypeUsageDecided:
		return tableUsage, true
	case events.TypeAnomalyDetected:
		return tableAnomalies, true
	case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired,
		events.TypeTokenRestricted, events.TypeTokenReleased:
		return tableLedger, true
	}
	return "", false
}

// columnsOf returns the columns a raw table is written with.
func columnsOf(table string) []string {
	switch table {
	case tableUsage:
		return usageColumns
	case tableAnomalies:
		return anomalyColumns
	}
	return ledgerColumns
}

// Insert writes a mixed batch: each envelope goes to the table TableFor
// names. An envelope of a type the store does not keep fails the whole call
// with ErrUnsupportedEvent before anything is written.
//
// Every insert method is idempotent: writing an event again, alone or in a
// different batch, never makes it count twice in the analyst views (see the
// package documentation). So a caller acknowledges its source only after
// the call returns nil, and on error retries the whole batch.
func (s *Store) Insert(ctx context.Context, evs []events.Envelope) error {
	byTable := make(map[string][]events.Envelope, 3)
	for _, e := range evs {
		t, ok := TableFor(e.Type)
		if !ok {
			return fmt.Errorf("insert: event %s: %w: %q", e.ID, ErrUnsupportedEvent, e.Type)
		}
		byTable[t] = append(byTable[t], e)
	}
	for _, t := range []string{tableUsage, tableAnomalies, tableLedger} {
		if err := s.insert(ctx, t, byTable[t]); err != nil {
			return err
		}
	}
	return nil
}

// InsertUsage writes usage.decided events to usage_events.
func (s *Store) InsertUsage(ctx context.Context, evs []events.Envelope) error {
	return s.insert(ctx, tableUsage, evs)
}

// InsertUsageOnce writes evs (every Data a *events.UsageDecided) as ONE
// insert block de-duplicated by token: ClickHouse drops a later insert
// carrying the same token, whatever its rows, so a caller that retries must
// resend exactly the same rows. token must be non-empty, ≤ 256 bytes,
// printable ASCII without quotes or backslash (ValidateDedupToken); it is
// passed as the insert's insert_deduplication_token setting. The rows are
// never split, whatever their size (a split would send the token twice and
// lose the second part). An invalid token or event fails the call before
// anything is written; evs empty writes nothing.
//
// The token is remembered for the table's deduplication window (the last
// 10,000 inserts, migration 0007), not forever: a retry must come within
// it.
func (s *Store) InsertUsageOnce(ctx context.Context, token string, evs []events.Envelope) error {
	if err := ValidateDedupToken(token); err != nil {
		return fmt.Errorf("insert into %s: %w", tableUsage, err)
	}
	if len(evs) == 0 {
		return nil
	}
	return s.insertUsage(ctx, usageColumns, evs, InsertOptions{DedupToken: token})
}

// InsertAnomalies writes anomaly.detected events to anomalies.
func (s *Store) InsertAnomalies(ctx context.Context, evs []events.Envelope) error {
	return s.insert(ctx, tableAnomalies, evs)
}

// InsertAnomaliesOnce is InsertUsageOnce for anomaly.detected events: one
// insert into anomalies, dropped when a recent insert carried the same
// token (anomalies_raw has the same window as usage_events_raw).
func (s *Store) InsertAnomaliesOnce(ctx context.Context, token string, evs []events.Envelope) error {
	if err := ValidateDedupToken(token); err != nil {
		return fmt.Errorf("insert into %s: %w", tableAnomalies, err)
	}
	return s.insertOpts(ctx, tableAnomalies, evs, InsertOptions{DedupToken: token})
}

// InsertLedger writes token.issued, token.rotated, token.revoked,
// token.expired, token.restricted and token.released events to
// token_ledger.
func (s *Store) InsertLedger(ctx context.Context, evs []events.Envelope) error {
	return s.insert(ctx, tableLedger, evs)
}

// insert converts evs to rows of table and writes them in as few inserts as
// maxInsertBytes allows.
func (s *Store) insert(ctx context.Context, table string, evs []events.Envelope) error {
	return s.insertOpts(ctx, table, evs, InsertOptions{})
}

// insertOpts is insert with options; with a deduplication token, the rows
// go in one insert whatever their size (a split would send the token twice
// and lose the second part), and every row is converted before anything is
// written.
func (s *Store) insertOpts(ctx context.Context, table string, evs []events.Envelope, opts InsertOptions) error {
	if len(evs) == 0 {
		return nil
	}
	columns := columnsOf(table)
	if table == tableUsage {
		return s.insertUsage(ctx, columns, evs, opts)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, e := range evs {
		row, err := toRow(table, e)
		if err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
		if err := enc.Encode(row); err != nil {
			return fmt.Errorf("insert into %s: encode event %s: %w", table, e.ID, err)
		}
		if buf.Len() >= maxInsertBytes && opts.DedupToken == "" {
			if err := s.b.Insert(ctx, table, columns, buf.Bytes(), opts); err != nil {
				return fmt.Errorf("insert into %s: %w", table, err)
			}
			buf.Reset()
		}
	}
	if buf.Len() > 0 {
		if err := s.b.Insert(ctx, table, columns, buf.Bytes(), opts); err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
	}
	return nil
}

// usageRowBytes is about the size of a usage row in JSONCompactEachRow,
// to size the buffer of an insert once. RowBinary rows are sized exactly
// (usageRowBinarySize): a buffer of megabytes that fills past its
// capacity is allocated again, zeroed and copied, and on the scale-out
// suite's usage, whose rows were larger than this guess, that cost a fifth
// of the auditor's CPU per event.
const usageRowBytes = 192

// usageBufs keeps the row buffers of usage inserts (megabytes each) for
// the next inserts, up to its capacity; buffers larger than keptBufBytes
// are let go. A sync.Pool lets the garbage collector empty it, and a
// process whose heap is small collects between two inserts: each insert
// then allocated its buffer again, which the runtime zeroes and the
// kernel maps in page by page as the rows are written (in the scale-out
// suite, twice the CPU of encoding the rows).
var usageBufs = make(chan []byte, 4)

// keptBufBytes is the largest buffer usageBufs keeps: an insert that may
// be split is written at maxInsertBytes.
const keptBufBytes = maxInsertBytes + maxInsertBytes/16

// usageBuf returns a kept buffer, or nil.
func usageBuf() []byte {
	select {
	case b := <-usageBufs:
		return b
	default:
		return nil
	}
}

// keepUsageBuf keeps b for a later insert if there is room and it is not
// too large.
func keepUsageBuf(b []byte) {
	if cap(b) > keptBufBytes {
		return
	}
	select {
	case usageBufs <- b[:0]:
	default:
	}
}

// insertUsage is insert for usage events, the hot path: rows are appended
// by hand instead of through encoding/json, which costs several
// microseconds a row: in RowBinary (appendUsageRowBinary) when the backend
// is a BinaryInserter, which ClickHouse reads about three times faster,
// else in JSONCompactEachRow (appendUsageRow). With a deduplication token
// the rows go in one insert, never split at maxInsertBytes; every row is
// encoded before anything is written. Usage inserts skip the engine's merge
// of the block (InsertOptions.NoInsertMerge).
func (s *Store) insertUsage(ctx context.Context, columns []string, evs []events.Envelope, opts InsertOptions) error {
	// A copy of an event within one insert is then kept until a merge,
	// as a copy in another insert is: the same for every view.
	opts.NoInsertMerge = !s.insertMerge
	bin, isBin := s.b.(BinaryInserter)
	buf := usageBuf()
	want := len(evs) * usageRowBytes
	if isBin {
		want = 0
		for _, e := range evs {
			if p, ok := e.Data.(*events.UsageDecided); ok {
				want += usageRowBinarySize(p)
			}
		}
	}
	if opts.DedupToken == "" {
		want = min(want, keptBufBytes) // written at maxInsertBytes
	}
	if cap(buf) < want {
		buf = make([]byte, 0, want) // one allocation, not a doubling per megabyte
	}
	defer func() { keepUsageBuf(buf) }()
	for _, e := range evs {
		p, ok := e.Data.(*events.UsageDecided)
		if !ok || e.Type != events.TypeUsageDecided {
			return fmt.Errorf("insert into %s: event %s: %w: %q", tableUsage, e.ID, ErrUnsupportedEvent, e.Type)
		}
		if isBin {
			var err error
			if buf, err = appendUsageRowBinary(buf, e, p); err != nil {
				return fmt.Errorf("insert into %s: %w", tableUsage, err)
			}
		} else {
			buf = appendUsageRow(buf, e, p)
		}
		if len(buf) >= maxInsertBytes && opts.DedupToken == "" {
			if err := s.writeUsage(ctx, bin, columns, buf, opts); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		return s.writeUsage(ctx, bin, columns, buf, opts)
	}
	return nil
}

// writeUsage sends encoded usage rows: through bin in RowBinary when it is
// not nil, else through Backend.Insert in JSONCompactEachRow.
func (s *Store) writeUsage(ctx context.Context, bin BinaryInserter, columns []string, rows []byte, opts InsertOptions) error {
	var err error
	if bin != nil {
		err = bin.InsertRowBinary(ctx, tableUsage, columns, usageStructure, rows, opts)
	} else {
		err = s.b.Insert(ctx, tableUsage, columns, rows, opts)
	}
	if err != nil {
		return fmt.Errorf("insert into %s: %w", tableUsage, err)
	}
	return nil
}

// usageRowBinarySize is the length of p's RowBinary row
// (appendUsageRowBinary) when its strings are valid UTF-8; a string that
// is not grows by up to two bytes per invalid byte.
func usageRowBinarySize(p *events.UsageDecided) int {
	n := 3*8 + 1 + 8 + 4 // id, time; decision; latency, count
	for _, v := range [...]string{p.TokenID, p.Tenant, p.Holder, p.KeyID, p.Enforcer, p.Service, p.SourceIP,
		p.UserAgent, p.Method, p.Route, p.Scope, p.Reason, p.Resource, p.Client, p.Device} {
		n += uvarintLen(uint64(len(v))) + len(v)
	}
	return n
}

// uvarintLen is the length of v as a uvarint.
func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// appendUsageRowBinary appends the RowBinary row of a usage event, of
// structure usageStructure, with the values the JSON path writes: the
// same instant to the microsecond (rounded down, as the JSON text is), the
// same strings as ClickHouse reads them back from JSON (invalid UTF-8 made
// U+FFFD byte by byte, as appendJSONString does). A value the table cannot
// hold (a decision other than allow or deny, a negative latency, a count
// beyond UInt32) is an error, where the JSON path would fail in the engine
// or wrap; nothing is appended then.
func appendUsageRowBinary(b []byte, e events.Envelope, p *events.UsageDecided) ([]byte, error) {
	var decision byte
	switch p.Decision {
	case events.DecisionAllow:
		decision = 1
	case events.DecisionDeny:
		decision = 2
	default:
		return b, fmt.Errorf("event %s: %w: decision %q is not allow or deny", e.ID, events.ErrInvalidField, p.Decision)
	}
	if p.LatencyNS < 0 {
		return b, fmt.Errorf("event %s: %w: latency_ns is negative", e.ID, events.ErrInvalidField)
	}
	count := p.Requests()
	if count > math.MaxUint32 {
		return b, fmt.Errorf("event %s: %w: count %d is beyond %d", e.ID, events.ErrInvalidField, count, uint64(math.MaxUint32))
	}
	// A UUID is two little-endian UInt64: the high and the low half of
	// its big-endian bytes.
	b = binary.LittleEndian.AppendUint64(b, binary.BigEndian.Uint64(e.ID[0:8]))
	b = binary.LittleEndian.AppendUint64(b, binary.BigEndian.Uint64(e.ID[8:16]))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Time.UnixMicro()))
	for _, v := range [...]string{p.TokenID, p.Tenant, p.Holder, p.KeyID, p.Enforcer, p.Service, p.SourceIP,
		p.UserAgent, p.Method, p.Route, p.Scope} {
		b = appendBinaryString(b, v)
	}
	b = append(b, decision)
	b = appendBinaryString(b, p.Reason)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.LatencyNS))
	b = binary.LittleEndian.AppendUint32(b, uint32(count))
	for _, v := range [...]string{p.Resource, p.Client, p.Device} {
		b = appendBinaryString(b, v)
	}
	return b, nil
}

// appendBinaryString appends s as a RowBinary String: its length as a
// LEB128 varint, then its bytes, each byte of invalid UTF-8 replaced by
// U+FFFD (what ClickHouse stores from appendJSONString's text).
func appendBinaryString(b []byte, s string) []byte {
	if utf8.ValidString(s) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		return append(b, s...)
	}
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len(string(utf8.RuneError))
		} else {
			n += size
		}
		i += size
	}
	b = binary.AppendUvarint(b, uint64(n))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// appendUsageRow appends the JSONCompactEachRow line of a usage event, with
// the values toRow gives, in the order of usageColumns.
func appendUsageRow(b []byte, e events.Envelope, p *events.UsageDecided) []byte {
	b = append(b, '[', '"')
	b = appendUUID(b, e.ID)
	b = append(b, '"', ',', '"')
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, '"')
	for _, v := range [...]string{p.TokenID, p.Tenant, p.Holder, p.KeyID, p.Enforcer, p.Service, p.SourceIP,
		p.UserAgent, p.Method, p.Route, p.Scope, p.Decision, p.Reason} {
		b = append(b, ',')
		b = appendJSONString(b, v)
	}
	b = append(b, ',')
	b = strconv.AppendInt(b, p.LatencyNS, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, p.Requests(), 10)
	for _, v := range [...]string{p.Resource, p.Client, p.Device} {
		b = append(b, ',')
		b = appendJSONString(b, v)
	}
	return append(b, ']', '\n')
}

// appendUUID appends u in its canonical text form, as uuid.UUID.String.
func appendUUID(b []byte, u uuid.UUID) []byte {
	const hexDigits = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return b
}

// appendJSONString appends s as a JSON string the way encoding/json writes
// it without HTML escaping: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0x0f])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// toRow converts an envelope into the values of a row of table, in the
// order of columnsOf(table).
func toRow(table string, e events.Envelope) ([]any, error) {
	if t, ok := TableFor(e.Type); !ok || t != table {
		return nil, fmt.Errorf("event %s: %w: %q", e.ID, ErrUnsupportedEvent, e.Type)
	}
	switch p := e.Data.(type) {
	case *events.UsageDecided:
		return []any{e.ID.String(), formatTime(e.Time), p.TokenID, p.Tenant, p.Holder, p.KeyID, p.Enforcer, p.Service,
			p.SourceIP, p.UserAgent, p.Method, p.Route, p.Scope, p.Decision, p.Reason, p.LatencyNS, p.Requests(),
			p.Resource, p.Client, p.Device}, nil
	case *events.AnomalyDetected:
		details := p.Evidence.Details
		if details == nil {
			details = map[string]string{}
		}
		return []any{p.AnomalyID, formatTime(e.Time), p.Detector, p.Severity, p.TokenID, p.Tenant, p.Holder, p.EventID,
			formatTime(p.EventTime), p.SourceIP, p.Evidence.Seen, p.Evidence.Baseline, details}, nil
	case *events.TokenIssued:
		windows := []byte("[]")
		if p.Claims.Windows != nil {
			var err error
			if windows, err = json.Marshal(p.Claims.Windows); err != nil {
				return nil, fmt.Errorf("event %s: encode windows: %w", e.ID, err)
			}
		}
		r := ledgerRow{kid: p.KeyID, scopes: p.Claims.Scopes, audience: p.Claims.Audience, networks: p.Claims.Networks,
			environment: p.Claims.Environment, windows: string(windows), device: p.Claims.Device,
			nbf: p.Claims.NotBefore, exp: p.Claims.Expiry, actor: p.Actor, rotatedFrom: p.RotatedFrom, breakGlass: p.BreakGlass}
		if q := p.Requested; q != nil {
			r.requestedIP, r.requestedClient = q.SourceIP, q.Client
		}
		return r.values(e, "issued", p.TokenID, p.Tenant, p.Holder), nil
	case *events.TokenRotated:
		r := ledgerRow{successorID: p.SuccessorID, graceUntil: p.GraceUntil, actor: p.Actor}
		return r.values(e, "rotated", p.TokenID, p.Tenant, p.Holder), nil
	case *events.TokenRevoked:
		r := ledgerRow{kid: p.KeyID, kind: p.Kind, actor: p.Actor, reason: p.Reason, exp: p.Expiry, anomalyID: p.AnomalyID}
		return r.values(e, "revoked", p.TokenID, p.Tenant, p.Holder), nil
	case *events.TokenExpired:
		r := ledgerRow{exp: p.Expiry}
		return r.values(e, "expired", p.TokenID, p.Tenant, p.Holder), nil
	case *events.TokenRestricted:
		r := ledgerRow{kid: p.KeyID, step: p.Step, would: p.Would, until: p.Until, scopes: p.Scopes, networks: p.Networks,
			actor: p.Actor, reason: p.Reason, rule: p.Rule, anomalyID: p.AnomalyID, risk: p.Risk, exp: p.Expiry}
		return r.values(e, "restricted", p.TokenID, p.Tenant, p.Holder), nil
	case *events.TokenReleased:
		r := ledgerRow{step: p.Step, actor: p.Actor, reason: p.Reason}
		return r.values(e, "released", p.TokenID, p.Tenant, p.Holder), nil
	}
	return nil, fmt.Errorf("event %s: %w: payload %T does not match type %q", e.ID, ErrUnsupportedEvent, e.Data, e.Type)
}

// ledgerRow holds the ledger columns that vary by event type.
type ledgerRow struct {
	kid, environment, windows, device, actor, reason, kind string
	successorID, rotatedFrom, anomalyID                    string
	requestedIP, requestedClient                           string
	step, would, rule                                      string
	scopes, audience, networks                             []string
	nbf, exp, graceUntil, until                            time.Time
	breakGlass                                             bool
	risk                                                   float64
}

func (r ledgerRow) values(e events.Envelope, typ, tokenID, tenant, holder string) []any {
	if r.windows == "" {
		r.windows = "[]"
	}
	return []any{e.ID.String(), formatTime(e.Time), typ, tokenID, tenant, holder, r.kid, nonNil(r.scopes),
		nonNil(r.audience), nonNil(r.networks), r.environment, r.windows, r.device, optTime(r.nbf), optTime(r.exp),
		optTime(r.graceUntil), r.actor, r.reason, r.kind, r.successorID, r.rotatedFrom, r.breakGlass, r.anomalyID,
		r.requestedIP, r.requestedClient, r.step, r.would, optTime(r.until), r.rule, r.risk}
}

// optTime is a Nullable time: nil for the zero time.
func optTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
