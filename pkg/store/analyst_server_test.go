package store_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/chshim"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chserver"
)

// TestServerAnalystUser: on a ClickHouse server (here the shim, with the
// real clickhouse-go client), analysts' statements go as the analyst user
// with Cordon's limits as request settings: the time limit is the store's,
// not one the client library derives from the context's deadline, and
// readonly is left to the user's profile (a read-only profile refuses any
// attempt to set it). The store's own statements go as the writer.
func TestServerAnalystUser(t *testing.T) {
	shim := chshim.New(chshim.Options{Path: chdbPath})
	srv := httptest.NewServer(shim)
	t.Cleanup(func() { srv.Close(); _ = shim.Close() })
	db := fmt.Sprintf("t%d_analyst_user", dbSeq.Add(1))
	b, err := chserver.Open(t.Context(), chserver.Options{
		Addr: strings.TrimPrefix(srv.URL, "http://"), Database: db, User: "cordon",
		AnalystUser: "cordon_analyst", AnalystPassword: "analyst-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(t.Context(), b, store.Options{QueryTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	shim.ResetRequests()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := s.Query(ctx, "SELECT count() FROM usage_events"); err != nil {
		t.Fatal(err)
	}
	var ran bool
	for _, r := range shim.Requests() {
		if strings.Contains(r.Query, "displayName()") {
			continue // the driver's handshake, on each connection
		}
		analyst := strings.Contains(r.Query, "formatQuerySingleLine") || strings.HasPrefix(r.Query, "EXPLAIN") || strings.Contains(r.Query, "usage_events")
		if !analyst {
			if r.User != "cordon" {
				t.Errorf("the store's own %q went as %q", r.Query, r.User)
			}
			continue
		}
		if r.User != "cordon_analyst" {
			t.Errorf("analyst statement %q went as %q, want cordon_analyst", r.Query, r.User)
		}
		if r.Params.Has("readonly") {
			t.Errorf("analyst statement %q sets readonly: a read-only profile refuses it", r.Query)
		}
		if strings.Contains(r.Query, "usage_events") && !strings.HasPrefix(r.Query, "EXPLAIN") && !strings.Contains(r.Query, "formatQuerySingleLine") {
			ran = true
			if got := r.Params.Get("max_execution_time"); got != "3" {
				t.Errorf("analyst query ran with max_execution_time=%q, want the store's 3", got)
			}
			if r.Params.Get("max_result_rows") == "" || r.Params.Get("max_memory_usage") == "" {
				t.Errorf("analyst query without its limits: %v", r.Params)
			}
		}
	}
	if !ran {
		t.Error("the analyst query never reached the server")
	}
}
