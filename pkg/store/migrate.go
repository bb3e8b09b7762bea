package store

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/store/internal/sqltext"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one versioned schema change, embedded from
// pkg/store/migrations/NNNN_name.sql.
type Migration struct {
	// Version is the NNNN prefix of the file name.
	Version int
	// Name is the file name.
	Name string
	// Checksum is the SHA-256 of the file, recorded when it is applied.
	Checksum string
	// Statements are the SQL statements of the file, with {db} replaced.
	Statements []string
}

// Migrations returns the embedded migrations for database db, in version
// order.
func Migrations(db string) ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version number and '_'", name)
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		m := Migration{Version: v, Name: name, Checksum: hex.EncodeToString(sum[:])}
		for _, stmt := range strings.Split(string(b), ";\n") {
			if _, err := sqltext.Lex(stmt); errors.Is(err, sqltext.ErrEmpty) {
				continue // only comments
			} else if err != nil {
				return nil, fmt.Errorf("migration %s: %w", name, err)
			}
			m.Statements = append(m.Statements, strings.ReplaceAll(strings.TrimSpace(stmt), "{db}", quoteIdent(db)))
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].Name, ms[i].Name)
		}
	}
	return ms, nil
}

// AppliedMigration is a row of the schema_migrations table.
type AppliedMigration struct {
	Version   int
	Name      string
	Checksum  string
	AppliedAt time.Time
}

// migrate creates schema_migrations and applies the migrations that are not
// recorded there yet, in order. Every statement is idempotent (IF NOT
// EXISTS), so a migration interrupted half way is simply applied again, and
// two processes migrating at once do no harm: the table is a
// ReplacingMergeTree on version.
func (s *Store) migrate(ctx context.Context) error {
	create := "CREATE TABLE IF NOT EXISTS " + s.table("schema_migrations") + ` (
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`
	if err := s.b.Exec(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	ms, err := Migrations(s.db)
	if err != nil {
		return err
	}
	applied, err := s.AppliedMigrations(ctx)
	if err != nil {
		return err
	}
	done := make(map[int]AppliedMigration, len(applied))
	for _, a := range applied {
		done[a.Version] = a
	}
	known := make(map[int]bool, len(ms))
	for _, m := range ms {
		known[m.Version] = true
	}
	for _, a := range applied {
		if !known[a.Version] {
			return fmt.Errorf("%w: database %s has migration %d (%s) that this build does not know", ErrSchemaTooNew, s.db, a.Version, a.Name)
		}
	}
	for _, m := range ms {
		if a, ok := done[m.Version]; ok {
			if a.Checksum != m.Checksum {
				return fmt.Errorf("%w: %s was applied with checksum %s, the embedded file has %s", ErrMigrationChanged, m.Name, a.Checksum, m.Checksum)
			}
			continue
		}
		for i, stmt := range m.Statements {
			if err := s.b.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("apply migration %s statement %d: %w", m.Name, i+1, err)
			}
		}
		row := fmt.Sprintf("[%d,%s,%s,%s]\n", m.Version, jsonString(m.Name), jsonString(m.Checksum), jsonString(formatTime(time.Now())))
		if err := s.b.Insert(ctx, "schema_migrations", []string{"version", "name", "checksum", "applied_at"}, []byte(row), InsertOptions{}); err != nil {
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		s.log.Info().Str("database", s.db).Int("version", m.Version).Str("migration", m.Name).Msg("applied schema migration")
	}
	return nil
}

// AppliedMigrations lists the migrations recorded in schema_migrations, in
// version order.
func (s *Store) AppliedMigrations(ctx context.Context) ([]AppliedMigration, error) {
	res, err := s.query(ctx, "SELECT version, name, checksum, applied_at FROM "+s.table("schema_migrations")+" FINAL ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	out := make([]AppliedMigration, 0, len(res.Rows))
	for _, r := range res.Rows {
		out = append(out, AppliedMigration{Version: int(asInt(r[0])), Name: asString(r[1]), Checksum: asString(r[2]), AppliedAt: asTime(r[3])})
	}
	return out, nil
}

// ttlTable is a table whose rows expire after a number of days.
type ttlTable struct {
	name string
	expr string // the date expression the TTL counts from
	days func(Options) int
}

var ttlTables = []ttlTable{
	{"usage_events_raw", "toDate(time)", func(o Options) int { return o.RetentionDays }},
	{"anomalies_raw", "toDate(time)", func(o Options) int { return o.RetentionDays }},
	{"token_usage_daily_state", "day", func(o Options) int { return o.RollupRetentionDays }},
	{"holder_usage_daily_state", "day", func(o Options) int { return o.RollupRetentionDays }},
	{"token_usage_daily_counts", "day", func(o Options) int { return o.RollupRetentionDays }},
	{"token_ledger_raw", "toDate(time)", func(o Options) int { return o.LedgerRetentionDays }},
}

// applyRetention makes each table's TTL match the options. Retention is not
// part of the migrations because it is configuration: it is compared with
// the table definition at every open and altered only when it differs.
func (s *Store) applyRetention(ctx context.Context) error {
	res, err := s.query(ctx, "SELECT name, engine_full FROM system.tables WHERE database = "+quoteString(s.db))
	if err != nil {
		return fmt.Errorf("read table definitions: %w", err)
	}
	engines := make(map[string]string, len(res.Rows))
	for _, r := range res.Rows {
		engines[asString(r[0])] = asString(r[1])
	}
	for _, t := range ttlTables {
		engine, ok := engines[t.name]
		if !ok {
			return fmt.Errorf("apply retention: table %s.%s is missing", s.db, t.name)
		}
		days := t.days(s.opts)
		hasTTL := strings.Contains(engine, " TTL ")
		var stmt string
		switch {
		case days == 0 && hasTTL:
			stmt = "ALTER TABLE " + s.table(t.name) + " REMOVE TTL"
		case days > 0 && !strings.Contains(engine, " TTL "+t.expr+" + toIntervalDay("+strconv.Itoa(days)+")"):
			stmt = "ALTER TABLE " + s.table(t.name) + " MODIFY TTL " + t.expr + " + INTERVAL " + strconv.Itoa(days) + " DAY"
		default:
			continue
		}
		if err := s.b.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("apply retention to %s: %w", t.name, err)
		}
		s.log.Info().Str("database", s.db).Str("table", t.name).Int("retention_days", days).Msg("changed table retention")
	}
	return nil
}
