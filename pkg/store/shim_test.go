package store_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/internal/chshim"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chserver"
)

// shimEngine runs the chserver backend, with the real clickhouse-go HTTP
// client, against internal/chshim: ClickHouse's HTTP interface served on
// this process's chDB session.
func shimEngine() engine {
	return engine{"chserver-over-shim", func(t testing.TB, db string) store.Backend {
		shim := chshim.New(chshim.Options{Path: chdbPath})
		srv := httptest.NewServer(shim)
		t.Cleanup(func() { srv.Close(); _ = shim.Close() })
		b, err := chserver.Open(context.Background(), chserver.Options{
			Addr: strings.TrimPrefix(srv.URL, "http://"), Database: db, User: "default",
		})
		if err != nil {
			t.Fatalf("open chserver on the shim: %v", err)
		}
		return b
	}}
}
