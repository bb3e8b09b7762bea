package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// DefaultDatabase is the database name backends use when none is given.
const DefaultDatabase = "cordon"

// DefaultMaxResultRows bounds the rows an analyst query may return.
const DefaultMaxResultRows = 100_000

// Sentinel errors callers may branch on.
var (
	// ErrNotReadOnly: Query was given something other than one SELECT,
	// WITH, SHOW, DESCRIBE or EXPLAIN statement.
	ErrNotReadOnly = errors.New("only read-only queries are allowed")
	// ErrUnsupportedEvent: an insert was given an event type the method
	// does not store.
	ErrUnsupportedEvent = errors.New("unsupported event for this table")
	// ErrInvalidDatabase: a database name is not a plain identifier.
	ErrInvalidDatabase = errors.New("invalid database name")
	// ErrSchemaTooNew: the database was migrated by a newer build.
	ErrSchemaTooNew = errors.New("database schema is newer than this build")
	// ErrMigrationChanged: an applied migration file was edited afterwards.
	ErrMigrationChanged = errors.New("applied migration changed")
	// ErrNotFound: TokenReport found neither ledger entries nor usage.
	ErrNotFound = errors.New("not found")
)

// Options configure a Store. The zero value is usable: keep everything
// forever, at most DefaultMaxResultRows rows per analyst query, no logging.
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
	// Logger receives lowercase, structured messages (migrations applied,
	// retention changed). The zero value discards them.
	Logger zerolog.Logger
}

// Store is Cordon's analytical store: usage events, anomalies, the token
// ledger and their rollups, on a Backend. It is safe for concurrent use.
type Store struct {
	b    Backend
	db   string
	opts Options
	log  zerolog.Logger
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
	if o.MaxResultRows == 0 {
		o.MaxResultRows = DefaultMaxResultRows
	}
	db := b.Database()
	if err := ValidateDatabase(db); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{b: b, db: db, opts: o, log: o.Logger.With().Str("component", "store").Logger()}
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("open store %s: migrate: %w", db, err)
	}
	if err := s.applyRetention(ctx); err != nil {
		return nil, fmt.Errorf("open store %s: %w", db, err)
	}
	return s, nil
}

// Database returns the database the store's tables live in.
func (s *Store) Database() string { return s.db }

// Close closes the backend.
func (s *Store) Close() error {
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
