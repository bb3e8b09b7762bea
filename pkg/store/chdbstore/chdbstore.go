// Package chdbstore is the embedded store.Backend: ClickHouse as an
// in-process library (chDB, libchdb.so), called through purego, without
// cgo (binding.go says why Cordon binds the library itself rather than
// through github.com/chdb-io/chdb-go).
//
// The library is loaded on the first Open, never at program start: a
// program that links this package runs without it (cordon --help, cordon
// issuer, …) until it opens a chDB store. It is looked for where
// `make chdb` (scripts/install-chdb.sh) installs it, in Cordon's cache (see
// LibPath); when it is missing, Open returns an error wrapping
// ErrLibraryMissing that names where it looked and the install command.
//
// The engine keeps one session per process: every Backend opened here shares
// it, so all of them must use the same data path, and they are told apart by
// database name (which is how tests isolate themselves). Statements are
// blocking library calls: a context is checked before each call but cannot
// interrupt one. A call costs about 2 ms whatever its size, so batch inserts.
//
// The engine runs one statement at a time per session (measured with chDB
// 26.5: an INSERT issued while a long SELECT runs waits for it to end; the
// streaming API does not help, other statements fail while a stream is open,
// and a KILL QUERY waits in the same line). So an analyst's query holds
// ingestion for as long as it runs: AnalystQuery gives inserts the engine
// first, and the store bounds each analyst query's time.
package chdbstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/internal/sqltext"
)

// ErrSessionPath is returned by Open when the process's chDB session is
// already open on another data path.
var ErrSessionPath = errors.New("chdb session already open on another path")

// Options configure a chDB backend.
type Options struct {
	// Path is the directory chDB keeps its data in (created if missing).
	// Empty means a temporary directory removed when the last backend
	// closes: data is lost.
	Path string
	// Database is the database the store's tables live in
	// (store.DefaultDatabase when empty).
	Database string
}

// session is the process-wide chDB session, shared by every Backend.
var session struct {
	mu      sync.Mutex
	c       *conn
	path    string
	refs    int
	current string // the database of the last USE; guarded by useMu
}

// useMu serialises queries (not inserts): "USE db" must stay with the query
// that needs it, because unqualified names resolve to the session's current
// database, which is process-wide; and a failed query's leaked output must be
// absorbed before the next query runs (see Query).
var useMu sync.Mutex

// writes counts the inserts under way or waiting for the engine, process-wide
// (the engine is): an analyst query starts only when there are none.
var writes struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; replaced when it rises
}

func beginWrite() {
	writes.mu.Lock()
	if writes.n == 0 {
		writes.idle = make(chan struct{})
	}
	writes.n++
	writes.mu.Unlock()
}

func endWrite() {
	writes.mu.Lock()
	writes.n--
	if writes.n == 0 {
		close(writes.idle)
	}
	writes.mu.Unlock()
}

