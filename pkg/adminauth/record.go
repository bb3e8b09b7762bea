package adminauth

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// iatSlack is how much later than its issue event a token may say it was
// issued: the issuer stamps iat before it records the event, so a genuine
// token is never later; a second of slack absorbs rounding.
const iatSlack = 1

// Record is what the ledger holds about one token: the claims recorded
// when it was issued and what happened to it since.
type Record struct {
	TokenID    string
	Tenant     string
	Holder     string
	KeyID      string
	Claims     events.TokenClaims
	BreakGlass bool
	// IssuedAt is the time of the issue event (zero when unknown). A token
	// claiming a later issue time is not the token the ledger recorded: a
	// later iat would slip past "revoke everything issued before".
	IssuedAt time.Time
	// Revoked is set once a revocation covers the token.
	Revoked bool
	// ExpiryRecorded is set once the ledger recorded the token's expiry.
	ExpiryRecorded bool
	// SuccessorID and GraceUntil are set once the token was rotated: it
	// stays valid until GraceUntil.
	SuccessorID string
	GraceUntil  time.Time
}

// LedgerClaims is what the ledger records of a token's claims when it is
// issued (never the token): the form Diff compares a presented token with.
func LedgerClaims(c token.Claims) events.TokenClaims {
	out := events.TokenClaims{
		Scopes: slices.Clone(c.Scopes), Audience: slices.Clone(c.Audience), Environment: c.Environment,
		Device: c.Device, NotBefore: time.Unix(c.NotBefore, 0).UTC(), Expiry: time.Unix(c.Expiry, 0).UTC(),
	}
	for _, n := range c.Networks {
		out.Networks = append(out.Networks, n.String())
	}
	for _, w := range c.Windows {
		out.Windows = append(out.Windows, events.Window{Days: slices.Clone(w.Days), Start: w.Start, End: w.End, Zone: w.Zone})
	}
	return out
}

// RecordOf is the record of a TokenIssued event published at at.
func RecordOf(p *events.TokenIssued, at time.Time) Record {
	return Record{
		TokenID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, KeyID: p.KeyID,
		Claims: cloneClaims(p.Claims), BreakGlass: p.BreakGlass, IssuedAt: at,
	}
}

// Diff names the claims of t that differ from what the ledger recorded,
// in a fixed order; none means t is the token the ledger knows.
func (r *Record) Diff(t *token.Token) []string {
	var d []string
	check := func(same bool, claim string) {
		if !same {
			d = append(d, claim)
		}
	}
	check(t.ID == r.TokenID, "jti")
	check(t.Tenant == r.Tenant, "tenant")
	check(t.Holder == r.Holder, "holder")
	check(t.KeyID == r.KeyID, "kid")
	check(slices.Equal(t.Scopes, r.Claims.Scopes), "scopes")
	check(slices.Equal(t.Audience, r.Claims.Audience), "audience")
	check(sameNetworks(t.Networks, r.Claims.Networks), "networks")
	check(t.Environment == r.Claims.Environment, "environment")
	check(sameWindows(t.Windows, r.Claims.Windows), "windows")
	check(t.Device == r.Claims.Device, "device")
	check(t.NotBefore == unix(r.Claims.NotBefore), "nbf")
	check(t.Expiry == unix(r.Claims.Expiry), "exp")
	check(t.BreakGlass == r.BreakGlass, "break_glass")
	check(r.IssuedAt.IsZero() || t.IssuedAt <= r.IssuedAt.Unix()+iatSlack, "iat")
	return d
}

// refusal says why the ledger no longer accepts the token at now; empty
// when it does.
func (r *Record) refusal(now time.Time) string {
	switch {
	case r.Revoked:
		return "is revoked"
	case r.ExpiryRecorded || !now.Before(r.Claims.Expiry):
		return "has expired"
	case r.SuccessorID != "" && !now.Before(r.GraceUntil):
		return fmt.Sprintf("was rotated to %s and its grace period ended at %s", r.SuccessorID, r.GraceUntil.UTC().Format(time.RFC3339))
	}
	return ""
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func sameNetworks(got []netip.Prefix, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].String() != want[i] {
			return false
		}
	}
	return true
}

func sameWindows(got []token.Window, want []events.Window) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if !slices.Equal(g.Days, w.Days) || g.Start != w.Start || g.End != w.End || g.Zone != w.Zone {
			return false
		}
	}
	return true
}

func cloneClaims(c events.TokenClaims) events.TokenClaims {
	c.Scopes = slices.Clone(c.Scopes)
	c.Audience = slices.Clone(c.Audience)
	c.Networks = slices.Clone(c.Networks)
	ws := make([]events.Window, len(c.Windows))
	for i, w := range c.Windows {
		w.Days = slices.Clone(w.Days)
		ws[i] = w
	}
	if c.Windows != nil {
		c.Windows = ws
	}
	return c
}

// clone returns a copy that shares no slices with r.
func (r Record) clone() Record {
	r.Claims = cloneClaims(r.Claims)
	return r
}
