package chshim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/chshim"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chserver"
)

// chdbPath is the data directory of this test process's chDB session.
var chdbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cordon-chshim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chdbPath = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// TestUsers: with users configured, the real clickhouse-go client (through
// the chserver backend) gets in only as a listed user with its password,
// in clear or as a SHA-256, over HTTP (basic authentication) and HTTPS
// (the X-ClickHouse-User/-Key headers); anything else is refused as a
// server refuses it (403, exception code 516), and the refusal is
// recorded without the password.
func TestUsers(t *testing.T) {
	const writerPass, analystPass = "writer-secret-1", "analyst-secret-2"
	sum := sha256.Sum256([]byte(analystPass))
	shim := chshim.New(chshim.Options{Path: chdbPath, Users: map[string]chshim.User{
		"cordon":         {Password: writerPass},
		"cordon_analyst": {PasswordSHA256Hex: hex.EncodeToString(sum[:])},
	}})
	t.Cleanup(func() { _ = shim.Close() })
	plain := httptest.NewServer(shim)
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(shim)
	t.Cleanup(secure.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	servers := []struct {
		name string
		o    chserver.Options
	}{
		{"http", chserver.Options{Addr: strings.TrimPrefix(plain.URL, "http://")}},
		{"https", chserver.Options{Addr: strings.TrimPrefix(secure.URL, "https://"), TLS: true, CAFile: ca}},
	}
	cases := []struct {
		name, user, password string
		analyst, analystPass string
		ok                   bool
	}{
		{name: "writer", user: "cordon", password: writerPass, ok: true},
		{name: "writer and analyst", user: "cordon", password: writerPass, analyst: "cordon_analyst", analystPass: analystPass, ok: true},
		{name: "wrong password", user: "cordon", password: "guess", ok: false},
		{name: "no password", user: "cordon", ok: false},
		{name: "unknown user", user: "root", password: writerPass, ok: false},
		{name: "default user", ok: false},
		{name: "analyst's hash as its password", user: "cordon_analyst", password: hex.EncodeToString(sum[:]), ok: false},
		{name: "analyst with the writer's password", user: "cordon", password: writerPass, analyst: "cordon_analyst", analystPass: writerPass, ok: false},
	}
	for _, srv := range servers {
		for i, tc := range cases {
			t.Run(srv.name+"/"+tc.name, func(t *testing.T) {
				o := srv.o
				o.Database = fmt.Sprintf("shim_users_%s_%d", srv.name, i)
				o.User, o.Password, o.AnalystUser, o.AnalystPassword = tc.user, tc.password, tc.analyst, tc.analystPass
				o.DialTimeout, o.QueryTimeout = time.Minute, time.Minute
				shim.ResetRequests()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				b, err := chserver.Open(ctx, o)
				if err == nil && tc.analyst != "" {
					_, err = b.AnalystQuery(ctx, "SELECT 1", nil)
				}
				if b != nil {
					defer b.Close()
				}
				if tc.ok {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if r := shim.Refused(); len(r) > 0 {
						t.Fatalf("%d requests refused", len(r))
					}
					return
				}
				if err == nil {
					t.Fatal("accepted")
				}
				if !strings.Contains(err.Error(), "516") || !strings.Contains(err.Error(), "AUTHENTICATION_FAILED") {
					t.Errorf("error %v does not say authentication failed (516)", err)
				}
				for _, secret := range []string{writerPass, analystPass} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error quotes a password: %v", err)
					}
				}
				if len(shim.Refused()) == 0 {
					t.Error("no refusal recorded")
				}
			})
		}
	}
	t.Run("status and header", func(t *testing.T) {
		req, _ := http.NewRequest("POST", plain.URL+"/?database=default", strings.NewReader("SELECT 1"))
		req.SetBasicAuth("cordon", "guess")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-ClickHouse-Exception-Code") != "516" {
			t.Errorf("status %d, exception code %q; want 403 and 516 as a server answers", resp.StatusCode, resp.Header.Get("X-ClickHouse-Exception-Code"))
		}
	})
}

