package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// graduated is one token's graduated response, as the revoker records it:
// its issue, an automatic quarantine, a step-up by hand and its release,
// and a shadow step (a rule that would have revoked it).
type graduated struct {
	tok                            string
	issued, narrow, stepUp, shadow events.Envelope
	released                       events.Envelope
}

func newGraduated(t testing.TB, at time.Time) graduated {
	tok := newID()
	exp := at.Add(30 * 24 * time.Hour)
	return graduated{
		tok:    tok,
		issued: issued(t, at, tok, "billing", []string{"invoices:read", "invoices:write"}),
		narrow: mustEnvelope(t, at.Add(time.Hour), &events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1",
			Step: events.StepNarrow, Until: at.Add(2 * time.Hour), Scopes: []string{"invoices:read"},
			Networks: []string{"10.0.0.0/8", "2001:db8::/32"}, Actor: "revoker/auditor", Reason: "new_network anomaly",
			Rule: "quarantine-new-network", AnomalyID: "an-7", Risk: 0.87, Expiry: exp}),
		stepUp: mustEnvelope(t, at.Add(3*time.Hour), &events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing",
			Step: events.StepStepUp, Until: at.Add(4 * time.Hour), Actor: "ops@example.com", Reason: "laptop reported lost", Expiry: exp}),
		released: mustEnvelope(t, at.Add(3*time.Hour+30*time.Minute), &events.TokenReleased{TokenID: tok, Tenant: "acme", Holder: "billing",
			Step: events.StepStepUp, Actor: "ops@example.com", Reason: "laptop found"}),
		shadow: mustEnvelope(t, at.Add(5*time.Hour), &events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1",
			Step: events.StepShadow, Would: events.StepRevoke, Actor: "revoker/auditor", Reason: "impossible travel",
			Rule: "revoke-travel", AnomalyID: "an-8", Risk: 0.5, Expiry: exp}),
	}
}

// ledger is every event, oldest first.
func (g graduated) ledger() []events.Envelope {
	return []events.Envelope{g.issued, g.narrow, g.stepUp, g.released, g.shadow}
}

// ledgerRowColumns are the token_ledger columns checkGraduatedRows reads,
// every column a restricted or released event sets.
var ledgerRowColumns = []string{"event_id", "time", "type", "token_id", "tenant", "holder", "kid", "step", "would", "until",
	"scopes", "networks", "actor", "reason", "rule", "risk", "anomaly_id", "exp"}

// wantLedgerRow is what token_ledger must hold for a restricted or
// released event, in the order of ledgerRowColumns, as Result cells.
func wantLedgerRow(e events.Envelope) []any {
	strs := func(s []string) []any {
		out := []any{}
		for _, v := range s {
			out = append(out, v)
		}
		return out
	}
	opt := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.UTC()
	}
	switch p := e.Data.(type) {
	case *events.TokenRestricted:
		return []any{e.ID.String(), e.Time.UTC(), "restricted", p.TokenID, p.Tenant, p.Holder, p.KeyID, p.Step, p.Would, opt(p.Until),
			strs(p.Scopes), strs(p.Networks), p.Actor, p.Reason, p.Rule, p.Risk, p.AnomalyID, opt(p.Expiry)}
	case *events.TokenReleased:
		return []any{e.ID.String(), e.Time.UTC(), "released", p.TokenID, p.Tenant, p.Holder, "", p.Step, "", nil,
			[]any{}, []any{}, p.Actor, p.Reason, "", 0.0, "", nil}
	}
	panic(fmt.Sprintf("not a graduated response event: %T", e.Data))
}

// checkGraduatedRows reads the restricted and released rows of tok from
// token_ledger and compares every column with the events (risk as the
// Float32 it is stored as).
func checkGraduatedRows(t *testing.T, s *store.Store, tok string, want []events.Envelope) {
	t.Helper()
	sel := make([]string, len(ledgerRowColumns))
	for i, c := range ledgerRowColumns {
		switch c {
		case "event_id", "type", "tenant", "holder", "kid", "step", "would", "actor":
			sel[i] = "toString(" + c + ")"
		case "scopes":
			sel[i] = "arrayMap(x -> toString(x), scopes)"
		default:
			sel[i] = c
		}
	}
	res := queryRows(t, s, "SELECT "+strings.Join(sel, ", ")+" FROM token_ledger WHERE token_id = '"+tok+
		"' AND type IN ('restricted', 'released') ORDER BY time")
	if len(res.Rows) != len(want) {
		t.Fatalf("token_ledger holds %d restricted and released rows of the token, want %d: %v", len(res.Rows), len(want), res.Rows)
	}
	for i, e := range want {
		w, got := wantLedgerRow(e), res.Rows[i]
		for j, c := range ledgerRowColumns {
			if c == "risk" {
				if g, ok := got[j].(float64); !ok || float32(g) != float32(w[j].(float64)) {
					t.Errorf("%s row %d: risk = %v (%T), want %v as Float32", e.Type, i, got[j], got[j], w[j])
				}
				continue
			}
			if fmt.Sprint(got[j]) != fmt.Sprint(w[j]) {
				t.Errorf("%s row %d: %s = %v, want %v", e.Type, i, c, got[j], w[j])
			}
		}
	}
}

