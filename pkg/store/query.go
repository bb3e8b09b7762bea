package store

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
)

// AnalystBackend is implemented by a backend that runs analysts' queries
// apart from the store's own: chdbstore gives ingestion the engine first,
// chserver uses a read-only server user. Query uses it for every engine call
// it makes for an analyst when the backend has it, Backend.Query otherwise.
type AnalystBackend interface {
	// AnalystQuery runs one statement of an analyst's query, like
	// Backend.Query.
	AnalystQuery(ctx context.Context, query string, settings []Setting) ([]byte, error)
}

// withQueryDefaults validates the analyst limits and fills in defaults.
func (o Options) withQueryDefaults() (Options, error) {
	switch {
	case o.MaxResultRows < -1:
		return o, fmt.Errorf("max result rows %d: want -1 (no bound), 0 (default) or more", o.MaxResultRows)
	case o.MaxResultBytes < -1:
		return o, fmt.Errorf("max result bytes %d: want -1 (no bound), 0 (default) or more", o.MaxResultBytes)
	case o.QueryTimeout < 0 || o.QueryTimeout > 0 && o.QueryTimeout < time.Second || o.QueryTimeout > MaxQueryTimeout:
		return o, fmt.Errorf("query timeout %s: want 1s to %s (0: %s)", o.QueryTimeout, MaxQueryTimeout, DefaultQueryTimeout)
	case o.MaxQueryMemory < 0 || o.MaxQueryMemory > 0 && o.MaxQueryMemory < 16<<20:
		return o, fmt.Errorf("max query memory %d bytes: want at least 16 MiB (0: %d)", o.MaxQueryMemory, DefaultMaxQueryMemory)
	case o.QueryThreads < 0:
		return o, fmt.Errorf("query threads %d: want 0 (half the CPUs) or more", o.QueryThreads)
	case o.MaxConcurrentQueries < 0:
		return o, fmt.Errorf("max concurrent queries %d: want 0 (%d) or more", o.MaxConcurrentQueries, DefaultMaxConcurrentQueries)
	}
	if o.MaxResultRows == 0 {
		o.MaxResultRows = DefaultMaxResultRows
	}
	if o.MaxResultBytes == 0 {
		o.MaxResultBytes = DefaultMaxResultBytes
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	o.QueryTimeout = time.Duration(math.Ceil(o.QueryTimeout.Seconds())) * time.Second
	if o.MaxQueryMemory == 0 {
		o.MaxQueryMemory = DefaultMaxQueryMemory
	}
	if o.QueryThreads == 0 {
		o.QueryThreads = max(1, runtime.NumCPU()/2)
	}
	if o.MaxConcurrentQueries == 0 {
		o.MaxConcurrentQueries = DefaultMaxConcurrentQueries
	}
	return o, nil
}

// QuerySettings returns the engine settings an analyst query runs with
// under these options (defaults applied), readonly=1 last. A ClickHouse
// server's analyst profile must let a read-only user set each of them but
// readonly (deploy/compose/clickhouse/analyst.xml does).
func (o Options) QuerySettings() ([]Setting, error) {
	o, err := o.withQueryDefaults()
	if err != nil {
		return nil, err
	}
	return o.querySettings(), nil
}

// querySettings expects defaults applied.
func (o Options) querySettings() []Setting {
	s := append([]Setting(nil), resultSettings...)
	s = append(s,
		Setting{"max_execution_time", int(o.QueryTimeout / time.Second)},
		Setting{"timeout_overflow_mode", "throw"},
		Setting{"max_memory_usage", uint64(o.MaxQueryMemory)},
		Setting{"max_threads", o.QueryThreads},
		Setting{"result_overflow_mode", "throw"},
		// A server cancels the query when its client gives up.
		Setting{"cancel_http_readonly_queries_on_client_close", 1},
	)
	if o.MaxResultRows > 0 {
		// max_result_rows does not count the rows of a SELECT without FROM
		// (SELECT arrayJoin(range(1e8))): limit caps each top-level SELECT
		// at one row more than allowed, which analystQuery then refuses.
		s = append(s, Setting{"max_result_rows", o.MaxResultRows}, Setting{"limit", o.MaxResultRows + 1})
	}
	if o.MaxResultBytes > 0 {
		s = append(s, Setting{"max_result_bytes", uint64(o.MaxResultBytes)})
	}
	// readonly goes last: once applied, ClickHouse refuses later changes.
	return append(s, Setting{"readonly", 1})
}

// gateSettings are those of the gate's own engine calls (normalising):
// read-only and bounded like the query itself.
func (o Options) gateSettings() []Setting {
	s := append([]Setting(nil), resultSettings...)
	return append(s,
		Setting{"max_execution_time", int(o.QueryTimeout / time.Second)},
		Setting{"timeout_overflow_mode", "throw"},
		Setting{"max_memory_usage", uint64(o.MaxQueryMemory)},
		Setting{"readonly", 1})
}

// Query runs an analyst's query and returns its columns and rows.
//
// The query is judged on the engine's own parse (gate.go): one SELECT or
// WITH statement, reading Cordon's tables and views in the store's database
// (or names it defines itself), calling allow-listed functions only; no
// table functions, no SETTINGS, no INTO OUTFILE, no FORMAT. Anything else is
// refused with an error wrapping ErrNotReadOnly that names what was refused.
// What runs is the engine's normalised text of the query, never the
// caller's text, with readonly=1 and the limits of Options (time, memory,
// result rows and bytes), which the engine enforces by cancelling the query;
// an error wrapping ErrQueryLimit says which limit was hit. Unqualified
// table names resolve to the store's database. See Result for the Go types
// of the cells.
//
// At most Options.MaxConcurrentQueries analyst queries run at once; others
// wait, bounded by ctx. When ctx ends or Close starts, Query returns at
// once (ErrClosed for the latter); the statement already on the engine runs
// on until it finishes or hits its time limit, and keeps its turn until
// then.
func (s *Store) Query(ctx context.Context, q string) (*Result, error) {
	if err := Precheck(q); err != nil {
		return nil, err
	}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, fmt.Errorf("query: %w", ErrClosed)
	}
	s.inflight.Add(1)
	s.closeMu.RUnlock()
	// qctx ends with the caller's context or when Close starts.
	qctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closing, cancel)
	end := func() {
		stop()
		cancel()
		s.inflight.Done()
	}
	gaveUp := func(what string) error {
		if s.closing.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("query: %s: %w", what, ErrClosed)
		}
		return fmt.Errorf("query: %s: %w", what, ctx.Err())
	}
	select {
	case s.analysts <- struct{}{}:
	case <-qctx.Done():
		end()
		return nil, gaveUp(fmt.Sprintf("waiting for a turn (%d analyst queries run at once)", s.opts.MaxConcurrentQueries))
	}
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		defer end()
		defer func() { <-s.analysts }()
		res, err := s.analystQuery(qctx, q)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-qctx.Done():
		// The goroutine cancels qctx after it answers: an answer wins.
		select {
		case o := <-done:
			return o.res, o.err
		default:
		}
		return nil, gaveUp(fmt.Sprintf("given up (the engine stops the statement within its %s limit)", s.opts.QueryTimeout))
	}
}

