package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultDatabase is the database name backends use when none is given.
const DefaultDatabase = "cordon"

// Defaults of the analyst query limits (Options).
const (
	// DefaultMaxResultRows bounds the rows an analyst query may return.
	DefaultMaxResultRows = 100_000
	// DefaultMaxResultBytes bounds the bytes of an analyst query's result.
	DefaultMaxResultBytes = 64 << 20
	// DefaultQueryTimeout bounds an analyst query's run time. chDB runs one
	// statement at a time, so an analyst query holds the auditor's writes
	// for as long as it runs: the default keeps that well under the
	// auditor's 30 s acknowledgement wait.
	DefaultQueryTimeout = 10 * time.Second
	// DefaultMaxQueryMemory bounds the memory of an analyst query.
	DefaultMaxQueryMemory = 1 << 30
	// DefaultMaxConcurrentQueries is how many analyst queries run at once;
	// more wait for a turn (bounded by their context).
	DefaultMaxConcurrentQueries = 1
	// MaxQueryTimeout is the longest QueryTimeout accepted.
	MaxQueryTimeout = time.Hour
)

// Sentinel errors callers may branch on.
var (
	// ErrNotReadOnly: Query refused the query: it is not one SELECT or
	// WITH statement over Cordon's tables calling allowed functions (the
	// error says what was refused).
	ErrNotReadOnly = errors.New("only read-only queries are allowed")
	// ErrQueryLimit: the engine stopped an analyst query at one of its
	// limits (time, memory, result size).
	ErrQueryLimit = errors.New("analyst query limit exceeded")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store is closed")
	// ErrUnsupportedEvent: an insert was given an event type the method
	// does not store.
	ErrUnsupportedEvent = errors.New("unsupported event for this table")
	// ErrInvalidDatabase: a database name is not a plain identifier.
	ErrInvalidDatabase = errors.New("invalid database name")
	// ErrSchemaTooNew: the database was migrated by a newer build.
	ErrSchemaTooNew = errors.New("database schema is newer than this build")
	// ErrMigrationChanged: an applied migration file was edited afterwards.
	ErrMigrationChanged = errors.New("applied migration changed")
	// ErrInvalidDedupToken: a deduplication token is empty, too long or
	// holds a byte outside its alphabet (see ValidateDedupToken).
	ErrInvalidDedupToken = errors.New("invalid deduplication token")
	// ErrNotFound: TokenReport found neither ledger entries nor usage.
	ErrNotFound = errors.New("not found")
)

// Options configure a Store. The zero value is usable: keep everything
// forever, analyst queries bounded by the Default* limits, no logging.
type Options struct {
	// RetentionDays is how long usage events and anomalies are kept, in
	// days from their time; 0 keeps them forever.
	RetentionDays int
	// RollupRetentionDays is how long the daily rollups are kept; 0 keeps
	// them forever.
	RollupRetentionDays int
	// LedgerRetentionDays is how long token ledger rows are kept; 0 (the
	// sensible choice) keeps them forever.
	LedgerRetentionDays int
	// MaxResultRows bounds the rows Query may return (the query fails
	// beyond it); 0 means DefaultMaxResultRows, -1 no bound.
	MaxResultRows int
	// MaxResultBytes bounds the bytes of Query's result (uncompressed, as
	// the engine counts them); 0 means DefaultMaxResultBytes, -1 no bound.
	MaxResultBytes int64
	// QueryTimeout is the engine's max_execution_time for Query: the
	// engine cancels the query when it runs longer. 0 means
	// DefaultQueryTimeout; otherwise 1 s to MaxQueryTimeout, rounded up to
	// whole seconds. There is no unbounded setting.
	QueryTimeout time.Duration
	// MaxQueryMemory is the engine's max_memory_usage for Query, in bytes;
	// 0 means DefaultMaxQueryMemory; at least 16 MiB.
	MaxQueryMemory int64
	// QueryThreads is the engine's max_threads for Query; 0 means half the
	// CPUs (at least one), so that an analyst leaves the engine room for
	// ingestion.
	QueryThreads int
	// MaxConcurrentQueries is how many Query calls run on the engine at
	// once; others wait for a turn or for their context. 0 means
	// DefaultMaxConcurrentQueries.
	MaxConcurrentQueries int
	// Logger receives lowercase, structured messages (migrations applied,
	// retention changed). The zero value discards them.
	Logger zerolog.Logger
	// TokenInserts says that every usage insert into the database carries
	// a deduplication token (InsertUsageOnce), so that each event is stored
	// once: the view usage_events then reads usage_events_raw without
	// FINAL, several times faster (docs/schema.md). Off, the default, it
	// reads FINAL, which hides the copies that redeliveries written without
	// a token leave until their parts merge. Open sets the view to match,
	// so every process opening a database must use the same value.
	TokenInserts bool
}

