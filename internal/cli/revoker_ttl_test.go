package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestStandaloneRevokerHolderRuleOutlivesAdminToken: a revoker configured
// as `cordon revoker --policy deploy/compose/policy.yaml` configures it
// (holders of 24h and 6h; no --max-token-ttl, as compose passes none)
// restarts 30 days after the bootstrap admin token (90 days) was issued,
// and on-call revokes the admin holder. The rule must deny that token for
// as long as it lives: a 24h token-life window neither indexed the token
// nor kept the rule for more than a day.
func TestStandaloneRevokerHolderRuleOutlivesAdminToken(t *testing.T) {
	// The window `cordon revoker --policy FILE --check-config` reports is
	// the one the service runs with (revoker.Config).
	cfg := revoker.Config{PolicyFile: filepath.Join("..", "..", "deploy", "compose", "policy.yaml")}
	line, err := cfg.Check()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(line, "max token ttl ")
	window, _, _ := strings.Cut(rest, ";")
	maxTTL, perr := time.ParseDuration(window)
	if !ok || perr != nil {
		t.Fatalf("check-config line %q names no token-life window", line)
	}
	nt := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nt.PublishKey(t, signer)
	issued := time.Now().Truncate(time.Second)
	admin := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: events.AdminTenant, Holder: events.AdminHolder,
		Scopes: events.AdminScopes(), Audience: []string{events.AdminAudience},
		IssuedAt: issued.Unix(), NotBefore: issued.Unix(), Expiry: issued.Add(policy.AdminMaxTTL).Unix()}
	recordIssued(t, nt.JS, signer.KeyID, admin)

	later := func() time.Time { return time.Now().Add(30 * 24 * time.Hour) }
	r, err := revoker.New(revoker.Options{NC: nt.NC, JS: nt.JS, MaxTokenTTL: maxTTL, Now: later, Source: "revoker/test",
		TrustAnchors: nt.Anchors(), Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := r.Revoke(ctx, revoker.Request{Kind: events.RevokeHolder, Tenant: events.AdminTenant, Holder: events.AdminHolder,
		Actor: "oncall", Reason: "admin workstation stolen"})
	if err != nil {
		t.Fatal(err)
	}
	key := events.DenyKeyHolder(events.AdminTenant, events.AdminHolder)
	if len(res.Rules) != 1 || res.Rules[0] != key {
		t.Fatalf("revocation %+v wrote no holder rule %s", res, key)
	}
	kv, err := nt.JS.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var rule events.DenyRecord
	if err := json.Unmarshal(e.Value(), &rule); err != nil {
		t.Fatal(err)
	}
	if expiry := time.Unix(admin.Expiry, 0); rule.Expiry.Before(expiry) {
		t.Fatalf("the holder-wide rule ends %s, the admin token it revokes lives until %s: it would be accepted again for %s (token-life window %s)",
			rule.Expiry.UTC().Format(time.RFC3339), expiry.UTC().Format(time.RFC3339), expiry.Sub(rule.Expiry).Round(time.Hour), maxTTL)
	}
}
