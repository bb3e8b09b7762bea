package chdbstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	if err := a.Insert(ctx, "t", []string{"x"}, []byte("[1]\n[2]\n"), store.InsertOptions{}); err != nil {
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

// TestOpenWithoutLibrary runs this test binary again with the library made
// unfindable. The child must start (nothing loads the library at program
// start: with chdb-go the process died in an init before any test ran),
// and Open must return an error wrapping ErrLibraryMissing that names where
// it looked and the install command, every time it is called.
func TestOpenWithoutLibrary(t *testing.T) {
	if missing := os.Getenv("CHDBSTORE_NOLIB_CHILD"); missing != "" {
		if p, ok := chdbstore.LibPath(); ok || p != missing {
			t.Fatalf("LibPath = %q, %v; want %q, false", p, ok, missing)
		}
		for i := range 2 {
			b, err := chdbstore.Open(t.Context(), chdbstore.Options{Path: t.TempDir(), Database: "nolib"})
			if !errors.Is(err, chdbstore.ErrLibraryMissing) || b != nil {
				t.Fatalf("open %d: %v, %v; want ErrLibraryMissing", i, b, err)
			}
			for _, w := range []string{missing, "make chdb", "scripts/install-chdb.sh", chdbstore.Version} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("open %d: the error lacks %q: %v", i, w, err)
				}
			}
			if !errors.Is(chdbstore.Load(), chdbstore.ErrLibraryMissing) {
				t.Error("Load after a failed Open succeeded")
			}
		}
		fmt.Println("CHILD DONE")
		return
	}
	missing := filepath.Join(t.TempDir(), "no", "libchdb.so")
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenWithoutLibrary$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CHDBSTORE_NOLIB_CHILD="+missing, "CHDB_LIB_PATH="+missing)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD DONE") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestDataStaysInPath: the session is started on the data directory given
// (the engine's --path): a table written, the session closed and opened
// again on the same directory still holds its rows, and the files are
// there.
func TestDataStaysInPath(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "relative-made-absolute")
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: dir, Database: "persist"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Exec(ctx, "CREATE TABLE persist.t (x UInt8) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(ctx, "t", []string{"x"}, []byte("[4]\n[5]\n"), store.InsertOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "metadata", "persist")); err != nil {
		t.Errorf("the database is not in the data directory: %v", err)
	}
	b, err = chdbstore.Open(ctx, chdbstore.Options{Path: dir, Database: "persist"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.QueryFormat(ctx, "SELECT sum(x) FROM persist.t", "CSV", nil)
	if err != nil || strings.TrimSpace(string(out)) != "9" {
		t.Errorf("after reopening: %q, %v; want 9", out, err)
	}
}

// TestNULRefused: C reads a statement only up to its first NUL byte, so a
// statement holding one would run as a shorter one (without the SETTINGS
// the store appends, say): it is refused, by every entry point.
func TestNULRefused(t *testing.T) {
	ctx := t.Context()
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: t.TempDir(), Database: "nul"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Exec(ctx, "CREATE TABLE nul.t (s String) ENGINE = MergeTree ORDER BY s"); err != nil {
		t.Fatal(err)
	}
	limit := []store.Setting{{Name: "max_result_rows", Value: 1}, {Name: "result_overflow_mode", Value: "throw"}}
	calls := []struct {
		name string
		call func() error
	}{
		{"exec", func() error { return b.Exec(ctx, "DROP TABLE nul.t\x00 garbage") }},
		{"query", func() error {
			_, err := b.Query(ctx, "SELECT number FROM system.numbers LIMIT 5\x00", limit)
			return err
		}},
		{"insert", func() error {
			return b.Insert(ctx, "t", []string{"s"}, []byte("[\"a\x00b\"]\n"), store.InsertOptions{})
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); err == nil || !strings.Contains(err.Error(), "NUL") {
				t.Errorf("err = %v, want the NUL byte refused", err)
			}
		})
	}
	out, err := b.QueryFormat(ctx, "SELECT count() FROM nul.t", "CSV", nil)
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Errorf("the table after the refused statements: %q, %v; want it present and empty", out, err)
	}
}

// TestHold: a held session outlives the backends opened and closed on
// its path (another path is refused meanwhile), and closes on release.
func TestHold(t *testing.T) {
	dir := t.TempDir()
	release := chdbstore.Hold(dir)
	b, err := chdbstore.Open(t.Context(), chdbstore.Options{Path: dir, Database: "held"})
	if err != nil {
		release()
		t.Fatal(err)
	}
	_ = b.Close()
	if o, err := chdbstore.Open(t.Context(), chdbstore.Options{Path: t.TempDir(), Database: "other"}); !errors.Is(err, chdbstore.ErrSessionPath) {
		if err == nil {
			_ = o.Close()
		}
		release()
		t.Fatalf("another path while held: %v, want ErrSessionPath", err)
	}
	release()
	o, err := chdbstore.Open(t.Context(), chdbstore.Options{Path: t.TempDir(), Database: "other"})
	if err != nil {
		t.Fatalf("another path after release: %v", err)
	}
	_ = o.Close()
}