// runAnalyst runs one engine call for an analyst.
func (s *Store) runAnalyst(ctx context.Context, query string, settings []Setting) ([]byte, error) {
	if a, ok := s.b.(AnalystBackend); ok {
		return a.AnalystQuery(ctx, query, settings)
	}
	return s.b.Query(ctx, query, settings)
}

// CheckQuery runs the gate of Query on q without running q: it returns the
// engine's normalised text that Query would run, or why q is refused (an
// error wrapping ErrNotReadOnly).
func (s *Store) CheckQuery(ctx context.Context, q string) (string, error) {
	if err := Precheck(q); err != nil {
		return "", err
	}
	return s.gate(ctx, q)
}

// gate judges q (see gate.go) and returns the normalised text to run.
func (s *Store) gate(ctx context.Context, q string) (string, error) {
	n, err := normalize(ctx, s.runAnalyst, q, s.gateSettings)
	if err != nil {
		return "", err
	}
	toks, err := scanNormalized(n)
	if err != nil {
		return "", err
	}
	if err := textRefusal(toks, func() []string { return s.visibleTables(ctx) }); err != nil {
		return "", err
	}
	out, err := s.runAnalyst(ctx, "EXPLAIN AST "+n, nil)
	if err != nil {
		if ctx.Err() == nil && isParseError(err) {
			return "", refuse("the engine does not read it as one SELECT statement: %s", engineMessage(err))
		}
		return "", fmt.Errorf("explain query: %w", err)
	}
	dump, err := DecodeJSONCompact(out)
	if err != nil {
		return "", fmt.Errorf("explain query: %w", err)
	}
	lines := make([]string, 0, len(dump.Rows))
	for _, r := range dump.Rows {
		l, ok := r[0].(string)
		if len(r) != 1 || !ok {
			return "", fmt.Errorf("explain query: unexpected row %v", r)
		}
		lines = append(lines, l)
	}
	root, err := parseASTDump(lines)
	if err != nil {
		return "", err
	}
	g := &gateCheck{db: s.db, tables: s.isTable, defined: cteNames(toks)}
	if err := g.checkRoot(ctx, root); err != nil {
		return "", err
	}
	return n, nil
}