// waitNoWrites returns when no insert is under way or waiting, or when ctx
// ends.
func waitNoWrites(ctx context.Context) error {
	for {
		writes.mu.Lock()
		n, idle := writes.n, writes.idle
		writes.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Backend is a store.Backend on chDB.
type Backend struct {
	db        string
	conn      *conn
	insertDir string // where InsertRowBinary's files live
	closed    bool
	mu        sync.Mutex
}

var (
	_ store.Backend        = (*Backend)(nil)
	_ store.AnalystBackend = (*Backend)(nil)
	_ store.BinaryInserter = (*Backend)(nil)
)

// Open opens (or joins) the process's chDB session on o.Path and creates
// o.Database in it. The first Open loads the library (see Load); its error
// then wraps ErrLibraryMissing.
func Open(ctx context.Context, o Options) (*Backend, error) {
	if o.Database == "" {
		o.Database = store.DefaultDatabase
	}
	if err := store.ValidateDatabase(o.Database); err != nil {
		return nil, fmt.Errorf("open chdb: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open chdb: %w", err)
	}
	session.mu.Lock()
	defer session.mu.Unlock()
	if session.c == nil {
		lib, err := loadOnce()
		if err != nil {
			return nil, err // says what is missing and how to install it
		}
		// chDB reads a piped stdin as data for every INSERT and refuses
		// the INSERT: keep it away before the session opens.
		if _, err := KeepStdin(); err != nil {
			return nil, fmt.Errorf("open chdb: %w", err)
		}
		c, err := lib.open(o.Path)
		if err != nil {
			return nil, fmt.Errorf("open chdb session at %q: %w", o.Path, err)
		}
		if err := resetInsertDir(c.path); err != nil {
			c.close()
			return nil, fmt.Errorf("open chdb: %w", err)
		}
		session.c, session.path = c, o.Path
		useMu.Lock()
		session.current = ""
		useMu.Unlock()
	} else if o.Path != session.path {
		return nil, fmt.Errorf("open chdb at %q: %w %q", o.Path, ErrSessionPath, session.path)
	}
	b := &Backend{db: o.Database, conn: session.c, insertDir: filepath.Join(session.c.path, insertDirName)}
	if err := b.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+o.Database+"`"); err != nil {
		if session.refs == 0 {
			session.c.close()
			session.c, session.path = nil, ""
		}
		return nil, fmt.Errorf("open chdb: %w", err)
	}
	session.refs++
	return b, nil
}

// Database implements store.Backend.
func (b *Backend) Database() string { return b.db }

// Exec implements store.Backend.
func (b *Backend) Exec(ctx context.Context, query string) error {
	_, err := b.run(ctx, query, "CSV")
	return err
}

// Insert implements store.Backend: one INSERT … FORMAT JSONCompactEachRow
// call with the rows inline, and with opts.DedupToken as
// SETTINGS insert_deduplication_token = '…' before FORMAT, and
// optimize_on_insert = 0 with opts.NoInsertMerge.
func (b *Backend) Insert(ctx context.Context, table string, columns []string, rows []byte, opts store.InsertOptions) error {
	if opts.DedupToken != "" {
		if err := store.ValidateDedupToken(opts.DedupToken); err != nil {
			return fmt.Errorf("chdb insert into %s: %w", table, err)
		}
	}
	var q strings.Builder
	q.Grow(len(rows) + 65 + 16*len(columns) + 40 + len(opts.DedupToken))
	q.WriteString("INSERT INTO `")
	q.WriteString(b.db)
	q.WriteString("`.`")
	q.WriteString(table)
	q.WriteString("` (")
	for i, c := range columns {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("`" + c + "`")
	}
	q.WriteString(")")
	var settings []string
	if opts.DedupToken != "" {
		// Validated above: printable ASCII without a quote or a
		// backslash, so it stands between quotes as it is.
		settings = append(settings, "insert_deduplication_token = '"+opts.DedupToken+"'")
	}
	if opts.NoInsertMerge {
		settings = append(settings, "optimize_on_insert = 0")
	}
	if len(settings) > 0 {
		q.WriteString(" SETTINGS ")
		q.WriteString(strings.Join(settings, ", "))
	}
	q.WriteString(" FORMAT JSONCompactEachRow\n")
	q.Write(rows)
	q.WriteByte(0) // C's terminator: spares a copy of the batch on the call
	beginWrite()
	defer endWrite()
	_, err := b.run(ctx, q.String(), "CSV")
	return err
}

// insertDirName is the directory, in the session's data path, of the files
// InsertRowBinary hands to the engine.
const insertDirName = "cordon-insert"

// resetInsertDir empties (or creates) the insert directory of a session
// opening on path: the files left there by a process that crashed during
// an insert go, and the directory is private (0700) whatever it was.
func resetInsertDir(path string) error {
	dir := filepath.Join(path, insertDirName)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clean insert directory %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("insert directory: %w", err)
	}
	return nil
}

// ErrUnsafeSQLText is returned by InsertRowBinary for a file path or a
// structure that cannot stand between quotes in SQL as it is.
var ErrUnsafeSQLText = errors.New("text holds a quote, a backslash or a control character")

