package chdbstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

func TestSharedSession(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	a, err := chdbstore.Open(ctx, chdbstore.Options{Path: dir, Database: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: dir, Database: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chdbstore.Open(ctx, chdbstore.Options{Path: t.TempDir(), Database: "c"}); !errors.Is(err, chdbstore.ErrSessionPath) {
		t.Errorf("second path: err = %v, want ErrSessionPath", err)
	}
	if err := a.Exec(ctx, "CREATE TABLE a.t (x UInt8) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	if err := a.Insert(ctx, "t", []string{"x"}, []byte("[1]\n[2]\n")); err != nil {
		t.Fatal(err)
	}
	// Closing one backend leaves the shared session to the other.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Query(ctx, "SELECT 1", nil); err == nil {
		t.Error("query on a closed backend succeeded")
	}
	out, err := b.Query(ctx, "SELECT sum(x) AS s FROM a.t", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != uint64(3) {
		t.Errorf("sum = %v, %v; want 3", res, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// With every backend closed, another path may be opened.
	c, err := chdbstore.Open(ctx, chdbstore.Options{Path: t.TempDir(), Database: "c"})
	if err != nil {
		t.Fatalf("reopen on a new path: %v", err)
	}
	defer c.Close()
	if _, err := c.Query(ctx, "SELECT 1", nil); err != nil {
		t.Error(err)
	}
}

func TestOpenRejectsBadDatabase(t *testing.T) {
	for _, db := range []string{"bad-name", "1abc", "a`b", strings.Repeat("x", 65)} {
		t.Run(db, func(t *testing.T) {
			if _, err := chdbstore.Open(t.Context(), chdbstore.Options{Database: db}); !errors.Is(err, store.ErrInvalidDatabase) {
				t.Errorf("err = %v, want ErrInvalidDatabase", err)
			}
		})
	}
}

// TestFailedQueryDoesNotLeak: chDB hands the partial output of a query that
// failed mid-way to the next call; the backend must absorb it.
func TestFailedQueryDoesNotLeak(t *testing.T) {
	ctx := t.Context()
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: sessionPath(t), Database: "leak"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	limit := []store.Setting{{Name: "max_result_rows", Value: 10}, {Name: "result_overflow_mode", Value: "throw"}}
	for i := range 3 {
		if _, err := b.Query(ctx, "SELECT number FROM system.numbers LIMIT 1000", limit); err == nil {
			t.Fatal("the row limit did not apply")
		}
		out, err := b.Query(ctx, "SELECT 7 AS seven", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := store.DecodeJSONCompact(out)
		if err != nil {
			t.Fatalf("round %d: the next result is corrupt: %v\n%s", i, err, out)
		}
		if len(res.Columns) != 1 || res.Columns[0].Name != "seven" || res.Rows[0][0] != uint64(7) {
			t.Errorf("round %d: next result = %+v", i, res)
		}
	}
}

// sessionPath returns a path usable by this test process's session: any
// path while no backend is open.
func sessionPath(t *testing.T) string { return t.TempDir() }

// TestAnalystQueryWaitsForInserts: an analyst's statement does not start
// while an insert is under way or waiting for the engine (chDB runs one
// statement at a time: ingestion goes first), and waits no longer than its
// context.
func TestAnalystQueryWaitsForInserts(t *testing.T) {
	ctx := t.Context()
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: t.TempDir(), Database: "writes_first"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	chdbstore.BeginWrite()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.AnalystQuery(cancelled, "SELECT 1", nil); err == nil || !strings.Contains(err.Error(), "waiting for inserts") {
		t.Errorf("analyst query with an insert pending and its context over: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.AnalystQuery(ctx, "SELECT 1", nil)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the analyst query ran while an insert was pending (%v)", err)
	default:
	}
	chdbstore.EndWrite()
	if err := <-done; err != nil {
		t.Fatalf("analyst query after the insert: %v", err)
	}
	// With no insert pending, it runs at once; a store's own query never waits.
	if _, err := b.AnalystQuery(ctx, "SELECT 1", nil); err != nil {
		t.Fatal(err)
	}
	chdbstore.BeginWrite()
	defer chdbstore.EndWrite()
	if _, err := b.Query(ctx, "SELECT 1", nil); err != nil {
		t.Errorf("the store's own query with an insert pending: %v", err)
	}
}
