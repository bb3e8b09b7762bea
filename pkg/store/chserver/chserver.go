// Package chserver is the production store.Backend: a ClickHouse server,
// reached through github.com/ClickHouse/clickhouse-go/v2 over ClickHouse's
// HTTP interface (port 8123, or 8443 with TLS).
//
// The HTTP interface is used because it lets the server encode results in
// the JSONCompact format chDB produces too, so both backends hand the store
// byte-for-byte the same kind of output and one decoder (tested on chDB)
// serves both. Inserts stream their rows as the request body: usage rows
// in RowBinary, the other tables' in JSONCompactEachRow.
//
// Analysts' queries (store.Store.Query) go through AnalystQuery. With
// Options.AnalystUser set, they run as that user on a connection of their
// own: a read-only server user whose settings profile carries the analyst
// limits (deploy/compose/clickhouse/analyst.xml is one), so that the server
// itself refuses writes and runaway queries whatever reaches it.
//
// The passwords are sent to the server and nowhere else: they never appear
// in an error or a log line of this package.
package chserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cordonhq/cordon/pkg/store"
)

// Options configure the connection to a ClickHouse server.
type Options struct {
	// Addr is host:port of the HTTP interface, e.g. "clickhouse:8123"
	// ("localhost:8123" when empty).
	Addr string
	// Database is the database of the store's tables
	// (store.DefaultDatabase when empty); created if missing.
	Database string
	// User and Password authenticate ("default" and no password when
	// empty). The password is never logged or put in an error.
	User     string
	Password string
	// AnalystUser and AnalystPassword, when AnalystUser is set,
	// authenticate a second connection used only for analysts' queries
	// (AnalystQuery). It must be another user than User: a read-only one
	// (readonly=1 in its profile) with the analyst limits. Without it,
	// analysts' queries use User's connection, still behind the store's
	// gate and limits.
	AnalystUser     string
	AnalystPassword string
	// TLS enables HTTPS. CAFile, when set, is a PEM bundle of the CAs to
	// trust instead of the system pool. ServerName overrides the name the
	// certificate is checked against.
	TLS        bool
	CAFile     string
	ServerName string
	// DialTimeout bounds connecting (10 s when zero); QueryTimeout bounds
	// each statement when the caller's context has no deadline (5 minutes
	// when zero).
	DialTimeout  time.Duration
	QueryTimeout time.Duration
}

// Backend is a store.Backend on a ClickHouse server.
type Backend struct {
	conn      driver.Conn
	analyst   driver.Conn // nil: analysts use conn
	db        string
	passwords []string // to redact
	timeout   time.Duration
}

var (
	_ store.Backend        = (*Backend)(nil)
	_ store.AnalystBackend = (*Backend)(nil)
)

// validate checks the options that need no server.
func (o Options) validate() error {
	if err := store.ValidateDatabase(o.Database); err != nil {
		return err
	}
	switch {
	case o.AnalystUser == "" && o.AnalystPassword != "":
		return errors.New("an analyst password is set without an analyst user")
	case o.AnalystUser != "" && o.AnalystUser == o.User:
		return fmt.Errorf("analyst user %q is the writer's user: analysts need a separate, read-only user", o.AnalystUser)
	case strings.ContainsAny(o.AnalystUser, " \t\r\n"):
		return fmt.Errorf("analyst user %q holds white space", o.AnalystUser)
	}
	return nil
}

// Open connects to the server, checks it answers, and creates o.Database
// when it does not exist.
func Open(ctx context.Context, o Options) (*Backend, error) {
	if o.Addr == "" {
		o.Addr = "localhost:8123"
	}
	if o.Database == "" {
		o.Database = store.DefaultDatabase
	}
	if o.User == "" {
		o.User = "default"
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = 5 * time.Minute
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, err)
	}
	tlsConf, err := tlsConfig(o)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, err)
	}
	passwords := []string{o.Password, o.AnalystPassword}
	// Bootstrap on the always-present "default" database, so that the
	// store's database can be created before it is used as the default.
	boot, err := connect(o, o.User, o.Password, "default", tlsConf)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, redact(err, passwords...))
	}
	b := &Backend{conn: boot, db: o.Database, passwords: passwords, timeout: o.QueryTimeout}
	exists, err := b.databaseExists(ctx)
	if err == nil && !exists {
		err = b.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+o.Database+"`")
	}
	_ = boot.Close()
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, err)
	}
	if b.conn, err = connect(o, o.User, o.Password, o.Database, tlsConf); err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, redact(err, passwords...))
	}
	if o.AnalystUser != "" {
		if b.analyst, err = connect(o, o.AnalystUser, o.AnalystPassword, o.Database, tlsConf); err != nil {
			_ = b.conn.Close()
			return nil, fmt.Errorf("open clickhouse %s as analyst user %s: %w", o.Addr, o.AnalystUser, redact(err, passwords...))
		}
	}
	return b, nil
}

func connect(o Options, user, password, db string, tlsConf *tls.Config) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{o.Addr},
		Auth:        clickhouse.Auth{Database: db, Username: user, Password: password},
		TLS:         tlsConf,
		DialTimeout: o.DialTimeout,
		ReadTimeout: o.QueryTimeout,
	})
}

// tlsConfig builds the TLS configuration, nil without TLS.
func tlsConfig(o Options) (*tls.Config, error) {
	if !o.TLS {
		if o.CAFile != "" {
			return nil, errors.New("a CA file is set but TLS is off")
		}
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

func (b *Backend) databaseExists(ctx context.Context) (bool, error) {
	out, err := b.Query(ctx, "SELECT count() FROM system.databases WHERE name = '"+b.db+"'", nil)
	if err != nil {
		return false, err
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		return false, err
	}
	return len(res.Rows) == 1 && fmt.Sprint(res.Rows[0][0]) != "0", nil
}

// Database implements store.Backend.
func (b *Backend) Database() string { return b.db }

// withTimeout applies the query timeout when ctx has no deadline.
func (b *Backend) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.timeout)
}