// analystQuery gates and runs q.
func (s *Store) analystQuery(ctx context.Context, q string) (*Result, error) {
	n, err := s.gate(ctx, q)
	if err != nil {
		return nil, err
	}
	out, err := s.runAnalyst(ctx, n, s.querySettings)
	if err != nil {
		if lim := s.limitHit(err); lim != "" {
			return nil, fmt.Errorf("query: %w: %s: %s", ErrQueryLimit, lim, engineMessage(err))
		}
		return nil, fmt.Errorf("query: %w", err)
	}
	// The engine's own limits miss a SELECT without FROM: bound what is
	// decoded here too.
	if s.opts.MaxResultBytes > 0 && int64(len(out)) > 2*s.opts.MaxResultBytes+1<<20 {
		return nil, fmt.Errorf("query: %w: the result is larger than %d MiB: add a LIMIT or aggregate", ErrQueryLimit, s.opts.MaxResultBytes>>20)
	}
	res, err := DecodeJSONCompact(out)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if s.opts.MaxResultRows > 0 && len(res.Rows) > s.opts.MaxResultRows {
		return nil, fmt.Errorf("query: %w: the result is larger than %d rows: add a LIMIT or aggregate", ErrQueryLimit, s.opts.MaxResultRows)
	}
	return res, nil
}

// limitHit names the analyst limit an engine error reports, if any.
func (s *Store) limitHit(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "TIMEOUT_EXCEEDED"):
		return fmt.Sprintf("the query ran longer than %s", s.opts.QueryTimeout)
	case strings.Contains(msg, "MEMORY_LIMIT_EXCEEDED"):
		return fmt.Sprintf("the query needed more than %d MiB of memory", s.opts.MaxQueryMemory>>20)
	case strings.Contains(msg, "TOO_MANY_ROWS_OR_BYTES"), strings.Contains(msg, "TOO_MANY_ROWS"), strings.Contains(msg, "TOO_MANY_BYTES"):
		return fmt.Sprintf("the result is larger than %d rows or %d MiB: add a LIMIT or aggregate", s.opts.MaxResultRows, s.opts.MaxResultBytes>>20)
	}
	return ""
}

// isTable reports whether name is one of Cordon's tables or views in the
// store's database. The list comes from the engine and is read again when a
// name is missing (a newer migration may have added it).
func (s *Store) isTable(ctx context.Context, name string) (bool, error) {
	s.tablesMu.Lock()
	known := s.tables[name]
	s.tablesMu.Unlock()
	if known {
		return true, nil
	}
	tables, err := s.loadTables(ctx)
	if err != nil {
		return false, err
	}
	return tables[name], nil
}

// loadTables reads the names of the store's tables and views.
func (s *Store) loadTables(ctx context.Context) (map[string]bool, error) {
	res, err := s.query(ctx, "SELECT name FROM system.tables WHERE database = "+quoteString(s.db))
	if err != nil {
		return nil, fmt.Errorf("list the tables of %s: %w", s.db, err)
	}
	tables := make(map[string]bool, len(res.Rows))
	for _, r := range res.Rows {
		if name, ok := r[0].(string); ok {
			tables[name] = true
		}
	}
	s.tablesMu.Lock()
	s.tables = tables
	s.tablesMu.Unlock()
	return tables, nil
}

// visibleTables lists the tables analysts are meant to read, for messages.
func (s *Store) visibleTables(ctx context.Context) []string {
	s.tablesMu.Lock()
	tables := s.tables
	s.tablesMu.Unlock()
	if tables == nil {
		tables, _ = s.loadTables(ctx)
	}
	return visibleTables(tables)
}

// query runs one of the store's own queries.
func (s *Store) query(ctx context.Context, q string) (*Result, error) {
	out, err := s.b.Query(ctx, q, resultSettings)
	if err != nil {
		return nil, err
	}
	return DecodeJSONCompact(out)
}
