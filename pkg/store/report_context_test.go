package store_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// TestReportResourcesAndClients: the token report lists, per route, the
// distinct resources the token named (bounded), and its clients and
// devices; the grant says where it was requested from.
func TestReportResourcesAndClients(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		tok, other := newID(), newID()
		device := strings.Repeat("ab", 32)
		iss := issued(t, day0, tok, "billing", []string{"invoices:read"})
		iss.Data.(*events.TokenIssued).Requested = &events.IssuanceContext{SourceIP: "10.20.1.7", Client: "Boto3/1"}
		evs := []events.Envelope{iss}
		at := day0.Add(time.Hour)
		next := func() time.Time { at = at.Add(time.Millisecond); return at }
		// 60 distinct invoices read once each, invoice 7 four more times
		// (once denied); 3 PDFs; a sweep on DELETE; a route without
		// parameters; another token's reads.
		for i := range 60 {
			evs = append(evs, ctxUsage(t, next(), tok, "GET", "/invoices/{id}", fmt.Sprint(i), "curl/8", "", "allow"))
		}
		for i := range 4 {
			d := events.DecisionAllow
			if i == 3 {
				d = events.DecisionDeny
			}
			evs = append(evs, ctxUsage(t, next(), tok, "GET", "/invoices/{id}", "7", "Chrome/124", device, d))
		}
		for _, id := range []string{"1", "2", "3"} {
			evs = append(evs, ctxUsage(t, next(), tok, "GET", "/invoices/{id}/pdf", id, "curl/8", "", "allow"))
		}
		evs = append(evs,
			ctxUsage(t, next(), tok, "DELETE", "/invoices/{id}", "9", "curl/8", "", "deny"),
			ctxUsage(t, next(), tok, "GET", "/invoices", "", "curl/8", "", "allow"),
			ctxUsage(t, next(), other, "GET", "/invoices/{id}", "999", "okhttp/4", "", "allow"),
		)
		for range 2 {
			if err := s.Insert(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := s.TokenReport(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Grant == nil || rep.Grant.RequestedIP != "10.20.1.7" || rep.Grant.RequestedClient != "Boto3/1" {
			t.Fatalf("grant %+v: want requested from 10.20.1.7 with Boto3/1", rep.Grant)
		}
		if len(rep.Resources) != 3 {
			t.Fatalf("resources on %d routes, want 3: %+v", len(rep.Resources), rep.Resources)
		}
		inv := rep.Resources[0]
		if inv.Method != "GET" || inv.Route != "/invoices/{id}" || inv.Requests != 64 || inv.Distinct != 60 || len(inv.Resources) != 50 {
			t.Fatalf("GET /invoices/{id}: %s %s %d requests, %d distinct, %d listed; want 64, 60, 50",
				inv.Method, inv.Route, inv.Requests, inv.Distinct, len(inv.Resources))
		}
		if inv.Resources[0] != (store.UsageCount{Value: "7", Requests: 5, Allowed: 4, Denied: 1}) {
			t.Fatalf("busiest invoice %+v, want 7 with 5 requests (1 denied)", inv.Resources[0])
		}
		for _, r := range inv.Resources {
			if r.Value == "999" {
				t.Fatal("another token's resource is in the report")
			}
		}
		pdf := rep.Resources[1]
		if pdf.Route != "/invoices/{id}/pdf" || pdf.Distinct != 3 || !slices.Equal(values(pdf.Resources), []string{"1", "2", "3"}) {
			t.Fatalf("pdf route: %+v", pdf)
		}
		if del := rep.Resources[2]; del.Method != "DELETE" || del.Distinct != 1 || del.Resources[0] != (store.UsageCount{Value: "9", Requests: 1, Denied: 1}) {
			t.Fatalf("delete route: %+v", del)
		}
		wantClients := []store.UsageCount{{"curl/8", 65, 64, 1}, {"Chrome/124", 4, 3, 1}}
		if !slices.Equal(rep.Clients, wantClients) {
			t.Fatalf("clients %v, want %v", rep.Clients, wantClients)
		}
		wantDevices := []store.UsageCount{{"", 65, 64, 1}, {device, 4, 3, 1}}
		if !slices.Equal(rep.Devices, wantDevices) {
			t.Fatalf("devices %v, want %v", rep.Devices, wantDevices)
		}
	})
}

func values(cs []store.UsageCount) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Value)
	}
	slices.Sort(out)
	return out
}
