package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// fuzzEnv is one store for the whole fuzzing process (a chDB call costs
// ~2 ms; opening a store, far more), with a secret file analysts must
// never read.
var fuzzEnv struct {
	once   sync.Once
	s      *store.Store
	b      store.Backend
	secret string // content of the secret file
	dir    string // where the secret file is, and where nothing may appear
	err    error
}

const fuzzDB = "fuzz_sql_gate"

func fuzzStore(t *testing.T) *store.Store {
	t.Helper()
	fuzzEnv.once.Do(func() {
		ctx := context.Background()
		dir, err := os.MkdirTemp(chdbPath, "fuzz-secret-")
		if err != nil {
			fuzzEnv.err = err
			return
		}
		fuzzEnv.dir = dir
		fuzzEnv.secret = "cordon-fuzz-secret-" + newID()
		if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte(fuzzEnv.secret+"\n"), 0o600); err != nil {
			fuzzEnv.err = err
			return
		}
		b, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: fuzzDB})
		if err != nil {
			fuzzEnv.err = err
			return
		}
		s, err := store.Open(ctx, b, store.Options{QueryTimeout: time.Second, MaxResultRows: 1000, MaxQueryMemory: 64 << 20})
		if err != nil {
			fuzzEnv.err = err
			return
		}
		fuzzEnv.s, fuzzEnv.b = s, b
		fuzzEnv.err = s.InsertUsage(ctx, []events.Envelope{usage(t, day0, "tok", "h", "orders:read", "10.0.0.1", "allow", "ok")})
	})
	if fuzzEnv.err != nil {
		t.Fatal(fuzzEnv.err)
	}
	return fuzzEnv.s
}

// FuzzSQLGate feeds the gate queries built around the escapes of issue 8
// (seeds in testdata/fuzz/FuzzSQLGate). Invariants: it never panics; a
// query it accepts is, by the engine's own parse, one SELECT whose every
// node passes the allow-lists again, with no table function, no function
// off the list, no SETTINGS, no INTO OUTFILE and no FORMAT; and running it
// neither reads the secret file nor writes one.
func FuzzSQLGate(f *testing.F) {
	f.Add("SELECT count() FROM usage_events")
	f.Add("SELECT file('/etc/passwd')")
	f.Fuzz(func(t *testing.T, q string) {
		s := fuzzStore(t)
		ctx := context.Background()
		q = strings.ReplaceAll(q, "$SECRET", filepath.Join(fuzzEnv.dir, "key.pem"))
		q = strings.ReplaceAll(q, "$OUT", filepath.Join(fuzzEnv.dir, "out.txt"))
		n, err := s.CheckQuery(ctx, q)
		if err != nil {
			if errors.Is(err, store.ErrNotReadOnly) && strings.Contains(err.Error(), fuzzEnv.secret) {
				t.Fatalf("a refusal shows the secret: %v", err)
			}
			return
		}
		// The engine's parse of what would run, checked again from scratch.
		if err := s.RecheckAST(ctx, n); err != nil {
			t.Fatalf("accepted %q (normalised %q), but its tree fails the allow-list: %v", q, n, err)
		}
		root, err := s.ExplainAST(ctx, n)
		if err != nil {
			t.Fatalf("accepted %q, but EXPLAIN AST fails: %v", q, err)
		}
		if root.Kind() != "SelectWithUnionQuery" || len(root.Children()) != 1 {
			t.Fatalf("accepted %q: root %s with %d children (INTO OUTFILE or FORMAT?)", q, root.Kind(), len(root.Children()))
		}
		if err := checkTree(root, nil); err != nil {
			t.Fatalf("accepted %q (normalised %q): %v", q, n, err)
		}
		// Run it: whatever it does, the secret stays unread and no file appears.
		res, err := s.Query(ctx, q)
		if err == nil {
			if strings.Contains(fmt.Sprint(res.Rows), fuzzEnv.secret) {
				t.Fatalf("accepted %q read the secret file", q)
			}
		} else if strings.Contains(err.Error(), fuzzEnv.secret) {
			t.Fatalf("running %q shows the secret: %v", q, err)
		}
		if _, err := os.Stat(filepath.Join(fuzzEnv.dir, "out.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("running %q wrote a file", q)
		}
		if !tableExists(t, fuzzEnv.b, fuzzDB, "usage_events_raw") {
			t.Fatalf("running %q dropped a table", q)
		}
	})
}

// checkTree is the fuzz target's own, independent reading of an accepted
// tree: no SETTINGS, no named window, no table function, only allowed
// functions, and no table outside the store's database (in FROM or on the
// right side of IN).
func checkTree(n, parent *store.ASTNode) error {
	switch n.Kind() {
	case "Set", "WindowListElement", "ColumnsApplyTransformer", "QueryParameter":
		return fmt.Errorf("accepted tree holds a %s node", n.Kind())
	case "Function":
		if parent != nil && parent.Kind() == "TableExpression" {
			return fmt.Errorf("accepted tree holds table function %s", n.Name())
		}
		if !store.FunctionAllowed(n.Name()) {
			return fmt.Errorf("accepted tree calls %s", n.Name())
		}
		if strings.HasSuffix(strings.ToLower(n.Name()), "in") && len(n.Children()) == 1 && len(n.Children()[0].Children()) == 2 {
			set := n.Children()[0].Children()[1]
			if db, _, ok := strings.Cut(set.Name(), "."); ok && set.Kind() == "Identifier" && db != fuzzDB {
				return fmt.Errorf("accepted tree reads %s in %s", set.Name(), n.Name())
			}
		}
	case "TableIdentifier":
		if db, _, ok := strings.Cut(n.Name(), "."); ok && db != fuzzDB {
			return fmt.Errorf("accepted tree reads %s", n.Name())
		}
	}
	for _, c := range n.Children() {
		if err := checkTree(c, n); err != nil {
			return err
		}
	}
	return nil
}
