package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// ctxUsage is a usage event with the request context of issue 9.
func ctxUsage(t testing.TB, at time.Time, token, method, route, resource, client, device, decision string) events.Envelope {
	reason := "ok"
	if decision == events.DecisionDeny {
		reason = "scope_missing"
	}
	return mustEnvelope(t, at, &events.UsageDecided{
		TokenID: token, Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1", Service: "invoices",
		SourceIP: "10.0.0.1", UserAgent: "raw agent", Method: method, Route: route, Scope: "invoices:read",
		Decision: decision, Reason: reason, LatencyNS: 900, Resource: resource, Client: client, Device: device,
	})
}

// TestRequestContextColumns: the resource, client and device of a usage
// event and the issuance context of a token land in their columns, once
// however often they are written, and analysts read them through the views.
func TestRequestContextColumns(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		tok := newID()
		device := strings.Repeat("0f", 32)
		iss := issued(t, day0, tok, "billing", []string{"invoices:read"})
		iss.Data.(*events.TokenIssued).Requested = &events.IssuanceContext{SourceIP: "10.20.1.7", Client: "Boto3/1"}
		evs := []events.Envelope{
			iss,
			ctxUsage(t, day0.Add(time.Hour), tok, "GET", "/invoices/{id}", "42", "curl/8", device, "allow"),
			ctxUsage(t, day0.Add(time.Hour+time.Second), tok, "GET", "/orgs/{org}/repos/{repo}", "acme/widgets", "Chrome/124", "", "allow"),
			ctxUsage(t, day0.Add(time.Hour+2*time.Second), tok, "GET", "/files/{path...}", "ünïcödé/\"quoted\"/a\\b", "", "", "deny"),
		}
		for range 2 {
			if err := s.Insert(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
		res := queryRows(t, s, "SELECT resource, toString(client), device FROM usage_events WHERE token_id = '"+tok+"' ORDER BY time")
		want := fmt.Sprint([][]any{{"42", "curl/8", device}, {"acme/widgets", "Chrome/124", ""}, {"ünïcödé/\"quoted\"/a\\b", "", ""}})
		if got := fmt.Sprint(res.Rows); got != want {
			t.Fatalf("usage context %s, want %s", got, want)
		}
		res = queryRows(t, s, "SELECT type, requested_ip, toString(requested_client) FROM token_ledger WHERE token_id = '"+tok+"'")
		if got := fmt.Sprint(res.Rows); got != fmt.Sprint([][]any{{"issued", "10.20.1.7", "Boto3/1"}}) {
			t.Fatalf("ledger issuance context %s", got)
		}
	})
}

// TestRequestContextMigration: a database written before the context
// columns existed gains them, with the old rows' values empty, and takes
// new rows with them.
func TestRequestContextMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		migrateBefore(t, b, db, 6)
		oldTok := newID()
		now := time.Now().UTC().Format("2006-01-02 15:04:05.000000")
		usageCols := []string{"event_id", "time", "token_id", "tenant", "holder", "kid", "enforcer", "service",
			"source_ip", "user_agent", "method", "route", "scope", "decision", "reason", "latency_ns", "count"}
		row := fmt.Sprintf(`["%s","%s","%s","acme","billing","k1","edge-1","invoices","10.0.0.1","curl/8.5.0","GET","/invoices/{id}","invoices:read","allow","ok",500,1]`+"\n",
			newID(), now, oldTok)
		if err := b.Insert(ctx, "usage_events_raw", usageCols, []byte(row), store.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		ledgerCols := []string{"event_id", "time", "type", "token_id", "tenant", "holder", "actor"}
		row = fmt.Sprintf(`["%s","%s","issued","%s","acme","billing","ops"]`+"\n", newID(), now, oldTok)
		if err := b.Insert(ctx, "token_ledger_raw", ledgerCols, []byte(row), store.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			t.Fatalf("open the old database: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		res := queryRows(t, s, "SELECT resource, toString(client), device FROM usage_events WHERE token_id = '"+oldTok+"'")
		if got := fmt.Sprint(res.Rows); got != fmt.Sprint([][]any{{"", "", ""}}) {
			t.Fatalf("old usage row reads %s, want empty context", got)
		}
		res = queryRows(t, s, "SELECT requested_ip, toString(requested_client) FROM token_ledger WHERE token_id = '"+oldTok+"'")
		if got := fmt.Sprint(res.Rows); got != fmt.Sprint([][]any{{"", ""}}) {
			t.Fatalf("old ledger row reads %s, want no issuance context", got)
		}
		if err := s.InsertUsage(ctx, []events.Envelope{ctxUsage(t, time.Now().UTC(), oldTok, "GET", "/invoices/{id}", "42", "curl/8", "", "allow")}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT uniqExact(resource) FROM usage_events WHERE token_id = '"+oldTok+"'"); n != 2 {
			t.Fatalf("%d distinct resources, want 2 ('' and 42)", n)
		}
	})
}