// checkSQLText refuses text holding a quote, a backslash or a control
// character: InsertRowBinary puts it between single quotes unescaped.
func checkSQLText(what, text string) error {
	for i := 0; i < len(text); i++ {
		if c := text[i]; c < 0x20 || c == 0x7f || c == '\'' || c == '\\' {
			return fmt.Errorf("%s: byte %d: %w", what, i, ErrUnsafeSQLText)
		}
	}
	return nil
}

// InsertRowBinary implements store.BinaryInserter: chDB takes inline data
// only up to a NUL byte, so the rows go to a file of their own, private to
// the process (a 0600 file in the 0700 directory cordon-insert of the
// session's data path, emptied when the session opens), read by one
// INSERT INTO … (columns) SETTINGS insert_deduplication_token = '…'
// SELECT * FROM file('…', 'RowBinary', 'structure') (with
// optimize_on_insert = 0 among the settings for opts.NoInsertMerge;
// without 'structure' when structure is empty, so that the engine reads
// the columns' own types), de-duplicated as Insert is: by the token, or
// without one by the hash of the rows (a repeated insert of the same rows
// is dropped). The file is removed
// when the call returns, whatever happened. Concurrent calls use
// different files.
func (b *Backend) InsertRowBinary(ctx context.Context, table string, columns []string, structure string, rows []byte, opts store.InsertOptions) error {
	if opts.DedupToken != "" {
		if err := store.ValidateDedupToken(opts.DedupToken); err != nil {
			return fmt.Errorf("chdb insert into %s: %w", table, err)
		}
	}
	if err := checkSQLText("structure", structure); err != nil {
		return fmt.Errorf("chdb insert into %s: %w", table, err)
	}
	if err := checkSQLText("insert directory", b.insertDir); err != nil {
		return fmt.Errorf("chdb insert into %s: %w (the chdb data path must not hold one)", table, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("chdb insert into %s: %w", table, err)
	}
	f, err := os.CreateTemp(b.insertDir, table+"-*.rowbinary")
	if err != nil {
		return fmt.Errorf("chdb insert into %s: rows file: %w", table, err)
	}
	path := f.Name()
	defer os.Remove(path)
	if _, err := f.Write(rows); err != nil {
		_ = f.Close()
		return fmt.Errorf("chdb insert into %s: write rows file: %w", table, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chdb insert into %s: write rows file: %w", table, err)
	}
	if err := checkSQLText("rows file", path); err != nil {
		return fmt.Errorf("chdb insert into %s: %w", table, err)
	}
	var q strings.Builder
	q.Grow(128 + 16*len(columns) + len(opts.DedupToken) + len(path) + len(structure))
	q.WriteString("INSERT INTO `")
	q.WriteString(b.db)
	q.WriteString("`.`")
	q.WriteString(table)
	q.WriteString("` (")
	for i, c := range columns {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("`" + c + "`")
	}
	q.WriteString(")")
	// An INSERT … SELECT is de-duplicated only when ClickHouse deems its
	// SELECT stable, and it does not deem file() so (chDB 26.5): without
	// these settings, a repeated insert without a token would be written
	// again, where an INSERT with inline data is dropped by the hash of
	// its rows. The file is ours and read once, so it is stable: with a
	// token, force_enable (an error rather than a token ignored); without
	// one, the hash of the rows, as for inline data.
	if opts.DedupToken != "" {
		// Validated above: printable ASCII without a quote or a
		// backslash, so it stands between quotes as it is.
		q.WriteString(" SETTINGS deduplicate_insert_select = 'force_enable', insert_deduplication_token = '")
		q.WriteString(opts.DedupToken)
		q.WriteByte('\'')
	} else {
		q.WriteString(" SETTINGS deduplicate_insert_select = 'enable_even_for_bad_queries'")
	}
	if opts.NoInsertMerge {
		q.WriteString(", optimize_on_insert = 0")
	}
	q.WriteString(" SELECT * FROM file('")
	q.WriteString(path)
	q.WriteString("', 'RowBinary'")
	if structure != "" {
		q.WriteString(", '")
		q.WriteString(structure)
		q.WriteString("'")
	}
	q.WriteString(")")
	beginWrite()
	defer endWrite()
	if _, err := b.run(ctx, q.String(), "CSV"); err != nil {
		return fmt.Errorf("chdb insert into %s: %w", table, err)
	}
	return nil
}

// Query implements store.Backend. The settings are added to the query's
// SETTINGS clause (sqltext finds where: the query must be the store's own or
// one the store's gate accepted); unqualified names resolve to the backend's
// database.
func (b *Backend) Query(ctx context.Context, query string, settings []store.Setting) ([]byte, error) {
	return b.QueryFormat(ctx, query, "JSONCompact", settings)
}

// AnalystQuery implements store.AnalystBackend: Query, started only when no
// insert is under way or waiting, so that ingestion has the engine first; an
// insert that arrives while it runs waits for it (at most its
// max_execution_time).
func (b *Backend) AnalystQuery(ctx context.Context, query string, settings []store.Setting) ([]byte, error) {
	if err := waitNoWrites(ctx); err != nil {
		return nil, fmt.Errorf("chdb analyst query: waiting for inserts: %w", err)
	}
	return b.Query(ctx, query, settings)
}

// QueryFormat is Query with the output in any ClickHouse format (e.g.
// "Native", "CSV"), for tools and tests. A statement with inline data (an
// INSERT … FORMAT …) must come without settings.
func (b *Backend) QueryFormat(ctx context.Context, query, format string, settings []store.Setting) ([]byte, error) {
	q := query
	if len(settings) > 0 {
		lexed, err := sqltext.Lex(query)
		if err != nil {
			return nil, fmt.Errorf("chdb query: %w", err)
		}
		items := make([]string, 0, len(settings))
		for _, s := range settings {
			items = append(items, s.Name+" = "+literal(s.Value))
		}
		q = lexed.WithSettings(items)
	}

	useMu.Lock()
	defer useMu.Unlock()
	if session.current != b.db {
		if _, err := b.run(ctx, "USE `"+b.db+"`", "CSV"); err != nil {
			return nil, err
		}
		session.current = b.db
	}
	out, err := b.run(ctx, q, format)
	if err != nil {
		// chDB leaks the partial output of a query that fails after it
		// started writing (e.g. max_result_rows exceeded) into the output
		// of the next call. Absorb it now, while reads are still held.
		_, _ = b.run(context.WithoutCancel(ctx), "SELECT 1", "CSV")
		return nil, err
	}
	return out, nil
}

// run executes one statement and returns a copy of its output.
func (b *Backend) run(ctx context.Context, query, format string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, errors.New("chdb backend is closed")
	}
	out, err := b.conn.query(query, format)
	if err != nil {
		return nil, fmt.Errorf("chdb: %w", err)
	}
	return out, nil
}

// Close implements store.Backend. The shared session closes with the last
// backend.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	session.mu.Lock()
	defer session.mu.Unlock()
	session.refs--
	if session.refs == 0 && session.c != nil {
		session.c.close()
		session.c, session.path = nil, ""
	}
	return nil
}

// Hold keeps the process's session on path open until release is called:
// for a test binary whose tests each open and close backends on one path.
// Closed with a test's last backend and opened again by the next one, the
// session loads the earlier tests' tables again, and once in a CI run that
// load failed in the engine ("recursive_mutex lock failed: Invalid
// argument", chDB 26.5). Without the chDB library there is no session to
// keep, and release does nothing.
func Hold(path string) (release func()) {
	b, err := Open(context.Background(), Options{Path: path, Database: "hold"})
	if err != nil {
		return func() {}
	}
	return func() { _ = b.Close() }
}

// literal renders a setting value as SQL.
func literal(v any) string {
	switch t := v.(type) {
	case int:
		return strconv.Itoa(t)
	case uint64:
		return strconv.FormatUint(t, 10)
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(t) + "'"
	}
	return fmt.Sprint(v)
}
