package store

import "context"

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
	// Insert appends rows to table (unqualified) in Database. The rows
	// are in ClickHouse's JSONCompactEachRow format: one JSON array per
	// line, holding the values of columns in order.
	Insert(ctx context.Context, table string, columns []string, rows []byte) error
	// Query runs one statement and returns its result in ClickHouse's
	// JSONCompact format (meta, data). Settings apply to this query only.
	Query(ctx context.Context, query string, settings []Setting) ([]byte, error)
	// Close releases the backend.
	Close() error
}

// Setting is one ClickHouse setting applied to a single query.
type Setting struct {
	// Name is the setting name, e.g. "readonly".
	Name string
	// Value is an int, a uint64 or a string.
	Value any
}
