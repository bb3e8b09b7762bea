package store_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// jsonOnly hides a backend's optional interfaces (BinaryInserter among
// them): the store writes usage rows to it in JSONCompactEachRow.
type jsonOnly struct{ store.Backend }

// jsonEngine is chDB behind jsonOnly: the JSON insert path on chDB.
func jsonEngine() engine {
	return engine{"chdb-json", func(t testing.TB, db string) store.Backend {
		return jsonOnly{engines()[0].open(t, db)}
	}}
}

// wireType is the RowBinary type a column of ClickHouse type typ travels
// as in usageStructure: LowCardinality dropped, DateTime64 without its
// zone, an Enum8 as its Int8 value.
func wireType(typ string) string {
	if m := regexp.MustCompile(`^LowCardinality\((.*)\)$`).FindStringSubmatch(typ); m != nil {
		typ = m[1]
	}
	switch {
	case strings.HasPrefix(typ, "DateTime64("):
		return regexp.MustCompile(`, *'[^']*'\)$`).ReplaceAllString(typ, ")")
	case strings.HasPrefix(typ, "Enum8("):
		return "Int8"
	}
	return typ
}

// TestUsageSchemaMatchesTable: the RowBinary encoder writes every column
// of usage_events_raw after the migrations, no other, each with the type
// the table's column travels as. A migration that adds a usage column
// fails it until the encoders write the column.
func TestUsageSchemaMatchesTable(t *testing.T) {
	db := fmt.Sprintf("t%d_usage_schema", dbSeq.Add(1))
	_, b := openStore(t, engines()[0], db, store.Options{})
	out, err := b.Query(t.Context(), "SELECT name, type FROM system.columns WHERE database = '"+db+"' AND table = 'usage_events_raw' ORDER BY position", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]string{}
	for _, r := range res.Rows {
		table[r[0].(string)] = wireType(r[1].(string))
	}
	wire := map[string]string{}
	for _, c := range store.UsageWireSchema() {
		wire[c[0]] = c[1]
	}
	for name, typ := range table {
		if w, ok := wire[name]; !ok {
			t.Errorf("usage_events_raw has column %s (%s) which the encoders do not write", name, typ)
		} else if w != typ {
			t.Errorf("column %s travels as %s, the table's type wants %s", name, w, typ)
		}
	}
	for name := range wire {
		if _, ok := table[name]; !ok {
			t.Errorf("the encoders write %s, which usage_events_raw does not have", name)
		}
	}
	if len(table) < 20 {
		t.Errorf("usage_events_raw has %d columns, want at least 20", len(table))
	}
}

// rawUsage builds a usage envelope without validation, for values the
// encoders must carry whatever the producer checked.
func rawUsage(at time.Time, p *events.UsageDecided) events.Envelope {
	return events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeUsageDecided, Time: at, Source: "test/1",
		Version: events.SchemaVersion, Data: p}
}

// edgeUsage is usage events with every awkward value a column can hold,
// at times over several days (so one insert makes several parts).
func edgeUsage() []events.Envelope {
	awkward := "quote \" ' backslash \\ nul \x00 ctl \x01\x1f\x7f tab\tnl\n sep \u2028\u2029 bad \xff\xfe trunc \xe2\x82"
	ua := strings.Repeat("Mozilla/5.0 (ünïcödé ✓ 🙂) ", 4096/30+1)[:4096]
	device := strings.Repeat("a1b2c3d4", 8)
	base := func() *events.UsageDecided {
		return &events.UsageDecided{TokenID: "tok-1", Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1",
			Service: "orders", SourceIP: "10.0.0.1", UserAgent: "curl/8.5.0", Method: "GET", Route: "/orders/{id}",
			Scope: "orders:read", Decision: events.DecisionAllow, Reason: "ok", LatencyNS: 1500, Resource: "42", Client: "curl/8"}
	}
	v6 := base()
	v6.SourceIP, v6.UserAgent, v6.Device, v6.Client = "2001:db8::ff00:42:8329", ua, device, "Mozilla/5"
	empty := &events.UsageDecided{Enforcer: "e", Service: "s", SourceIP: "::1", Method: "GET", Route: "/",
		Decision: events.DecisionDeny, Reason: "missing", Count: 300}
	odd := &events.UsageDecided{TokenID: awkward, Tenant: awkward, Holder: awkward, KeyID: awkward, Enforcer: awkward,
		Service: awkward, SourceIP: awkward, UserAgent: awkward, Method: awkward, Route: awkward, Scope: awkward,
		Decision: events.DecisionDeny, Reason: awkward, LatencyNS: 1<<63 - 1, Count: events.MaxUsageCount,
		Resource: awkward, Client: awkward, Device: awkward}
	utf := base()
	utf.Tenant, utf.Holder, utf.Resource, utf.Scope = "société", "日本語", "ünï/✓/🙂", "商品:read"
	return []events.Envelope{
		rawUsage(day0.Add(time.Hour+123456789), v6),
		rawUsage(day0.Add(25*time.Hour), empty),
		rawUsage(day0.Add(47*time.Hour).In(time.FixedZone("x", -7*3600)), odd),
		rawUsage(day0.Add(2*time.Hour+999), utf),
		rawUsage(time.Date(1969, 12, 31, 23, 59, 59, 999999500, time.UTC), base()),
		rawUsage(time.Date(2200, 1, 1, 0, 0, 0, 1000, time.UTC), base()),
	}
}

