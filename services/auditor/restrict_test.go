package auditor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestGraduatedResponseLedger: the graduated response's ledger events
// (restricted: narrow, step_up, shadow; released) published on the TOKENS
// stream are written to token_ledger by the auditor, none dead-lettered,
// with the partitioned detectors running over them.
func TestGraduatedResponseLedger(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "graduated")
	ctx := context.Background()

	now := time.Now().UTC().Truncate(time.Second)
	tok := uuid.Must(uuid.NewV7()).String()
	exp := now.Add(24 * time.Hour)
	payloads := []events.Payload{
		&events.TokenIssued{TokenID: tok, Tenant: "acme", Holder: "billing-api", KeyID: "k1", Actor: "ops",
			Claims: events.TokenClaims{Scopes: []string{"invoices:read", "invoices:write"}, Audience: []string{"invoices"}, NotBefore: now.Add(-time.Hour), Expiry: exp}},
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing-api", KeyID: "k1", Step: events.StepNarrow, Until: now.Add(time.Hour),
			Scopes: []string{"invoices:read"}, Networks: []string{"10.0.0.0/8"}, Actor: "revoker/auditor", Reason: "new_network anomaly",
			Rule: "quarantine-new-network", AnomalyID: "an-1", Risk: 0.75, Expiry: exp},
		&events.TokenReleased{TokenID: tok, Tenant: "acme", Holder: "billing-api", Step: events.StepNarrow, Actor: "ops", Reason: "false alarm"},
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing-api", Step: events.StepStepUp, Until: now.Add(2 * time.Hour),
			Actor: "ops", Reason: "device check", Expiry: exp},
		&events.TokenRestricted{TokenID: tok, Tenant: "acme", Holder: "billing-api", Step: events.StepShadow, Would: events.StepRevoke,
			Actor: "revoker/auditor", Reason: "impossible travel", Rule: "revoke-travel", Risk: 0.5, Expiry: exp},
	}
	for i, p := range payloads {
		e, err := events.New("revoker/test", now.Add(time.Duration(i)*time.Minute), p)
		if err != nil {
			t.Fatal(err)
		}
		data, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.JS.Publish(ctx, events.Subject(e), data, jetstream.WithMsgID(e.MsgID())); err != nil {
			t.Fatal(err)
		}
	}

	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		BatchWait: 20 * time.Millisecond,
		NewDetector: func(p, parts int) (auditor.Detector, error) {
			return detect.New(auditor.PartitionBounds(detect.DefaultConfig(), parts))
		}})
	natstest.WaitFor(t, 20*time.Second, func() error {
		if st := a.Stats(); st.Ledger != uint64(len(payloads)) || st.Dead != 0 || st.SeenLedgerSeq < uint64(len(payloads)) {
			return fmt.Errorf("auditor stats %+v", st)
		}
		return nil
	})
	res, err := s.Query(ctx, "SELECT toString(type), toString(step), toString(would), until, arrayMap(x -> toString(x), scopes), networks, "+
		"toString(actor), reason, rule, risk, anomaly_id, exp FROM token_ledger WHERE token_id = '"+tok+"' ORDER BY time")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{
		{"issued", "", "", nil, []any{"invoices:read", "invoices:write"}, []any{}, "ops", "", "", 0.0, "", exp},
		{"restricted", "narrow", "", now.Add(time.Hour), []any{"invoices:read"}, []any{"10.0.0.0/8"}, "revoker/auditor", "new_network anomaly",
			"quarantine-new-network", 0.75, "an-1", exp},
		{"released", "narrow", "", nil, []any{}, []any{}, "ops", "false alarm", "", 0.0, "", nil},
		{"restricted", "step_up", "", now.Add(2 * time.Hour), []any{}, []any{}, "ops", "device check", "", 0.0, "", exp},
		{"restricted", "shadow", "revoke", nil, []any{}, []any{}, "revoker/auditor", "impossible travel", "revoke-travel", 0.5, "", exp},
	}
	if got := fmt.Sprint(res.Rows); got != fmt.Sprint(want) {
		t.Fatalf("token_ledger rows\n got %v\nwant %v", got, want)
	}
}
