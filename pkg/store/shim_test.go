package store_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
			// The shim's first query waits for the one chDB session: on a
			// loaded machine, 10 s (the default) was seen to run out.
			DialTimeout: time.Minute,
		})
		if err != nil {
			t.Fatalf("open chserver on the shim: %v", err)
		}
		return b
	}}
}