// TestRowBinaryMatchesJSON: the same events written in RowBinary and in
// JSONCompactEachRow give the same rows, column for column (every type and
// edge value: an IPv6 source, empty strings, a 4 KB user agent, UTF-8 and
// invalid UTF-8, control bytes, a count > 1, a device thumbprint, times on
// several days, before 1970 and with nanoseconds), and the same rollups;
// the RowBinary insert splits into a part per day and, repeated with its
// token, is dropped whole.
func TestRowBinaryMatchesJSON(t *testing.T) {
	ctx := t.Context()
	open := func(e engine, suffix string) (*store.Store, string) {
		db := fmt.Sprintf("t%d_rb_%s", dbSeq.Add(1), suffix)
		s, _ := openStore(t, e, db, store.Options{})
		return s, db
	}
	sBin, dbBin := open(engines()[0], "bin")
	sJSON, dbJSON := open(jsonEngine(), "json")
	evs := append(edgeUsage(), genUsage(t, 2000, []string{newID(), newID(), newID()}, []string{"billing", "search"}, day0).events...)
	for _, s := range []*store.Store{sBin, sJSON} {
		if err := s.InsertUsageOnce(ctx, "rb:1", evs); err != nil {
			t.Fatal(err)
		}
	}
	if err := sBin.InsertUsageOnce(ctx, "rb:1", evs); err != nil {
		t.Fatal(err)
	}
	// Plain inserts too (no token), of a part of the events.
	for _, s := range []*store.Store{sBin, sJSON} {
		if err := s.InsertUsage(ctx, evs[:3]); err != nil {
			t.Fatal(err)
		}
	}
	be, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: dbBin})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	read := func(q string) string {
		t.Helper()
		out, err := be.QueryFormat(ctx, q, "TabSeparated", nil)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return string(out)
	}
	queries := []string{
		"SELECT * FROM `{db}`.usage_events_raw ORDER BY event_id, time",
		"SELECT * FROM `{db}`.token_usage_daily ORDER BY day, tenant, token_id, holder",
		"SELECT * FROM `{db}`.holder_usage_daily ORDER BY day, tenant, holder",
		"SELECT count(), sum(count) FROM `{db}`.usage_events_raw",
	}
	for _, q := range queries {
		bin, js := read(strings.ReplaceAll(q, "{db}", dbBin)), read(strings.ReplaceAll(q, "{db}", dbJSON))
		if bin != js {
			bl, jl := strings.Split(bin, "\n"), strings.Split(js, "\n")
			for i := range min(len(bl), len(jl)) {
				if bl[i] != jl[i] {
					t.Errorf("%s: line %d differs:\nRowBinary: %.300q\nJSON:      %.300q", q, i+1, bl[i], jl[i])
					break
				}
			}
			t.Errorf("%s: RowBinary gives %d lines, JSON %d", q, len(bl), len(jl))
		}
	}
	if got, want := read("SELECT count() FROM `"+dbBin+"`.usage_events_raw"), fmt.Sprintf("%d\n", len(evs)+3); got != want {
		t.Errorf("usage_events_raw holds %q rows, want %q (a repeated token must drop the whole insert)", got, want)
	}
	parts := read("SELECT count() FROM system.parts WHERE database = '" + dbBin + "' AND table = 'usage_events_raw' AND active")
	if n := strings.TrimSpace(parts); n == "" || n == "0" || n == "1" {
		t.Errorf("%s active parts: the insert did not split by day", n)
	}
	// The awkward strings: exactly what JSON gives, invalid UTF-8 as
	// U+FFFD byte by byte.
	if got := read("SELECT tenant FROM `" + dbBin + "`.usage_events_raw WHERE tenant LIKE 'quote%' LIMIT 1"); !strings.Contains(got, "bad \uFFFD\uFFFD trunc \uFFFD\uFFFD") {
		t.Errorf("invalid UTF-8 read back as %q", got)
	}
	// The generated events alone, on the days a Date holds: the rollups
	// count them exactly.
	gen := evs[len(edgeUsage()):]
	sGen, _ := open(engines()[0], "gen")
	for range 2 {
		if err := sGen.InsertUsageOnce(ctx, "rb:gen", gen); err != nil {
			t.Fatal(err)
		}
	}
	checkRollups(t, sGen, gen)
}

// TestInsertUsageRefusesValues: a usage row the table cannot hold fails the
// whole insert and nothing is written: a decision other than allow or deny
// in RowBinary as in JSON; a count beyond UInt32 and a negative latency in
// RowBinary (the JSON path leaves them to ClickHouse, which wraps them).
func TestInsertUsageRefusesValues(t *testing.T) {
	for _, e := range []engine{engines()[0], jsonEngine()} {
		t.Run(e.name, func(t *testing.T) {
			s, b := openStore(t, e, fmt.Sprintf("t%d_refuse_%s", dbSeq.Add(1), strings.ReplaceAll(e.name, "-", "_")), store.Options{})
			bad := []struct {
				name     string
				edit     func(p *events.UsageDecided)
				jsonAlso bool
			}{
				{"decision", func(p *events.UsageDecided) { p.Decision = "maybe" }, true},
				{"count", func(p *events.UsageDecided) { p.Count = events.MaxUsageCount + 1 }, false},
				{"latency", func(p *events.UsageDecided) { p.LatencyNS = -1 }, false},
			}
			for _, c := range bad {
				if e.name == "chdb-json" && !c.jsonAlso {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					evs := edgeUsage()
					c.edit(evs[len(evs)-1].Data.(*events.UsageDecided))
					if err := s.InsertUsageOnce(context.Background(), "bad:"+c.name, evs); err == nil {
						t.Error("insert succeeded")
					}
					if n := backendCount(t, b, "SELECT count() FROM usage_events_raw"); n != 0 {
						t.Errorf("%d rows written", n)
					}
				})
			}
		})
	}
}
