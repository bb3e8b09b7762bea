// Package chshim serves the part of ClickHouse's HTTP interface that
// clickhouse-go uses, on this process's chDB session, for tests: the
// chserver backend, with the real clickhouse-go HTTP client, runs against
// the real engine with no ClickHouse server installed (none can be on the
// development machine; see DESIGN.md).
//
// What it serves: POST with the query in the body, or in the query
// parameter with the data in the body; database, default_format and
// settings as URL parameters; results in the requested format (Native only
// for the driver's hello query); errors as non-200 responses carrying the
// exception text and the X-ClickHouse-Exception-Code header. Settings
// become a SETTINGS clause of the statement, not request settings; for an
// INSERT with its data in the body, the clause goes before its trailing
// FORMAT (a request whose statement has none is refused rather than run
// without its settings). An INSERT … FORMAT RowBinary, whose rows chDB
// cannot take inline, is read from a file in the columns' own types, as
// a server reads it (insertRowBinary).
//
// Users: with Options.Users set, a request is accepted only from a listed
// user with its password, given the ways a server takes them
// (X-ClickHouse-User and X-ClickHouse-Key headers, which clickhouse-go
// sends over TLS; HTTP basic authentication, which it sends without; the
// user and password URL parameters); any other request is refused as a
// server refuses it: HTTP 403 with exception code 516
// (AUTHENTICATION_FAILED), so a credential mismatch fails the caller. The
// shim is no substitute for a server in every detail (profiles, grants and
// quotas are not applied): CLICKHOUSE_ADDR runs pkg/store's suite on a
// real one.
package chshim

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// CodeAuthenticationFailed is ClickHouse's AUTHENTICATION_FAILED exception
// code, which a server answers with HTTP 403 to a wrong user or password.
const CodeAuthenticationFailed = 516

// User is a user the shim accepts, with its password as a server's users
// configuration gives it: in clear (<password>) or as the hex SHA-256 of
// the password (<password_sha256_hex>). Exactly one should be set; a user
// with neither has an empty password.
type User struct {
	Password          string
	PasswordSHA256Hex string
}

// matches reports whether password is u's, in constant time.
func (u User) matches(password string) bool {
	if u.PasswordSHA256Hex != "" {
		sum := sha256.Sum256([]byte(password))
		return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(u.PasswordSHA256Hex))) == 1
	}
	return subtle.ConstantTimeCompare([]byte(password), []byte(u.Password)) == 1
}

// Options configure a Server.
type Options struct {
	// Path is the chDB data directory: every Server of a process must use
	// the same one (chDB keeps one session per process).
	Path string
	// Users, when not nil, are the only users accepted. Nil accepts any
	// user name without a password check (for tests of what a client
	// sends).
	Users map[string]User
}

// Request is what one request carried, recorded for tests of what a
// client sends. The password is never recorded.
type Request struct {
	// User is the user the request named ("default" when none).
	User string
	// Query is the request body.
	Query string
	// Params are the URL parameters.
	Params url.Values
	// Refused says the request was refused for its credentials.
	Refused bool
}

// Server is the shim; it implements http.Handler. Close it to close its
// chDB backends.
type Server struct {
	o        Options
	mu       sync.Mutex
	backends map[string]*chdbstore.Backend
	requests []Request
}

// New returns a Server on o.Path.
func New(o Options) *Server {
	return &Server{o: o, backends: map[string]*chdbstore.Backend{}}
}

// Requests returns the requests served so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ResetRequests forgets the requests recorded so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Refused returns the requests refused for their credentials.
func (s *Server) Refused() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Refused {
			out = append(out, r)
		}
	}
	return out
}

// Close closes the chDB backends the shim opened.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for db, b := range s.backends {
		if err := b.Close(); err != nil && first == nil {
			first = fmt.Errorf("close chdb database %s: %w", db, err)
		}
	}
	s.backends = map[string]*chdbstore.Backend{}
	return first
}

// nonSettings are URL parameters that are not settings.
var nonSettings = map[string]bool{
	"database": true, "default_format": true, "query": true, "query_id": true, "client_protocol_version": true,
	"wait_end_of_query": true, "compress": true, "decompress": true, "session_id": true, "quota_key": true,
	"user": true, "password": true, "http_write_exception_in_output_format": true,
}

// credentials returns the user and password of r, the ways a server
// takes them, "default" when it names no user.
func credentials(r *http.Request) (user, password string) {
	if u := r.Header.Get("X-ClickHouse-User"); u != "" {
		return u, r.Header.Get("X-ClickHouse-Key")
	}
	if u, p, ok := r.BasicAuth(); ok {
		return u, p
	}
	q := r.URL.Query()
	if u := q.Get("user"); u != "" {
		return u, q.Get("password")
	}
	return "default", ""
}