// TestGraduatedResponseLedger: restricted events (narrow, step_up, shadow)
// and a released event land in token_ledger with every field, once however
// often and however batched they are written, and the token report shows
// them.
func TestGraduatedResponseLedger(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		g := newGraduated(t, day0)
		use := usage(t, day0.Add(90*time.Minute), g.tok, "billing", "invoices:read", "10.0.0.1", "allow", "ok")
		// A mixed batch (routed by type), a redelivered part through the
		// ledger entry point, then everything again.
		if err := s.Insert(ctx, append(g.ledger(), use)); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertLedger(ctx, g.ledger()[1:4]); err != nil {
			t.Fatal(err)
		}
		if err := s.Insert(ctx, append(g.ledger(), use)); err != nil {
			t.Fatal(err)
		}
		checkGraduatedRows(t, s, g.tok, []events.Envelope{g.narrow, g.stepUp, g.released, g.shadow})
		for _, tc := range []struct {
			where string
			want  uint64
		}{
			{"", 5},
			{"type = 'restricted'", 3},
			{"type = 'released'", 1},
			{"type = 'restricted' AND step = 'narrow'", 1},
			{"step = 'step_up'", 2}, // the step-up and its release
			{"would = 'revoke'", 1},
			{"until IS NOT NULL", 2},
			{"has(networks, '2001:db8::/32')", 1},
		} {
			q := "SELECT count() FROM token_ledger WHERE token_id = '" + g.tok + "'"
			if tc.where != "" {
				q += " AND " + tc.where
			}
			if got := count(t, s, q); got != tc.want {
				t.Errorf("%s = %d, want %d", q, got, tc.want)
			}
		}

		rep, err := s.TokenReport(ctx, g.tok)
		if err != nil {
			t.Fatal(err)
		}
		types := []string{}
		for _, l := range rep.Ledger {
			types = append(types, l.Type)
		}
		if want := []string{"issued", "restricted", "restricted", "released", "restricted"}; !slices.Equal(types, want) {
			t.Fatalf("report ledger %v, want %v", types, want)
		}
		// A restriction is not a status (TestLedgerStatus): the token's
		// expiry, long past, decides.
		if rep.Status != "expired" || rep.Grant == nil || rep.Grant.EventID != g.issued.ID.String() || rep.Requests != 1 {
			t.Errorf("status %q grant %+v requests %d: want expired, the issue, 1", rep.Status, rep.Grant, rep.Requests)
		}
		n, p := rep.Ledger[1], g.narrow.Data.(*events.TokenRestricted)
		if n.Step != events.StepNarrow || !n.Until.Equal(p.Until) || !slices.Equal(n.Scopes, p.Scopes) || !slices.Equal(n.Networks, p.Networks) ||
			n.Rule != p.Rule || float32(n.Risk) != float32(p.Risk) || n.AnomalyID != p.AnomalyID || !n.Expiry.Equal(p.Expiry) ||
			n.Actor != p.Actor || n.Reason != p.Reason || n.KeyID != p.KeyID {
			t.Errorf("report's quarantine %+v, want %+v", n, p)
		}
		if sh := rep.Ledger[4]; sh.Step != events.StepShadow || sh.Would != events.StepRevoke || !sh.Until.IsZero() {
			t.Errorf("report's shadow step %+v", sh)
		}
		if r := rep.Ledger[3]; r.Step != events.StepStepUp || r.Actor != "ops@example.com" || r.Reason != "laptop found" || !r.Expiry.IsZero() {
			t.Errorf("report's release %+v", r)
		}
		var text strings.Builder
		if err := rep.WriteText(&text, day0.Add(6*time.Hour)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"  narrowed    2026-03-02T01:00:00Z by revoker/auditor until 2026-03-02T02:00:00Z: new_network anomaly " +
				"(keeps scopes invoices:read from 10.0.0.0/8, 2001:db8::/32) (rule quarantine-new-network, risk 0.87, anomaly an-7)\n",
			"  step-up     2026-03-02T03:00:00Z by ops@example.com until 2026-03-02T04:00:00Z: laptop reported lost\n",
			"  released    2026-03-02T03:30:00Z by ops@example.com: step_up lifted: laptop found\n",
			"  shadow      2026-03-02T05:00:00Z by revoker/auditor: would revoke: impossible travel (rule revoke-travel, risk 0.5, anomaly an-8)\n",
		} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("report text lacks %q:\n%s", want, text.String())
			}
		}
	})
}

