package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/pkg/store/chserver"
)

// chdbPath is the data directory of this test process's chDB session.
var chdbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cordon-store-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chdbPath = dir
	release := chdbstore.Hold(dir) // the session stays open throughout
	code := m.Run()
	release()
	_ = os.RemoveAll(dir)
	exitTests(code)
}

// engine opens a backend on a fresh database.
type engine struct {
	name string
	open func(t testing.TB, db string) store.Backend
}

var dbSeq atomic.Int64

// engines returns chDB, the ClickHouse server named by CLICKHOUSE_ADDR when
// it is set, and the chserver backend over an HTTP shim on chDB (see
// internal/chshim).
func engines() []engine {
	return []engine{
		{"chdb", func(t testing.TB, db string) store.Backend {
			b, err := chdbstore.Open(context.Background(), chdbstore.Options{Path: chdbPath, Database: db})
			if err != nil {
				t.Fatalf("open chdb backend: %v", err)
			}
			return b
		}},
		{"server", func(t testing.TB, db string) store.Backend {
			addr := os.Getenv("CLICKHOUSE_ADDR")
			if addr == "" {
				t.Skip("CLICKHOUSE_ADDR is not set: skipping the ClickHouse server backend (set it to host:8123 to run these tests on a server)")
			}
			o := chserver.Options{
				Addr: addr, Database: db,
				User: os.Getenv("CLICKHOUSE_USER"), Password: os.Getenv("CLICKHOUSE_PASSWORD"),
				TLS: os.Getenv("CLICKHOUSE_TLS") == "1", CAFile: os.Getenv("CLICKHOUSE_CA_FILE"),
			}
			b, err := chserver.Open(context.Background(), o)
			if err != nil {
				t.Fatalf("open server backend: %v", err)
			}
			t.Cleanup(func() {
				o.Database = "default"
				if c, err := chserver.Open(context.Background(), o); err == nil {
					_ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
					_ = c.Close()
				}
			})
			return b
		}},
		shimEngine(),
	}
}

// forEachEngine runs fn as a subtest per engine, each on its own database.
func forEachEngine(t *testing.T, fn func(t *testing.T, e engine, db string)) {
	t.Helper()
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			db := fmt.Sprintf("t%d_%s", dbSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())))
			if len(db) > 64 {
				db = db[:64]
			}
			fn(t, e, db)
		})
	}
}

// openStore opens a store on a fresh backend of e and closes it at cleanup.
// The backend is returned too, for what analysts cannot do (OPTIMIZE).
func openStore(t testing.TB, e engine, db string, o store.Options) (*store.Store, store.Backend) {
	t.Helper()
	b := e.open(t, db)
	s, err := store.Open(context.Background(), b, o)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, b
}

func mustEnvelope(t testing.TB, at time.Time, p events.Payload) events.Envelope {
	t.Helper()
	e, err := events.New("test/1", at, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("test event invalid: %v", err)
	}
	return e
}

func usage(t testing.TB, at time.Time, token, holder, scope, ip, decision, reason string) events.Envelope {
	return mustEnvelope(t, at, &events.UsageDecided{
		TokenID: token, Tenant: "acme", Holder: holder, KeyID: "k1", Enforcer: "edge-1", Service: "orders",
		SourceIP: ip, UserAgent: "test/1.0", Method: "GET", Route: "/orders/{id}", Scope: scope,
		Decision: decision, Reason: reason, LatencyNS: 1500,
	})
}

// usageSet is generated usage with its expected aggregates.
type usageSet struct {
	events []events.Envelope
	// per token and day (YYYY-MM-DD): distinct requests, allows, denies,
	// ips, scopes.
	perTokenDay  map[[2]string]*agg
	perHolderDay map[[2]string]*agg
}

type agg struct {
	requests, allows, denies uint64
	ips, scopes, tokens      map[string]bool
}

func newAgg() *agg {
	return &agg{ips: map[string]bool{}, scopes: map[string]bool{}, tokens: map[string]bool{}}
}

// genUsage makes n usage events for tokens (token i held by holders[i %
// len]) spread over two UTC days, with a deterministic mix of scopes, IPs
// and decisions.
func genUsage(t testing.TB, n int, tokens, holders []string, day time.Time) usageSet {
	rng := rand.New(rand.NewPCG(1, 2))
	scopes := []string{"orders:read", "orders:write", "users:read", ""}
	set := usageSet{perTokenDay: map[[2]string]*agg{}, perHolderDay: map[[2]string]*agg{}}
	for i := range n {
		ti := rng.IntN(len(tokens))
		token, holder := tokens[ti], holders[ti%len(holders)]
		at := day.Add(time.Duration(rng.IntN(48*3600)) * time.Second).Add(time.Duration(i) * time.Microsecond)
		scope := scopes[rng.IntN(len(scopes))]
		ip := fmt.Sprintf("10.0.%d.%d", rng.IntN(3), rng.IntN(5))
		decision, reason := events.DecisionAllow, "ok"
		if rng.IntN(4) == 0 {
			decision, reason = events.DecisionDeny, []string{"scope", "network", "window"}[rng.IntN(3)]
		}
		set.events = append(set.events, usage(t, at, token, holder, scope, ip, decision, reason))
		d := at.UTC().Format("2006-01-02")
		for _, a := range []*agg{get(set.perTokenDay, [2]string{token, d}), get(set.perHolderDay, [2]string{holder, d})} {
			a.requests++
			if decision == events.DecisionAllow {
				a.allows++
			} else {
				a.denies++
			}
			a.ips[ip] = true
			if scope != "" {
				a.scopes[scope] = true
			}
			a.tokens[token] = true
		}
	}
	return set
}

func get(m map[[2]string]*agg, k [2]string) *agg {
	if m[k] == nil {
		m[k] = newAgg()
	}
	return m[k]
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// queryRows runs an analyst query and fails the test on error.
func queryRows(t testing.TB, s *store.Store, q string) *store.Result {
	t.Helper()
	res, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	return res
}

// count runs a query returning one unsigned number.
func count(t testing.TB, s *store.Store, q string) uint64 {
	t.Helper()
	res := queryRows(t, s, q)
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		t.Fatalf("query %q: want one value, got %v", q, res.Rows)
	}
	v, ok := res.Rows[0][0].(uint64)
	if !ok {
		t.Fatalf("query %q: want uint64, got %T %v", q, res.Rows[0][0], res.Rows[0][0])
	}
	return v
}
