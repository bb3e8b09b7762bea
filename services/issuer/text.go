package issuer

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
)

// The text forms of the API's replies, for people (`cordon token`, `cordon
// key`); the JSON forms are the replies themselves. Times are UTC, RFC 3339.

// WriteClaims writes a token's context, one dimension a line, indented:
// key, scopes, audience, networks, environment, windows, device,
// break-glass and validity ("any" where the token is not bound).
func (t TokenInfo) WriteClaims(w io.Writer) {
	c := t.Claims
	line := func(k, v string) { fmt.Fprintf(w, "  %-9s %s\n", k, v) }
	line("key", t.KeyID)
	line("scopes", strings.Join(c.Scopes, ", "))
	line("audience", strings.Join(c.Audience, ", "))
	line("networks", orAny(strings.Join(c.Networks, ", ")))
	line("env", orAny(c.Environment))
	var wins []string
	for _, win := range c.Windows {
		wins = append(wins, policy.FormatWindow(token.Window{Days: win.Days, Start: win.Start, End: win.End, Zone: win.Zone}))
	}
	line("windows", orAny(strings.Join(wins, "; ")))
	if c.Device != "" {
		line("device", c.Device)
	}
	if t.BreakGlass {
		line("break-glass", "yes")
	}
	line("valid", fmt.Sprintf("%s → %s (%s)", utc(c.NotBefore), utc(c.Expiry), policy.FormatDuration(c.Expiry.Sub(c.NotBefore))))
}

// WriteSummary writes what was issued, for whoever asked: the token's id,
// holder and claims, never the token itself.
func (r *IssueResponse) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "issued token %s for %s/%s\n", r.ID, r.Tenant, r.Holder)
	r.WriteClaims(w)
}

// WriteSummary writes what a rotation did: both ids, until when the old
// token stays valid, and the successor's claims, never the token itself.
func (r *RotateResponse) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "rotated %s → %s for %s/%s\n", r.Predecessor.ID, r.Successor.ID, r.Successor.Tenant, r.Successor.Holder)
	if r.Predecessor.Status == StatusRevoked {
		fmt.Fprintf(w, "  the old token is revoked\n")
	} else if r.Predecessor.GraceUntil != nil {
		fmt.Fprintf(w, "  the old token stays valid until %s, then is revoked\n", utc(*r.Predecessor.GraceUntil))
	}
	r.Successor.WriteClaims(w)
}

// WriteText writes a token's registry entry: who holds it and its status,
// its claims, issue, rotation and revocation, then its ledger history.
func (d *TokenDetail) WriteText(out io.Writer) error {
	w := &strings.Builder{}
	fmt.Fprintf(w, "token %s for %s/%s: %s\n", d.ID, d.Tenant, d.Holder, d.Status)
	d.WriteClaims(w)
	fmt.Fprintf(w, "  issued    %s by %s\n", utc(d.IssuedAt), d.IssuedBy)
	if d.RotatedFrom != "" {
		fmt.Fprintf(w, "  rotated from %s\n", d.RotatedFrom)
	}
	switch {
	case d.SuccessorID != "" && d.GraceUntil != nil:
		fmt.Fprintf(w, "  successor %s (grace until %s)\n", d.SuccessorID, utc(*d.GraceUntil))
	case d.SuccessorID != "":
		fmt.Fprintf(w, "  successor %s\n", d.SuccessorID)
	}
	if d.RevokedAt != nil {
		fmt.Fprintf(w, "  revoked   %s by %s: %s\n", utc(*d.RevokedAt), d.RevokedBy, d.RevokeReason)
	}
	fmt.Fprintln(w, "history:")
	for _, h := range d.History {
		fmt.Fprintf(w, "  #%-6d %s  %-14s %s\n", h.Seq, utc(h.Time), h.Type, h.Source)
	}
	_, err := io.WriteString(out, w.String())
	return err
}

// WriteText writes the tokens as a table: id, tenant/holder, status, key,
// expiry and scopes.
func (l *TokenList) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT/HOLDER\tSTATUS\tKEY\tEXPIRES\tSCOPES")
	for _, t := range l.Tokens {
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\n", t.ID, t.Tenant, t.Holder, t.Status, t.KeyID, utc(t.Claims.Expiry),
			strings.Join(t.Claims.Scopes, ","))
	}
	return tw.Flush()
}

// WriteText writes the keys as a table: key id, creation, whether it is the
// active one, whether verifiers accept it, its live tokens and what is
// wrong with it.
func (l *KeyList) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tCREATED\tACTIVE\tACCEPTED\tLIVE TOKENS\tNOTE")
	for _, k := range l.Keys {
		active, accepted := "", "no"
		if k.Active {
			active = "yes"
		}
		if k.Accepted {
			accepted = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", k.KeyID, utc(k.Created), active, accepted, k.LiveTokens, k.Problem)
	}
	return tw.Flush()
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}