// TestGraduatedResponseMigration: migration 0009 on a database created at
// 0008: before it the ledger's type cannot say 'restricted'; after it the
// old rows read with the new columns empty, the new events are stored
// with every field, and applying its statements again changes nothing.
func TestGraduatedResponseMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		migrateBefore(t, b, db, 9)
		oldTok := newID()
		cols := []string{"event_id", "time", "type", "token_id", "tenant", "holder", "actor", "reason", "kind", "exp"}
		old := func(typ string) []byte {
			return fmt.Appendf(nil, `["%s","2026-03-01 10:00:00.000000","%s","%s","acme","billing","ops","old","token","2026-04-01 00:00:00.000000"]`+"\n",
				newID(), typ, oldTok)
		}
		if err := b.Insert(ctx, "token_ledger_raw", cols, old("restricted"), store.InsertOptions{}); err == nil {
			t.Fatal("before 0009, token_ledger_raw took a 'restricted' row: the migration would prove nothing")
		}
		if err := b.Insert(ctx, "token_ledger_raw", cols, old("revoked"), store.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			t.Fatalf("open the database at 0008: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		applied, err := s.AppliedMigrations(ctx)
		if err != nil || len(applied) == 0 || applied[len(applied)-1].Version < 9 {
			t.Fatalf("applied migrations %+v, %v: want 0009", applied, err)
		}
		oldRow := "SELECT toString(type), toString(step), toString(would), until, rule, risk, reason FROM token_ledger WHERE token_id = '" + oldTok + "'"
		wantOld := fmt.Sprint([][]any{{"revoked", "", "", nil, "", 0.0, "old"}})
		if got := fmt.Sprint(queryRows(t, s, oldRow).Rows); got != wantOld {
			t.Fatalf("the old row reads %s, want %s", got, wantOld)
		}

		g := newGraduated(t, day0)
		if err := s.InsertLedger(ctx, g.ledger()); err != nil {
			t.Fatal(err)
		}
		checkGraduatedRows(t, s, g.tok, []events.Envelope{g.narrow, g.stepUp, g.released, g.shadow})

		ms, err := store.Migrations(db)
		if err != nil {
			t.Fatal(err)
		}
		if ms[8].Version != 9 {
			t.Fatalf("migration 9 is %s", ms[8].Name)
		}
		for _, stmt := range ms[8].Statements {
			if err := b.Exec(ctx, stmt); err != nil {
				t.Fatalf("re-running 0009: %v", err)
			}
		}
		checkGraduatedRows(t, s, g.tok, []events.Envelope{g.narrow, g.stepUp, g.released, g.shadow})
		if got := fmt.Sprint(queryRows(t, s, oldRow).Rows); got != wantOld {
			t.Fatalf("after re-running 0009 the old row reads %s, want %s", got, wantOld)
		}
		if n := count(t, s, "SELECT count() FROM token_ledger"); n != 6 {
			t.Errorf("token_ledger holds %d rows, want 6 (the old one and 5)", n)
		}
	})
}

// TestLedgerColumnsMatchTable: the ledger encoder writes every column of
// token_ledger_raw after the migrations, and no other; the table's type
// enum has a value for every event type TableFor sends to it. A migration
// that adds a ledger column, or a ledger type routed to the table, fails
// it until both sides agree.
func TestLedgerColumnsMatchTable(t *testing.T) {
	db := fmt.Sprintf("t%d_ledger_columns", dbSeq.Add(1))
	_, b := openStore(t, engines()[0], db, store.Options{})
	out, err := b.Query(t.Context(), "SELECT name, type FROM system.columns WHERE database = '"+db+"' AND table = 'token_ledger_raw' ORDER BY position", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		t.Fatal(err)
	}
	var table []string
	var enum string
	for _, r := range res.Rows {
		table = append(table, r[0].(string))
		if r[0] == "type" {
			enum = r[1].(string)
		}
	}
	// Rows travel with their column names: the order does not matter.
	written := slices.Sorted(slices.Values(store.LedgerColumns()))
	if slices.Sort(table); !slices.Equal(table, written) {
		t.Errorf("token_ledger_raw has columns\n%v\nthe encoder writes\n%v", table, written)
	}
	all := []events.Type{events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired,
		events.TypeTokenRestricted, events.TypeTokenReleased, events.TypeKeyPublished, events.TypeKeyRetired,
		events.TypeUsageDecided, events.TypeAnomalyDetected, events.TypePolicyChanged}
	var ledger []string
	for _, typ := range all {
		if tb, ok := store.TableFor(typ); ok && tb == "token_ledger_raw" {
			ledger = append(ledger, string(typ))
			name := strings.TrimPrefix(string(typ), "token.")
			if !strings.Contains(enum, "'"+name+"' = ") {
				t.Errorf("%s goes to token_ledger_raw, whose type %s has no '%s'", typ, enum, name)
			}
		}
	}
	want := []string{"token.issued", "token.rotated", "token.revoked", "token.expired", "token.restricted", "token.released"}
	if !slices.Equal(ledger, want) {
		t.Errorf("TableFor sends %v to token_ledger_raw, want %v", ledger, want)
	}
}
