package chdbstore_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// rbStructure is the structure of the rows rbRows encodes, for table
// rb.t (id UInt64, s String).
const rbStructure = "id UInt64, s String"

// rbRows encodes (id, s) rows in RowBinary for rbStructure, ids from first.
func rbRows(first uint64, ss ...string) []byte {
	var b []byte
	for i, s := range ss {
		b = binary.LittleEndian.AppendUint64(b, first+uint64(i))
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// openRB opens a backend on a fresh session at dir with table t, whose
// deduplication window makes tokens count.
func openRB(t *testing.T, dir string) *chdbstore.Backend {
	t.Helper()
	b, err := chdbstore.Open(t.Context(), chdbstore.Options{Path: dir, Database: "rb"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Exec(t.Context(), "CREATE TABLE IF NOT EXISTS rb.t (id UInt64, s String) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100"); err != nil {
		t.Fatal(err)
	}
	return b
}

// insertFiles lists the files in the insert directory of the session at
// dir.
func insertFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "cordon-insert"))
	if err != nil {
		t.Fatalf("insert directory: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// csv runs a query and returns its CSV output, trimmed.
func csv(t *testing.T, b *chdbstore.Backend, q string) string {
	t.Helper()
	out, err := b.QueryFormat(t.Context(), q, "CSV", nil)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return strings.TrimSpace(string(out))
}

// TestInsertRowBinary: rows go in, with a structure or in the columns'
// types; a repeated token drops the insert (same rows or not), so does a
// repeated plain insert of the same rows; and no file is left behind
// after a success, an insert the engine fails, an insert refused before
// the engine (token, structure) or a dropped one.
func TestInsertRowBinary(t *testing.T) {
	dir := t.TempDir()
	b := openRB(t, dir)
	ctx := t.Context()
	cols := []string{"id", "s"}
	once := store.InsertOptions{DedupToken: "rb:1"}
	steps := []struct {
		name      string
		structure string
		rows      []byte
		opts      store.InsertOptions
		wantErr   error  // nil: no error; errAny: any error
		want      string // count(), sum(id) afterwards
	}{
		{"plain", rbStructure, rbRows(1, "a", "", "ünï ✓", strings.Repeat("x", 5000)), store.InsertOptions{}, nil, "4,10"},
		// Without a token, an exact copy of a recent insert is dropped
		// by the hash of its rows, as an INSERT with inline data is.
		{"plain again", rbStructure, rbRows(1, "a", "", "ünï ✓", strings.Repeat("x", 5000)), store.InsertOptions{}, nil, "4,10"},
		{"token", rbStructure, rbRows(10, "b", "c"), once, nil, "6,31"},
		{"same token same rows", rbStructure, rbRows(10, "b", "c"), once, nil, "6,31"},
		{"same token other rows", rbStructure, rbRows(20, "d"), once, nil, "6,31"},
		{"truncated rows", rbStructure, rbRows(30, "e")[:12], store.InsertOptions{}, errAny, "6,31"},
		{"wrong structure", "id UInt64, s String, z UInt8", rbRows(40, "f"), store.InsertOptions{}, errAny, "6,31"},
		{"bad token", rbStructure, rbRows(50, "g"), store.InsertOptions{DedupToken: "it's"}, store.ErrInvalidDedupToken, "6,31"},
		{"quote in structure", "id UInt64, s Enum8('a' = 1)", rbRows(60, "h"), store.InsertOptions{}, chdbstore.ErrUnsafeSQLText, "6,31"},
		{"backslash in structure", `id UInt64, s String\`, rbRows(60, "h"), store.InsertOptions{}, chdbstore.ErrUnsafeSQLText, "6,31"},
		{"another token", rbStructure, rbRows(20, "d"), store.InsertOptions{DedupToken: "rb:2"}, nil, "7,51"},
		// Without a structure, the rows are read in the columns' types
		// (as a server reads INSERT … FORMAT RowBinary), with the same
		// de-duplication.
		{"columns' types", "", rbRows(70, "i"), store.InsertOptions{}, nil, "8,121"},
		{"columns' types again", "", rbRows(70, "i"), store.InsertOptions{}, nil, "8,121"},
		{"columns' types, token", "", rbRows(80, "j"), store.InsertOptions{DedupToken: "rb:3"}, nil, "9,201"},
		{"columns' types, same token", "", rbRows(90, "k"), store.InsertOptions{DedupToken: "rb:3"}, nil, "9,201"},
		{"columns' types, truncated rows", "", rbRows(100, "l")[:12], store.InsertOptions{}, errAny, "9,201"},
	}
	for _, st := range steps {
		t.Run(strings.ReplaceAll(st.name, " ", "_"), func(t *testing.T) {
			err := b.InsertRowBinary(ctx, "t", cols, st.structure, st.rows, st.opts)
			switch {
			case st.wantErr == nil && err != nil:
				t.Fatalf("err = %v", err)
			case st.wantErr == errAny && err == nil, st.wantErr != nil && st.wantErr != errAny && !errors.Is(err, st.wantErr):
				t.Fatalf("err = %v, want %v", err, st.wantErr)
			}
			if got := csv(t, b, "SELECT count(), sum(id) FROM rb.t"); got != st.want {
				t.Errorf("count, sum = %s, want %s", got, st.want)
			}
			if files := insertFiles(t, dir); len(files) != 0 {
				t.Errorf("files left behind: %v", files)
			}
		})
	}
	if got := csv(t, b, "SELECT s FROM rb.t WHERE id = 3"); got != `"ünï ✓"` {
		t.Errorf("UTF-8 string read back as %s", got)
	}
	if got := csv(t, b, "SELECT length(s) FROM rb.t WHERE id = 4"); got != "5000" {
		t.Errorf("long string read back with length %s", got)
	}
}

// errAny stands for any error in a table of cases.
var errAny = errors.New("any error")

// TestInsertRowBinaryConcurrent: concurrent inserts (partition runners)
// each use a file of their own: every row of every insert arrives once,
// and no file is left.
func TestInsertRowBinaryConcurrent(t *testing.T) {
	dir := t.TempDir()
	b := openRB(t, dir)
	const writers, inserts, rows = 4, 10, 100
	var wg sync.WaitGroup
	errs := make(chan error, writers*inserts)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range inserts {
				first := uint64((w*inserts + i) * rows)
				ss := make([]string, rows)
				for j := range ss {
					ss[j] = fmt.Sprintf("w%d-%d", w, j)
				}
				tok := store.InsertOptions{DedupToken: fmt.Sprintf("c:%d:%d", w, i)}
				if err := b.InsertRowBinary(t.Context(), "t", []string{"id", "s"}, rbStructure, rbRows(first, ss...), tok); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := writers * inserts * rows
	if got, want := csv(t, b, "SELECT count(), uniqExact(id), max(id) FROM rb.t"), fmt.Sprintf("%d,%d,%d", n, n, n-1); got != want {
		t.Errorf("count, distinct ids, max id = %s, want %s", got, want)
	}
	if files := insertFiles(t, dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}

// TestInsertDirCleanedAtOpen: the files a crashed process left in the
// insert directory are removed when a session opens on the path again,
// and the directory is private (0700) even if it was not.
func TestInsertDirCleanedAtOpen(t *testing.T) {
	dir := t.TempDir()
	b := openRB(t, dir)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ins := filepath.Join(dir, "cordon-insert")
	// A crash mid-insert: a rows file left, the directory opened up.
	if err := os.WriteFile(filepath.Join(ins, "usage_events_raw-123.rowbinary"), rbRows(1, "x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ins, 0o755); err != nil {
		t.Fatal(err)
	}
	b = openRB(t, dir)
	if files := insertFiles(t, dir); len(files) != 0 {
		t.Errorf("files left from before the crash: %v", files)
	}
	fi, err := os.Stat(ins)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("insert directory mode %o, want 700", perm)
	}
	if err := b.InsertRowBinary(t.Context(), "t", []string{"id", "s"}, rbStructure, rbRows(1, "y"), store.InsertOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := csv(t, b, "SELECT count() FROM rb.t"); got != "1" {
		t.Errorf("count = %s, want 1", got)
	}
}

// TestInsertRowBinaryUnsafePath: a data path holding a quote cannot go
// into the INSERT's file(): the insert fails with a clear error before a
// file is written.
func TestInsertRowBinaryUnsafePath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "it's")
	b := openRB(t, dir)
	err := b.InsertRowBinary(t.Context(), "t", []string{"id", "s"}, rbStructure, rbRows(1, "y"), store.InsertOptions{})
	if !errors.Is(err, chdbstore.ErrUnsafeSQLText) || !strings.Contains(err.Error(), "data path") {
		t.Errorf("err = %v, want ErrUnsafeSQLText naming the data path", err)
	}
	if files := insertFiles(t, dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}