// authenticate reports whether user may log in with password.
func (s *Server) authenticate(user, password string) bool {
	if s.o.Users == nil {
		return true
	}
	u, ok := s.o.Users[user]
	return ok && u.matches(password)
}

// ServeHTTP runs the request's statement on chDB.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	params := r.URL.Query()
	user, password := credentials(r)
	ok := s.authenticate(user, password)
	s.mu.Lock()
	s.requests = append(s.requests, Request{User: user, Query: string(body), Params: params, Refused: !ok})
	s.mu.Unlock()
	if !ok {
		// What a server answers (exceptionCodeToHTTPStatus maps
		// AUTHENTICATION_FAILED to 403).
		w.Header().Set("X-ClickHouse-Exception-Code", strconv.Itoa(CodeAuthenticationFailed))
		http.Error(w, fmt.Sprintf("Code: %d. DB::Exception: %s: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
			CodeAuthenticationFailed, user), http.StatusForbidden)
		return
	}
	db := params.Get("database")
	if db == "" {
		db = "default"
	}
	format := params.Get("default_format")
	if format == "" {
		format = "TabSeparated"
	}
	var settings []store.Setting
	for k, v := range params {
		if !nonSettings[k] && !strings.HasPrefix(k, "param_") {
			// A server parses a parameter by its setting's type; as a
			// SETTINGS clause, a number must not be a string literal.
			var value any = v[0]
			if n, err := strconv.Atoi(v[0]); err == nil {
				value = n
			}
			settings = append(settings, store.Setting{Name: k, Value: value})
		}
	}
	query := string(body)
	if q := params.Get("query"); q != "" {
		if rowBinaryInsert.MatchString(q) {
			// RowBinary holds NUL bytes, which cannot travel inline in a
			// chDB statement: the rows go through a file (insertRowBinary).
			if code, err := s.insertRowBinary(r.Context(), params.Get("database"), q, settings, body); err != nil {
				w.Header().Set("X-ClickHouse-Exception-Code", strconv.Itoa(code))
				status := http.StatusInternalServerError
				if code != 1 {
					status = http.StatusBadRequest
				}
				http.Error(w, strings.TrimPrefix(err.Error(), "chdb: "), status)
			}
			return
		}
		// A statement with its data in the body (an INSERT … FORMAT …):
		// its settings (insert_deduplication_token above all) go into
		// the statement before FORMAT, where ClickHouse's grammar takes
		// them, or the request is refused: dropping them would make a
		// test of what they do pass without them.
		stmt, err := withInsertSettings(q, settings)
		if err != nil {
			w.Header().Set("X-ClickHouse-Exception-Code", "62") // SYNTAX_ERROR
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		query, settings = stmt+"\n"+string(body), nil
	}
	if strings.HasPrefix(query, "EXPLAIN ") {
		// A server takes request settings apart from the statement; here
		// they would become a SETTINGS clause inside the explained query's
		// syntax tree, which the store's gate refuses.
		settings = nil
	}
	b, err := s.backend(r.Context(), db)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	native := format == "Native"
	if native {
		format = "JSONCompact"
	}
	out, err := b.QueryFormat(r.Context(), query, format, settings)
	if err == nil && native {
		out, err = nativeBlock(out)
	}
	if err != nil {
		w.Header().Set("X-ClickHouse-Exception-Code", "1")
		http.Error(w, strings.TrimPrefix(err.Error(), "chdb: "), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(out)
}

// backend returns a chDB backend whose current database is db. Opening one
// creates the database, as a server's would exist: "default" does, and a
// store's own is created by chserver.Open through the shim.
func (s *Server) backend(ctx context.Context, db string) (*chdbstore.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.backends[db]; b != nil {
		return b, nil
	}
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: s.o.Path, Database: db})
	if err != nil {
		return nil, fmt.Errorf("chshim: open database %s: %w", db, err)
	}
	s.backends[db] = b
	return b, nil
}

