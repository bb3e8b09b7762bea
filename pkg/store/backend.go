package store

import (
	"context"
	"fmt"
)

// Backend is a ClickHouse engine the store runs on. Two implementations
// exist: chdbstore (chDB, the engine as an in-process library) and chserver
// (a ClickHouse server over its HTTP interface). Both take the same SQL; the
// store builds every statement and decodes every result itself, so a backend
// only moves text.
type Backend interface {
	// Database is the database the store's tables live in. The backend
	// creates it when it opens, and unqualified table names in queries
	// resolve to it.
	Database() string
	// Exec runs one statement that returns no rows (DDL, ALTER).
	Exec(ctx context.Context, query string) error
	// Insert appends rows to table (unqualified) in Database, as one
	// INSERT statement. The rows are in ClickHouse's JSONCompactEachRow
	// format: one JSON array per line, holding the values of columns in
	// order. opts.DedupToken, when set, is passed as the statement's
	// insert_deduplication_token setting; a backend refuses a token
	// ValidateDedupToken refuses, before sending anything.
	Insert(ctx context.Context, table string, columns []string, rows []byte, opts InsertOptions) error
	// Query runs one statement and returns its result in ClickHouse's
	// JSONCompact format (meta, data). Settings apply to this query only.
	Query(ctx context.Context, query string, settings []Setting) ([]byte, error)
	// Close releases the backend.
	Close() error
}

// BinaryInserter is a Backend that also takes rows in ClickHouse's
// RowBinary format, which the engine reads several times faster than
// JSONCompactEachRow. The store writes usage rows through it when its
// backend has it (chdbstore and chserver do), and through Backend.Insert
// otherwise.
type BinaryInserter interface {
	// InsertRowBinary appends rows to table (unqualified) in the
	// backend's database, as one INSERT of columns, in order. rows is
	// RowBinary whose values have the types of structure
	// ("event_id UUID, time DateTime64(6), …": a name and a type per
	// column, as ClickHouse's input structures are written; no quote
	// or backslash), or of the columns themselves when structure is
	// empty. A backend may read the rows in the columns' own types (a
	// server reading INSERT … FORMAT RowBinary does), so structure's
	// types must be the columns' without what changes no byte:
	// LowCardinality, a DateTime64's time zone, an Enum8 as its Int8.
	// opts is as for Backend.Insert.
	InsertRowBinary(ctx context.Context, table string, columns []string, structure string, rows []byte, opts InsertOptions) error
}

// Setting is one ClickHouse setting applied to a single query.
type Setting struct {
	// Name is the setting name, e.g. "readonly".
	Name string
	// Value is an int, a uint64 or a string.
	Value any
}

// InsertOptions are per-insert choices of Backend.Insert. The zero value is
// a plain insert.
type InsertOptions struct {
	// DedupToken, when not empty, is the insert's
	// insert_deduplication_token: on a table with a deduplication window
	// (migration 0007 gives usage_events_raw one), ClickHouse drops a later
	// insert carrying the same token, whatever its rows, and so do the
	// materialized views fed by the table. It must pass ValidateDedupToken.
	DedupToken string
	// NoInsertMerge turns off the merge of the inserted block's rows
	// that share a sorting key (ClickHouse's optimize_on_insert = 0):
	// a ReplacingMergeTree then keeps an event written twice in one
	// insert until a background merge, as it keeps an event written in
	// two inserts, and a view reading FINAL still shows it once. The
	// store sets it on usage inserts, whose rows hold each event once
	// (measured in docs/schema.md: the merge cost about a fifth of the
	// insert's CPU and removed nothing).
	NoInsertMerge bool
}

// MaxDedupTokenLen is the longest deduplication token accepted, in bytes.
const MaxDedupTokenLen = 256

// ValidateDedupToken checks a deduplication token: not empty, at most
// MaxDedupTokenLen bytes, printable ASCII (0x20 to 0x7e) without a quote
// (' " `) or a backslash. Tokens are made by Cordon's code (e.g.
// "usage:mhx2k9q0c8:p3:1200-1450"); the narrow alphabet keeps them out of any quoting
// question in SQL text and URL parameters. The error quotes at most the
// first 32 bytes, escaped.
func ValidateDedupToken(token string) error {
	if token == "" {
		return fmt.Errorf("%w: empty", ErrInvalidDedupToken)
	}
	if len(token) > MaxDedupTokenLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidDedupToken, len(token), MaxDedupTokenLen)
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if c < 0x20 || c > 0x7e || c == '\'' || c == '"' || c == '`' || c == '\\' {
			head := token
			if len(head) > 32 {
				head = head[:32]
			}
			return fmt.Errorf("%w: byte %d (%q) is not allowed in %q", ErrInvalidDedupToken, i, c, head)
		}
	}
	return nil
}
