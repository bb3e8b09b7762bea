package revoker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	tokpolicy "github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestDefaultTokenLifeCoversLongestToken: without MaxTokenTTL, the
// revoker's token-life window is the token policy's MaxTokenLife — the
// built-in admin ceiling's when no policy is known. A revoker that starts
// long after a long-lived token was issued still indexes it, and a
// holder-wide rule lasts as long as that token lives.
func TestDefaultTokenLifeCoversLongestToken(t *testing.T) {
	archive, err := tokpolicy.Parse("archive.yaml", []byte("version: 1\nholders:\n"+
		"  - {tenant: acme, holder: archive, scopes: [archive:read], audiences: [archive], max_ttl: 180d}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		tokens         *tokpolicy.Policy
		tenant, holder string
		life, later    time.Duration
	}{
		{"no token policy: the admin ceiling", nil, events.AdminTenant, events.AdminHolder, tokpolicy.AdminMaxTTL, 30 * 24 * time.Hour},
		{"a holder longer than the admin ceiling", archive, "acme", "archive", 180 * 24 * time.Hour, 120 * 24 * time.Hour},
		{"the admin ceiling under a policy of short holders", mustParse(t, "acme", "billing", "24h"), events.AdminTenant, events.AdminHolder, tokpolicy.AdminMaxTTL, 60 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fixture{t: t, env: natstest.Run(t), now: time.Now()}
			tok := f.issue(tt.tenant, tt.holder, "k1", 0, tt.life, false)
			r, err := revoker.New(revoker.Options{NC: f.env.NC, JS: f.env.JS, TokenPolicy: tt.tokens, Source: "revoker/test",
				Now: func() time.Time { return time.Now().Add(tt.later) }, TrustAnchors: f.env.Anchors(), Log: zerolog.New(zerolog.NewTestWriter(t))})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Start(f.ctx()); err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f.r = r
			f.waitKnown(tok)
			res, err := r.Revoke(f.ctx(), revoker.Request{Kind: events.RevokeHolder, Tenant: tt.tenant, Holder: tt.holder, Actor: "oncall", Reason: "incident"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Revoked) != 1 || res.Revoked[0] != tok.id {
				t.Errorf("revoked %v, want the live token %s", res.Revoked, tok.id)
			}
			rule := f.rule(events.DenyKeyHolder(tt.tenant, tt.holder))
			if rule.Expiry.Before(tok.expiry) {
				t.Fatalf("the holder-wide rule ends %s, before the token it revokes (%s)", rule.Expiry.UTC().Format(time.RFC3339), tok.expiry.UTC().Format(time.RFC3339))
			}
		})
	}
}

func mustParse(t *testing.T, tenant, holder, ttl string) *tokpolicy.Policy {
	t.Helper()
	p, err := tokpolicy.Parse("test.yaml", []byte("version: 1\nholders:\n  - {tenant: "+tenant+", holder: "+holder+
		", scopes: [x:read], audiences: [x], max_ttl: "+ttl+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rule reads a denylist rule.
func (f *fixture) rule(key string) events.DenyRecord {
	f.t.Helper()
	kv, err := f.env.JS.KeyValue(f.ctx(), events.BucketDenylist)
	if err != nil {
		f.t.Fatal(err)
	}
	e, err := kv.Get(f.ctx(), key)
	if err != nil {
		f.t.Fatalf("rule %s: %v", key, err)
	}
	var rec events.DenyRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		f.t.Fatal(err)
	}
	return rec
}
