package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/pkg/store/internal/sqltext"
)

// readOnlyStatements are the statement kinds Query accepts.
var readOnlyStatements = map[string]bool{
	"SELECT": true, "WITH": true, "SHOW": true, "DESCRIBE": true, "DESC": true, "EXPLAIN": true,
}

// CheckReadOnly reports whether q is one read-only statement that Query
// accepts: a single SELECT, WITH, SHOW, DESCRIBE/DESC or EXPLAIN statement
// (an optional trailing semicolon is fine), without INTO OUTFILE (which
// writes a file) and without a FORMAT clause (the output format is the
// caller's choice). The error wraps ErrNotReadOnly and says what is wrong.
func CheckReadOnly(q string) error {
	_, err := checkReadOnly(q)
	return err
}

func checkReadOnly(q string) (*sqltext.Query, error) {
	lexed, err := sqltext.Lex(q)
	switch {
	case errors.Is(err, sqltext.ErrEmpty):
		return nil, fmt.Errorf("%w: the query is empty", ErrNotReadOnly)
	case errors.Is(err, sqltext.ErrMultiple):
		return nil, fmt.Errorf("%w: one statement at a time (%v)", ErrNotReadOnly, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrNotReadOnly, err)
	}
	first := lexed.First()
	if !first.Word || !readOnlyStatements[strings.ToUpper(first.Text)] {
		return nil, fmt.Errorf("%w: %q statements are not allowed; use SELECT, WITH, SHOW, DESCRIBE or EXPLAIN", ErrNotReadOnly, first.Text)
	}
	if lexed.Has("INTO", "OUTFILE") {
		return nil, fmt.Errorf("%w: INTO OUTFILE writes a file; choose the output format of the command instead", ErrNotReadOnly)
	}
	if f, ok := lexed.TrailingFormat(); ok {
		return nil, fmt.Errorf("%w: FORMAT %s: the output format is chosen by the caller (table, csv or json), remove the FORMAT clause", ErrNotReadOnly, f)
	}
	return lexed, nil
}

// Query runs an analyst's read-only query and returns its columns and rows.
//
// The query must pass CheckReadOnly; it then runs with the engine's
// readonly=1 setting (no writes, no DDL, no table functions such as file()
// or url(), no changing settings) and fails rather than return more than
// Options.MaxResultRows rows. Unqualified table names resolve to the store's
// database. See Result for the Go types of the cells.
func (s *Store) Query(ctx context.Context, q string) (*Result, error) {
	lexed, err := checkReadOnly(q)
	if err != nil {
		return nil, err
	}
	settings := append([]Setting(nil), resultSettings...)
	if s.opts.MaxResultRows > 0 {
		settings = append(settings, Setting{"max_result_rows", s.opts.MaxResultRows}, Setting{"result_overflow_mode", "throw"})
	}
	// readonly goes last: once applied, ClickHouse refuses later changes.
	settings = append(settings, Setting{"readonly", 1})
	out, err := s.b.Query(ctx, lexed.Text, settings)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	res, err := DecodeJSONCompact(out)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return res, nil
}

// query runs one of the store's own queries.
func (s *Store) query(ctx context.Context, q string) (*Result, error) {
	out, err := s.b.Query(ctx, q, resultSettings)
	if err != nil {
		return nil, err
	}
	return DecodeJSONCompact(out)
}
