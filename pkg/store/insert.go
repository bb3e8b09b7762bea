package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// maxInsertBytes splits very large batches into several inserts. Each insert
// is atomic; a batch split in two is still safe to retry as a whole, because
// the tables are idempotent (see the package documentation).
const maxInsertBytes = 16 << 20

// The columns each raw table is written with, in the order of the values
// toRow returns. Rows travel as JSONCompactEachRow
// (one JSON array per line): ClickHouse parses it about twice as fast as
// JSONEachRow, whose every row repeats the column names.
var (
	usageColumns = []string{"event_id", "time", "token_id", "tenant", "holder", "kid", "enforcer", "service",
		"source_ip", "user_agent", "method", "route", "scope", "decision", "reason", "latency_ns", "count",
		"resource", "client", "device"}
	anomalyColumns = []string{"anomaly_id", "time", "detector", "severity", "token_id", "tenant", "holder", "event_id",
		"event_time", "source_ip", "evidence_seen", "evidence_baseline", "evidence_details"}
	ledgerColumns = []string{"event_id", "time", "type", "token_id", "tenant", "holder", "kid", "scopes", "audience",
		"networks", "environment", "windows", "device", "nbf", "exp", "grace_until", "actor", "reason", "kind",
		"successor_id", "rotated_from", "break_glass", "anomaly_id", "requested_ip", "requested_client"}
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
	case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired:
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

// InsertLedger writes token.issued, token.rotated, token.revoked and
// token.expired events to token_ledger.
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

// usageBufs recycles the row buffers of usage inserts (megabytes each).
var usageBufs = sync.Pool{New: func() any { return new([]byte) }}

// insertUsage is insert for usage events, the hot path: rows are appended
// by hand (appendUsageRow) instead of through encoding/json, which costs
// several microseconds a row. With a deduplication token the rows go in one
// insert, never split at maxInsertBytes.
func (s *Store) insertUsage(ctx context.Context, columns []string, evs []events.Envelope, opts InsertOptions) error {
	bp := usageBufs.Get().(*[]byte)
	defer usageBufs.Put(bp)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0] }()
	for _, e := range evs {
		p, ok := e.Data.(*events.UsageDecided)
		if !ok || e.Type != events.TypeUsageDecided {
			return fmt.Errorf("insert into %s: event %s: %w: %q", tableUsage, e.ID, ErrUnsupportedEvent, e.Type)
		}
		buf = appendUsageRow(buf, e, p)
		if len(buf) >= maxInsertBytes && opts.DedupToken == "" {
			if err := s.b.Insert(ctx, tableUsage, columns, buf, opts); err != nil {
				return fmt.Errorf("insert into %s: %w", tableUsage, err)
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if err := s.b.Insert(ctx, tableUsage, columns, buf, opts); err != nil {
			return fmt.Errorf("insert into %s: %w", tableUsage, err)
		}
	}
	return nil
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
	}
	return nil, fmt.Errorf("event %s: %w: payload %T does not match type %q", e.ID, ErrUnsupportedEvent, e.Data, e.Type)
}

// ledgerRow holds the ledger columns that vary by event type.
type ledgerRow struct {
	kid, environment, windows, device, actor, reason, kind string
	successorID, rotatedFrom, anomalyID                    string
	requestedIP, requestedClient                           string
	scopes, audience, networks                             []string
	nbf, exp, graceUntil                                   time.Time
	breakGlass                                             bool
}

func (r ledgerRow) values(e events.Envelope, typ, tokenID, tenant, holder string) []any {
	if r.windows == "" {
		r.windows = "[]"
	}
	return []any{e.ID.String(), formatTime(e.Time), typ, tokenID, tenant, holder, r.kid, nonNil(r.scopes),
		nonNil(r.audience), nonNil(r.networks), r.environment, r.windows, r.device, optTime(r.nbf), optTime(r.exp),
		optTime(r.graceUntil), r.actor, r.reason, r.kind, r.successorID, r.rotatedFrom, r.breakGlass, r.anomalyID,
		r.requestedIP, r.requestedClient}
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