// Exec implements store.Backend.
func (b *Backend) Exec(ctx context.Context, query string) error {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	if err := b.conn.Exec(ctx, query); err != nil {
		return fmt.Errorf("clickhouse: %w", redact(err, b.passwords...))
	}
	return nil
}

// Insert implements store.Backend: the rows stream as the body of
// INSERT INTO db.table (columns) FORMAT JSONCompactEachRow, with
// opts.DedupToken as the request's insert_deduplication_token setting and
// optimize_on_insert = 0 with opts.NoInsertMerge.
func (b *Backend) Insert(ctx context.Context, table string, columns []string, rows []byte, opts store.InsertOptions) error {
	return b.insertFormat(ctx, "JSONCompactEachRow", table, columns, rows, opts)
}

// InsertRowBinary implements store.BinaryInserter: the rows stream as the
// body of INSERT INTO db.table (columns) FORMAT RowBinary, with the
// settings Insert sends. The server reads them in the columns' own types;
// structure is the same bytes by BinaryInserter's contract, so it is not
// sent.
func (b *Backend) InsertRowBinary(ctx context.Context, table string, columns []string, structure string, rows []byte, opts store.InsertOptions) error {
	return b.insertFormat(ctx, "RowBinary", table, columns, rows, opts)
}

// insertFormat streams rows in format as the body of one INSERT.
func (b *Backend) insertFormat(ctx context.Context, format, table string, columns []string, rows []byte, opts store.InsertOptions) error {
	settings := clickhouse.Settings{}
	if opts.DedupToken != "" {
		if err := store.ValidateDedupToken(opts.DedupToken); err != nil {
			return fmt.Errorf("clickhouse insert into %s: %w", table, err)
		}
		settings["insert_deduplication_token"] = opts.DedupToken
	}
	if opts.NoInsertMerge {
		settings["optimize_on_insert"] = 0
	}
	if len(settings) > 0 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	q := "INSERT INTO `" + b.db + "`.`" + table + "` (" + strings.Join(columns, ", ") + ")"
	if err := b.conn.InsertFormat(ctx, format, q, bytes.NewReader(rows)); err != nil {
		return fmt.Errorf("clickhouse insert into %s: %w", table, redact(err, b.passwords...))
	}
	return nil
}

// Query implements store.Backend. Settings travel with the request; the
// server buffers the whole result (wait_end_of_query) so that a failure is
// an error, never a truncated result.
func (b *Backend) Query(ctx context.Context, query string, settings []store.Setting) ([]byte, error) {
	return b.query(ctx, b.conn, query, settings, false)
}

// AnalystQuery implements store.AnalystBackend: Query on the analyst
// user's connection when there is one. That user's profile sets readonly=1
// itself (and would refuse a request changing it), so the readonly setting
// is not sent; every other setting is, within the profile's constraints.
// The time limit is never one derived from ctx's deadline.
func (b *Backend) AnalystQuery(ctx context.Context, query string, settings []store.Setting) ([]byte, error) {
	conn := b.conn
	if b.analyst != nil {
		conn = b.analyst
		kept := make([]store.Setting, 0, len(settings))
		for _, s := range settings {
			if s.Name != "readonly" {
				kept = append(kept, s)
			}
		}
		settings = kept
	}
	return b.query(ctx, conn, query, settings, true)
}

// query runs one statement. clickhouse-go sets max_execution_time to the
// context's deadline plus 5 s, over the caller's own: when the caller sets
// it (or analyst is set, so that no such setting reaches a read-only
// profile), the deadline is hidden from the library.
func (b *Backend) query(ctx context.Context, conn driver.Conn, query string, settings []store.Setting, analyst bool) ([]byte, error) {
	s := clickhouse.Settings{"wait_end_of_query": 1}
	own := analyst
	for _, st := range settings {
		s[st.Name] = st.Value
		own = own || st.Name == "max_execution_time"
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	if own {
		// clickhouse-go replaces max_execution_time with the context's
		// deadline plus 5 s: hide the deadline from it, keep cancellation.
		ctx = withoutDeadline(ctx)
	}
	rc, err := conn.QueryFormat(clickhouse.Context(ctx, clickhouse.WithSettings(s)), "JSONCompact", strings.TrimRight(query, " \t\r\n;"))
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", redact(err, b.passwords...))
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: read result: %w", redact(err, b.passwords...))
	}
	return out, nil
}

// withoutDeadline returns a context cancelled with ctx but without its
// deadline (the query's own time limit is then the server's to enforce; the
// HTTP read timeout still bounds the wait).
func withoutDeadline(ctx context.Context) context.Context {
	if _, ok := ctx.Deadline(); !ok {
		return ctx
	}
	nd, cancel := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, cancel)
	return nd
}

// Close implements store.Backend.
func (b *Backend) Close() error {
	err := b.conn.Close()
	if b.analyst != nil {
		err = errors.Join(err, b.analyst.Close())
	}
	if err != nil {
		return fmt.Errorf("close clickhouse: %w", redact(err, b.passwords...))
	}
	return nil
}

// redact replaces the passwords in an error's text, should a library ever
// echo one. The error chain is kept for errors.Is.
func redact(err error, passwords ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, p := range passwords {
		if p != "" {
			msg = strings.ReplaceAll(msg, p, "[redacted]")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

type redacted struct {
	msg string
	err error
}

// Error returns the message without the password.
func (r *redacted) Error() string { return r.msg }

// Unwrap returns the original error, for errors.Is and errors.As.
func (r *redacted) Unwrap() error { return r.err }