// Store is Cordon's analytical store: usage events, anomalies, the token
// ledger and their rollups, on a Backend. It is safe for concurrent use.
type Store struct {
	b    Backend
	db   string
	opts Options
	log  zerolog.Logger
	// insertMerge keeps the engine's merge of the inserted block on usage
	// inserts (InsertOptions.NoInsertMerge false): set only by benchmarks
	// that measure what skipping it saves.
	insertMerge bool

	// Analyst queries (query.go).
	querySettings []Setting     // the limits, readonly last
	gateSettings  []Setting     // what the gate's own engine calls run with
	analysts      chan struct{} // a slot per concurrent analyst query
	inflight      sync.WaitGroup
	closeMu       sync.RWMutex
	closed        bool
	closing       context.Context // done when Close starts
	stopQueries   context.CancelFunc
	tablesMu      sync.Mutex
	tables        map[string]bool // Cordon's tables and views, by name
}

// Open validates the options, migrates the schema of b's database to the
// latest version and applies the retention options. On success the store
// owns b and Close closes it; on error the caller still does.
func Open(ctx context.Context, b Backend, o Options) (*Store, error) {
	if b == nil {
		return nil, errors.New("open store: nil backend")
	}
	if o.RetentionDays < 0 || o.RollupRetentionDays < 0 || o.LedgerRetentionDays < 0 {
		return nil, fmt.Errorf("open store: retention days must be 0 (forever) or positive, got %d/%d/%d",
			o.RetentionDays, o.RollupRetentionDays, o.LedgerRetentionDays)
	}
	o, err := o.withQueryDefaults()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db := b.Database()
	if err := ValidateDatabase(db); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{b: b, db: db, opts: o, log: o.Logger.With().Str("component", "store").Logger(),
		analysts: make(chan struct{}, o.MaxConcurrentQueries)}
	s.closing, s.stopQueries = context.WithCancel(context.Background())
	s.querySettings = o.querySettings()
	s.gateSettings = o.gateSettings()
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("open store %s: migrate: %w", db, err)
	}
	if err := s.applyRetention(ctx); err != nil {
		return nil, fmt.Errorf("open store %s: %w", db, err)
	}
	if err := s.applyUsageView(ctx); err != nil {
		return nil, fmt.Errorf("open store %s: %w", db, err)
	}
	return s, nil
}

// applyUsageView makes the view usage_events read FINAL, or not when
// Options.TokenInserts is set. Like retention, it is configuration: the
// view is replaced only when it differs.
func (s *Store) applyUsageView(ctx context.Context) error {
	res, err := s.query(ctx, "SELECT create_table_query FROM system.tables WHERE database = "+quoteString(s.db)+" AND name = 'usage_events'")
	if err != nil {
		return fmt.Errorf("read the usage_events view: %w", err)
	}
	if len(res.Rows) != 1 {
		return fmt.Errorf("read the usage_events view: %d definitions", len(res.Rows))
	}
	// The view's text ends in "FROM <db>.usage_events_raw [FINAL]", and
	// maybe a SETTINGS clause (the test shim puts request settings there).
	def := asString(res.Rows[0][0])
	final := strings.Contains(def[strings.LastIndex(def, " FROM ")+1:], " FINAL")
	if final == !s.opts.TokenInserts {
		return nil
	}
	stmt := "CREATE OR REPLACE VIEW " + s.table("usage_events") + " AS SELECT * FROM " + s.table("usage_events_raw")
	if !s.opts.TokenInserts {
		stmt += " FINAL"
	}
	if err := s.b.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("replace the usage_events view: %w", err)
	}
	s.log.Info().Str("database", s.db).Bool("final", !s.opts.TokenInserts).Msg("changed the usage_events view")
	return nil
}

// Database returns the database the store's tables live in.
func (s *Store) Database() string { return s.db }

// Close closes the backend. Analyst queries waiting for a turn fail with
// ErrClosed; one whose statement is on the engine ends its call at once, but
// the statement may still run (chDB cannot interrupt one): Close waits for
// it, at most its QueryTimeout, so the engine is never closed under it.
func (s *Store) Close() error {
	s.closeMu.Lock()
	already := s.closed
	s.closed = true
	s.closeMu.Unlock()
	if already {
		return nil
	}
	s.stopQueries()
	s.inflight.Wait()
	if err := s.b.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// ValidateDatabase checks a database name: 1–64 characters of a–z, A–Z,
// 0–9 and '_', not starting with a digit.
func ValidateDatabase(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: %q: want 1 to 64 characters", ErrInvalidDatabase, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return fmt.Errorf("%w: %q: character %q (use a-z, A-Z, 0-9 and '_', not starting with a digit)", ErrInvalidDatabase, name, c)
	}
	return nil
}

// table returns the qualified name of a table of the store.
func (s *Store) table(name string) string { return quoteIdent(s.db) + "." + name }

// quoteIdent quotes an identifier that ValidateDatabase accepted.
func quoteIdent(s string) string { return "`" + s + "`" }

// quoteString returns s as a ClickHouse string literal.
func quoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// timeLayout is how times are written to DateTime64(6, 'UTC') columns.
const timeLayout = "2006-01-02 15:04:05.000000"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }
