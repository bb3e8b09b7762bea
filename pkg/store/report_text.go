package store

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// The text forms of the analyst replies (`cordon anomalies`, `cordon report
// token`); Result.Write is the one of a query.

// WriteAnomalies writes anomalies for people and programs: FormatTable (an
// aligned table, evidence clipped to 60 characters, then "(N anomalies)"),
// FormatCSV (every field, a header line first) or FormatJSON (an indented
// array, [] when there are none); "" means FormatTable.
func WriteAnomalies(w io.Writer, as []Anomaly, format string) error {
	switch format {
	case FormatJSON:
		if as == nil {
			as = []Anomaly{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(as)
	case FormatCSV:
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"detected", "event_time", "detector", "severity", "token_id", "tenant", "holder", "source_ip", "seen", "baseline", "anomaly_id", "event_id"})
		for _, a := range as {
			_ = cw.Write([]string{a.Time.UTC().Format(time.RFC3339Nano), a.EventTime.UTC().Format(time.RFC3339Nano), a.Detector, a.Severity,
				a.TokenID, a.Tenant, a.Holder, a.SourceIP, a.Evidence.Seen, a.Evidence.Baseline, a.AnomalyID, a.EventID})
		}
		cw.Flush()
		return cw.Error()
	case FormatTable, "":
	default:
		return fmt.Errorf("unknown output format %q: use table, csv or json", format)
	}
	if len(as) == 0 {
		_, err := fmt.Fprintln(w, "no anomalies")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDETECTOR\tSEVERITY\tTOKEN\tHOLDER\tSOURCE IP\tSEEN\tBASELINE")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\n", a.EventTime.UTC().Format(time.RFC3339), a.Detector, a.Severity, a.TokenID,
			a.Tenant, a.Holder, a.SourceIP, clipText(a.Evidence.Seen, 60), clipText(a.Evidence.Baseline, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "(%d anomalies)\n", len(as))
	return err
}

// clipText puts s on one line of at most n characters.
func clipText(s string, n int) string {
	s = strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// WriteText writes the report for people: what the token MAY do by its
// ledger (the grant, rotations, restrictions and their release,
// revocation), what it DID (requests by
// scope, service, source, client, device, resource and hour; scopes granted
// but never used and asked for but not granted), its DENIALS by reason and
// its ANOMALIES. now dates the "expires in" of a live grant.
func (r *Report) WriteText(w io.Writer, now time.Time) error {
	var b strings.Builder
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	list := func(s []string) string {
		if len(s) == 0 {
			return "any"
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(&b, "token %s  %s/%s  status: %s\n\n", r.TokenID, orDash(r.Tenant), orDash(r.Holder), r.Status)

	b.WriteString("MAY (the ledger)\n")
	if r.Grant == nil {
		b.WriteString("  no issue record: the token predates the ledger or was never issued by this Cordon\n")
	} else {
		g := r.Grant
		fmt.Fprintf(&b, "  issued      %s by %s (key %s)\n", ts(g.Time), orDash(g.Actor), orDash(g.KeyID))
		if g.RequestedIP != "" || g.RequestedClient != "" {
			fmt.Fprintf(&b, "  requested   from %s with %s\n", orDash(g.RequestedIP), orDash(g.RequestedClient))
		}
		fmt.Fprintf(&b, "  scopes      %s\n", list(g.Scopes))
		fmt.Fprintf(&b, "  audience    %s\n", list(g.Audience))
		fmt.Fprintf(&b, "  networks    %s\n", list(g.Networks))
		if g.Environment != "" {
			fmt.Fprintf(&b, "  environment %s\n", g.Environment)
		}
		for _, win := range g.Windows {
			fmt.Fprintf(&b, "  window      %s %s-%s %s\n", strings.Join(win.Days, ","), win.Start, win.End, win.Zone)
		}
		if g.Device != "" {
			fmt.Fprintf(&b, "  device      %s\n", g.Device)
		}
		valid := "valid " + ts(g.NotBefore) + " → " + ts(g.Expiry)
		if !g.Expiry.IsZero() && g.Expiry.After(now) {
			valid += fmt.Sprintf(" (expires in %s)", g.Expiry.Sub(now).Round(time.Minute))
		}
		fmt.Fprintf(&b, "  %s\n", valid)
		if g.RotatedFrom != "" {
			fmt.Fprintf(&b, "  rotated from %s\n", g.RotatedFrom)
		}
		if g.BreakGlass {
			b.WriteString("  break-glass token\n")
		}
	}
	for _, e := range r.Ledger {
		switch e.Type {
		case "rotated":
			fmt.Fprintf(&b, "  rotated     %s by %s → %s (grace until %s)\n", ts(e.Time), orDash(e.Actor), e.SuccessorID, ts(e.GraceUntil))
		case "revoked":
			fmt.Fprintf(&b, "  revoked     %s by %s: %s", ts(e.Time), orDash(e.Actor), orDash(e.Reason))
			if e.AnomalyID != "" {
				fmt.Fprintf(&b, " (anomaly %s)", e.AnomalyID)
			}
			b.WriteByte('\n')
		case "expired":
			fmt.Fprintf(&b, "  expired     %s\n", ts(e.Time))
		case "restricted":
			writeRestricted(&b, e, ts)
		case "released":
			fmt.Fprintf(&b, "  released    %s by %s: %s lifted: %s\n", ts(e.Time), orDash(e.Actor), orDash(e.Step), orDash(e.Reason))
		}
	}

	fmt.Fprintf(&b, "\nDID (usage)\n  %d requests: %d allowed, %d denied", r.Requests, r.Allowed, r.Denied)
	if r.Requests > 0 {
		fmt.Fprintf(&b, "; first %s, last %s", ts(r.FirstSeen), ts(r.LastSeen))
	}
	b.WriteByte('\n')
	counts := func(title string, cs []UsageCount) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(&b, "  %s\n", title)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, c := range cs {
			v := c.Value
			if v == "" {
				v = "(none)"
			}
			fmt.Fprintf(tw, "    %s\t%d requests\t%d allowed\t%d denied\t\n", v, c.Requests, c.Allowed, c.Denied)
		}
		_ = tw.Flush()
	}
	counts("scopes", r.Scopes)
	counts("services", r.Services)
	counts("source IPs", r.SourceIPs)
	if named(r.Clients) {
		counts("clients", r.Clients)
	}
	if named(r.Devices) {
		counts("devices (client certificate)", r.Devices)
	}
	if len(r.Resources) > 0 {
		b.WriteString("  resources by route\n")
		for _, rr := range r.Resources {
			fmt.Fprintf(&b, "    %s %s: %d distinct in %d requests\n", rr.Method, rr.Route, rr.Distinct, rr.Requests)
			shown := rr.Resources[:min(len(rr.Resources), reportResourcesShown)]
			tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
			for _, c := range shown {
				fmt.Fprintf(tw, "      %s\t%d requests\t%d allowed\t%d denied\t\n", c.Value, c.Requests, c.Allowed, c.Denied)
			}
			_ = tw.Flush()
			if more := rr.Distinct - uint64(len(shown)); more > 0 {
				fmt.Fprintf(&b, "      … and %d more (-o json lists the %d busiest)\n", more, len(rr.Resources))
			}
		}
	}
	if r.Requests > 0 {
		b.WriteString("  hours (UTC)\n")
		var peak uint64
		for _, n := range r.Hours {
			peak = max(peak, n)
		}
		for h, n := range r.Hours {
			if n == 0 {
				continue
			}
			bar := strings.Repeat("█", int((n*30+peak-1)/max(peak, 1)))
			fmt.Fprintf(&b, "    %02dh %-30s %d\n", h, bar, n)
		}
	}
	if r.Grant != nil {
		if len(r.UnusedScopes) > 0 {
			fmt.Fprintf(&b, "  granted, never used: %s  (narrow the grant?)\n", strings.Join(r.UnusedScopes, ", "))
		}
		if len(r.UngrantedScopes) > 0 {
			fmt.Fprintf(&b, "  asked for, not granted: %s\n", strings.Join(r.UngrantedScopes, ", "))
		}
	}

	fmt.Fprintf(&b, "\nDENIALS (%d)\n", r.Denied)
	if len(r.Denials) == 0 {
		b.WriteString("  none\n")
	}
	denials := append([]ReasonCount(nil), r.Denials...)
	sort.SliceStable(denials, func(i, j int) bool { return denials[i].Count > denials[j].Count })
	for _, d := range denials {
		fmt.Fprintf(&b, "  %-20s %d\n", d.Reason, d.Count)
	}

	fmt.Fprintf(&b, "\nANOMALIES (%d)\n", len(r.Anomalies))
	if len(r.Anomalies) == 0 {
		b.WriteString("  none\n")
	}
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  %s  %-16s %-8s from %s\n      seen:     %s\n      baseline: %s\n", ts(a.EventTime), a.Detector, a.Severity,
			orDash(a.SourceIP), a.Evidence.Seen, a.Evidence.Baseline)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// reportResourcesShown is how many resources per route the text report
// shows; the JSON report has them all.
const reportResourcesShown = 10

// named reports whether a count list has a value other than "" (requests
// that reported none).
func named(cs []UsageCount) bool {
	for _, c := range cs {
		if c.Value != "" {
			return true
		}
	}
	return false
}

// writeRestricted writes the line of a restricted ledger entry: the step
// (a quarantine with what the token keeps, a step-up, or a shadow step
// with what it would have done), who took it and why, and the rule,
// risk and anomaly of an automatic step.
func writeRestricted(b *strings.Builder, e LedgerEntry, ts func(time.Time) string) {
	none := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ", ")
	}
	switch e.Step {
	case events.StepNarrow:
		fmt.Fprintf(b, "  narrowed    %s by %s until %s: %s (keeps scopes %s from %s)", ts(e.Time), orDash(e.Actor), ts(e.Until),
			orDash(e.Reason), none(e.Scopes), none(e.Networks))
	case events.StepStepUp:
		fmt.Fprintf(b, "  step-up     %s by %s until %s: %s", ts(e.Time), orDash(e.Actor), ts(e.Until), orDash(e.Reason))
	case events.StepShadow:
		fmt.Fprintf(b, "  shadow      %s by %s: would %s: %s", ts(e.Time), orDash(e.Actor), orDash(e.Would), orDash(e.Reason))
	default:
		fmt.Fprintf(b, "  restricted  %s by %s (step %s): %s", ts(e.Time), orDash(e.Actor), orDash(e.Step), orDash(e.Reason))
	}
	var auto []string
	if e.Rule != "" {
		auto = append(auto, "rule "+e.Rule)
	}
	if e.Risk != 0 {
		auto = append(auto, "risk "+strconv.FormatFloat(e.Risk, 'g', 4, 64))
	}
	if e.AnomalyID != "" {
		auto = append(auto, "anomaly "+e.AnomalyID)
	}
	if len(auto) > 0 {
		fmt.Fprintf(b, " (%s)", strings.Join(auto, ", "))
	}
	b.WriteByte('\n')
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
