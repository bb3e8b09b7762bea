package store_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/pkg/store/chserver"
)

// httpShim serves the part of ClickHouse's HTTP interface that
// clickhouse-go uses (POST, query in the body or in the query parameter
// with the data in the body, database, default_format and settings as URL
// parameters, errors as non-200 with the exception text) by running each
// request on this process's chDB session.
//
// No ClickHouse server can be installed on the development machine, so this
// lets the chserver backend, with the real clickhouse-go HTTP client, run
// the whole store suite against the real engine. It is no substitute for a
// server in every detail (settings are applied as a SETTINGS clause, not as
// request settings): CLICKHOUSE_ADDR runs the suite on a real one.
type httpShim struct {
	mu       sync.Mutex
	backends map[string]*chdbstore.Backend
	// requests records each request's user and parameters, for tests of
	// what the chserver backend sends.
	requests []shimRequest
}

// shimRequest is what one request carried.
type shimRequest struct {
	user   string
	query  string
	params url.Values
}

// shimParams are URL parameters that are not settings.
var shimParams = map[string]bool{
	"database": true, "default_format": true, "query": true, "query_id": true, "client_protocol_version": true,
	"wait_end_of_query": true, "compress": true, "decompress": true, "session_id": true, "quota_key": true,
	"user": true, "password": true, "http_write_exception_in_output_format": true,
}

func (s *httpShim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	params := r.URL.Query()
	s.mu.Lock()
	user, _, ok := r.BasicAuth()
	if !ok {
		user = r.Header.Get("X-ClickHouse-User")
	}
	s.requests = append(s.requests, shimRequest{user: user, query: string(body), params: params})
	s.mu.Unlock()
	db := params.Get("database")
	if db == "" {
		db = "default"
	}
	format := params.Get("default_format")
	if format == "" {
		format = "TabSeparated"
	}
	query, withData := string(body), false
	if q := params.Get("query"); q != "" {
		query, withData = q+"\n"+string(body), true
	}
	var settings []store.Setting
	for k, v := range params {
		if !shimParams[k] && !strings.HasPrefix(k, "param_") && !withData {
			// A server parses a parameter by its setting's type; as a
			// SETTINGS clause, a number must not be a string literal.
			var value any = v[0]
			if n, err := strconv.Atoi(v[0]); err == nil {
				value = n
			}
			settings = append(settings, store.Setting{Name: k, Value: value})
		}
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
// creates the database, as a server's would exist: "default" does, and the
// store's own is created by chserver.Open through this very shim.
func (s *httpShim) backend(ctx context.Context, db string) (*chdbstore.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.backends[db]; b != nil {
		return b, nil
	}
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
	if err != nil {
		return nil, err
	}
	s.backends[db] = b
	return b, nil
}

func (s *httpShim) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.backends {
		_ = b.Close()
	}
}

// shimEngine runs the chserver backend against an httpShim.
func shimEngine() engine {
	return engine{"chserver-over-shim", func(t testing.TB, db string) store.Backend {
		shim := &httpShim{backends: map[string]*chdbstore.Backend{}}
		srv := httptest.NewServer(shim)
		t.Cleanup(func() { srv.Close(); shim.close() })
		b, err := chserver.Open(context.Background(), chserver.Options{
			Addr: strings.TrimPrefix(srv.URL, "http://"), Database: db, User: "default",
		})
		if err != nil {
			t.Fatalf("open chserver on the shim: %v", err)
		}
		return b
	}}
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
				return nil, fmt.Errorf("shim: Native output of %s is not supported", c.Type)
			}
		}
	}
	return out, nil
}