// TestNoUsers: without users, any request is served and recorded with the
// user it named (what pkg/store's tests of the client rely on).
func TestNoUsers(t *testing.T) {
	shim := chshim.New(chshim.Options{Path: chdbPath})
	t.Cleanup(func() { _ = shim.Close() })
	srv := httptest.NewServer(shim)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := chserver.Open(ctx, chserver.Options{Addr: strings.TrimPrefix(srv.URL, "http://"), Database: "shim_no_users", User: "anyone", Password: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.Query(ctx, "SELECT 40 + 2 AS n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "42") {
		t.Errorf("result %s", out)
	}
	reqs := shim.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request recorded")
	}
	for _, r := range reqs {
		if r.User != "anyone" || r.Refused {
			t.Errorf("request %q recorded as user %q refused=%v", r.Query, r.User, r.Refused)
		}
	}
	if err := errors.Join(shim.Close()); err != nil {
		t.Fatal(err)
	}
}

// shimTable serves a shim over HTTP and opens the chserver backend on it,
// in database db, with table t of columns (ORDER BY the first column, a
// de-duplication window so that tokens and repeated rows count).
func shimTable(t *testing.T, db, columns string) (context.Context, *chshim.Server, *httptest.Server, *chserver.Backend) {
	t.Helper()
	shim := chshim.New(chshim.Options{Path: chdbPath})
	t.Cleanup(func() { _ = shim.Close() })
	srv := httptest.NewServer(shim)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	b, err := chserver.Open(ctx, chserver.Options{Addr: strings.TrimPrefix(srv.URL, "http://"), Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	first, _, _ := strings.Cut(columns, " ")
	if err := b.Exec(ctx, "CREATE TABLE t ("+columns+") ENGINE = MergeTree ORDER BY "+first+" SETTINGS non_replicated_deduplication_window = 100"); err != nil {
		t.Fatal(err)
	}
	return ctx, shim, srv, b
}

// TestInsertSettings: the settings of an insert whose data is in the body
// reach the statement: an insert_deduplication_token sent by clickhouse-go
// (through the chserver backend) de-duplicates on a table with a window, so
// a test of the token over the shim cannot pass without it; a statement
// with data and settings but no trailing FORMAT is refused, not run
// without them.
func TestInsertSettings(t *testing.T) {
	ctx, shim, srv, b := shimTable(t, "shim_insert_settings", "x UInt32")
	inserts := []struct {
		token, rows string
	}{
		{"tok-1", "[1]\n[2]\n"},
		{"tok-1", "[1]\n[2]\n"}, // a retry: dropped
		{"tok-1", "[3]\n"},      // other rows, same token: dropped
		{"tok-2", "[1]\n[2]\n"}, // same rows, other token: written
		{"", "[4]\n"},
	}
	for _, in := range inserts {
		if err := b.Insert(ctx, "t", []string{"x"}, []byte(in.rows), store.InsertOptions{DedupToken: in.token}); err != nil {
			t.Fatalf("insert %q with token %q: %v", in.rows, in.token, err)
		}
	}
	out, err := b.Query(ctx, "SELECT groupArray(x) FROM (SELECT x FROM t ORDER BY x)", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "[1,1,2,2,4]") {
		t.Fatalf("table holds %s, want [1,1,2,2,4]", out)
	}
	var withToken int
	for _, r := range shim.Requests() {
		if r.Params.Get("insert_deduplication_token") == "tok-1" {
			withToken++
		}
	}
	if withToken != 3 {
		t.Errorf("%d requests carried the token tok-1, want 3", withToken)
	}

	cases := []struct {
		name, query string
		status      int
	}{
		{"no FORMAT", "INSERT INTO t (x) VALUES", http.StatusBadRequest},
		{"FORMAT not last", "INSERT INTO t (x) FORMAT JSONCompactEachRow extra", http.StatusBadRequest},
		{"FORMAT", "INSERT INTO t (x) FORMAT JSONCompactEachRow", http.StatusOK},
		{"lower case", "insert into t (x) format JSONCompactEachRow", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := srv.URL + "/?database=shim_insert_settings&insert_deduplication_token=raw-" + strings.ReplaceAll(tc.name, " ", "-") + "&query=" + url.QueryEscape(tc.query)
			resp, err := http.Post(u, "application/octet-stream", strings.NewReader("[9]\n"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status != http.StatusOK && !strings.Contains(string(body), "FORMAT") {
				t.Errorf("refusal %q does not say what is missing", body)
			}
		})
	}
	out, err = b.Query(ctx, "SELECT count() FROM t WHERE x = 9", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil || len(res.Rows) != 1 || fmt.Sprint(res.Rows[0][0]) != "2" {
		t.Errorf("rows of the raw requests: %s (%v); want 2, from the 2 accepted requests only", out, err)
	}
}

// TestInsertRowBinary: chserver's RowBinary inserts reach the table in its
// own column types (an enum as its Int8, a string), with a NUL byte in a
// value, and are de-duplicated by their token and by the hash of their
// rows as a server does; a RowBinary request with a setting the shim
// cannot apply, or a column that is not a name, is refused with a reason.
func TestInsertRowBinary(t *testing.T) {
	ctx, _, srv, b := shimTable(t, "shim_rowbinary", "x UInt32, d Enum8('allow' = 1, 'deny' = 2), s LowCardinality(String)")
	row := func(x uint32, d int8, s string) []byte {
		out := binary.LittleEndian.AppendUint32(nil, x)
		out = append(out, byte(d))
		out = binary.AppendUvarint(out, uint64(len(s)))
		return append(out, s...)
	}
	cols := []string{"x", "d", "s"}
	inserts := []struct {
		token string
		rows  []byte
	}{
		{"tok-1", append(row(1, 1, "a\x00b"), row(2, 2, "")...)},
		{"tok-1", row(3, 1, "c")}, // same token: dropped
		{"", row(4, 2, "d")},
		{"", row(4, 2, "d")}, // the same rows, no token: dropped
	}
	for _, in := range inserts {
		if err := b.InsertRowBinary(ctx, "t", cols, "x UInt32, d Int8, s String", in.rows, store.InsertOptions{DedupToken: in.token}); err != nil {
			t.Fatalf("insert with token %q: %v", in.token, err)
		}
	}
	out, err := b.Query(ctx, "SELECT groupArray((x, d, hex(s))) FROM (SELECT * FROM t ORDER BY x)", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[[1,"allow","610062"],[2,"deny",""],[4,"deny","64"]]`; !strings.Contains(string(out), want) {
		t.Fatalf("table holds %s, want %s", out, want)
	}
	if err := b.InsertRowBinary(ctx, "t", cols, "", row(5, 1, "e")[:5], store.InsertOptions{}); err == nil {
		t.Error("truncated rows: no error")
	}

	cases := []struct{ name, params, query, want string }{
		{"unknown setting", "&max_insert_threads=1", "INSERT INTO `shim_rowbinary`.`t` (x, d, s) FORMAT RowBinary", "max_insert_threads"},
		{"column not a name", "", "INSERT INTO `shim_rowbinary`.`t` (x, d, `s; DROP TABLE t`) FORMAT RowBinary", "not an identifier"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			u := srv.URL + "/?database=shim_rowbinary" + tc.params + "&query=" + url.QueryEscape(tc.query)
			resp, err := http.Post(u, "application/octet-stream", bytes.NewReader(row(9, 1, "z")))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.want) {
				t.Errorf("status %d, %q; want 400 saying %q", resp.StatusCode, body, tc.want)
			}
		})
	}
	out, err = b.Query(ctx, "SELECT count() FROM t", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := store.DecodeJSONCompact(out); err != nil || len(res.Rows) != 1 || fmt.Sprint(res.Rows[0][0]) != "3" {
		t.Errorf("rows after the refusals: %s (%v), want 3", out, err)
	}
}