// nativeBlock re-encodes a JSONCompact result as one block of the Native
// format as a server writes it for clickhouse-go's protocol revision (block
// info, and a "no custom serialization" byte per column). Only String and
// unsigned integer columns are supported: enough for the driver's hello
// query; other statements' Native output is discarded by the driver.
func nativeBlock(jsonCompact []byte) ([]byte, error) {
	res, err := store.DecodeJSONCompact(jsonCompact)
	if err != nil || len(res.Columns) == 0 {
		return nil, err
	}
	out := []byte{1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0} // block info: not overflows, bucket -1
	out = binary.AppendUvarint(out, uint64(len(res.Columns)))
	out = binary.AppendUvarint(out, uint64(len(res.Rows)))
	str := func(s string) { out = append(binary.AppendUvarint(out, uint64(len(s))), s...) }
	for i, c := range res.Columns {
		str(c.Name)
		str(c.Type)
		out = append(out, 0)
		for _, row := range res.Rows {
			switch c.Type {
			case "String":
				str(row[i].(string))
			case "UInt8":
				out = append(out, byte(row[i].(uint64)))
			case "UInt16":
				out = binary.LittleEndian.AppendUint16(out, uint16(row[i].(uint64)))
			case "UInt32":
				out = binary.LittleEndian.AppendUint32(out, uint32(row[i].(uint64)))
			case "UInt64":
				out = binary.LittleEndian.AppendUint64(out, row[i].(uint64))
			default:
				return nil, fmt.Errorf("chshim: Native output of %s is not supported", c.Type)
			}
		}
	}
	return out, nil
}

// rowBinaryInsert matches the INSERT a server takes RowBinary rows with,
// as chserver writes it: INSERT INTO [`db`.]`table` (columns) FORMAT
// RowBinary.
var rowBinaryInsert = regexp.MustCompile("(?is)^\\s*INSERT\\s+INTO\\s+(?:`([^`]+)`\\.)?`([^`]+)`\\s*\\(([^)]*)\\)\\s*FORMAT\\s+RowBinary\\s*$")

// insertRowBinary runs an INSERT of rows in RowBinary (a statement
// rowBinaryInsert matches) through chdbstore's InsertRowBinary, which
// reads them from a file in the columns' own types, as a server reads
// them from the request. Of the settings, insert_deduplication_token and
// optimize_on_insert = 0 are taken; any other is refused rather than
// dropped. The code returned with an error is the exception code: 62
// (SYNTAX_ERROR) for a statement or setting refused here, 1 for the
// engine's own failure.
func (s *Server) insertRowBinary(ctx context.Context, db, stmt string, settings []store.Setting, rows []byte) (int, error) {
	m := rowBinaryInsert.FindStringSubmatch(stmt)
	if m[1] != "" {
		db = m[1]
	}
	if db == "" {
		db = "default"
	}
	var cols []string
	for _, c := range strings.Split(m[3], ",") {
		c = strings.Trim(strings.TrimSpace(c), "`")
		if !settingName.MatchString(c) {
			return 62, fmt.Errorf("chshim: column %.80q of a RowBinary insert is not an identifier", c)
		}
		cols = append(cols, c)
	}
	var opts store.InsertOptions
	for _, st := range settings {
		switch v := fmt.Sprint(st.Value); {
		case st.Name == "insert_deduplication_token":
			opts.DedupToken = v
		case st.Name == "optimize_on_insert" && v == "0":
			opts.NoInsertMerge = true
		case st.Name == "max_execution_time":
			// clickhouse-go's from the context's deadline: the caller's
			// context bounds the insert here.
		default:
			return 62, fmt.Errorf("chshim: setting %s = %.80q is not supported with RowBinary rows", st.Name, v)
		}
	}
	b, err := s.backend(ctx, db)
	if err != nil {
		return 1, err
	}
	if err := b.InsertRowBinary(ctx, m[2], cols, "", rows, opts); err != nil {
		return 1, err
	}
	return 0, nil
}

// trailingFormat matches the FORMAT clause that ends an INSERT whose data
// follows it.
var trailingFormat = regexp.MustCompile(`(?is)\s+FORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*$`)

// withInsertSettings returns stmt, an INSERT ending in FORMAT <name>, with
// settings as a SETTINGS clause before FORMAT. Settings are sorted by name,
// so the statement is the same for the same request.
func withInsertSettings(stmt string, settings []store.Setting) (string, error) {
	if len(settings) == 0 {
		return stmt, nil
	}
	loc := trailingFormat.FindStringSubmatchIndex(stmt)
	if loc == nil {
		return "", fmt.Errorf("chshim: the statement of a request with data must end in FORMAT <name> to take its settings: %.80q", stmt)
	}
	sorted := append([]store.Setting(nil), settings...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	items := make([]string, 0, len(sorted))
	for _, st := range sorted {
		if !settingName.MatchString(st.Name) {
			return "", fmt.Errorf("chshim: setting name %.80q is not an identifier", st.Name)
		}
		items = append(items, st.Name+" = "+settingLiteral(st.Value))
	}
	return stmt[:loc[0]] + " SETTINGS " + strings.Join(items, ", ") + " FORMAT " + stmt[loc[2]:loc[3]], nil
}

// settingName is what a setting's name may be.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// settingLiteral renders a setting value as SQL: a number as is, anything
// else as a quoted string.
func settingLiteral(v any) string {
	if n, ok := v.(int); ok {
		return strconv.Itoa(n)
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(fmt.Sprint(v)) + "'"
}
