package replay

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// maxCell bounds the width of the evidence columns of the anomaly table.
const maxCell = 70

// PrintAnomalies writes the anomalies as a table: event time, detector,
// severity, token, tenant/holder, what was seen and the baseline it broke.
func PrintAnomalies(w io.Writer, as []Anomaly) error {
	if len(as) == 0 {
		_, err := fmt.Fprintln(w, "no anomalies")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDETECTOR\tSEVERITY\tTOKEN\tHOLDER\tSEEN\tBASELINE")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\n", a.EventTime.UTC().Format(time.RFC3339), a.Detector, a.Severity,
			a.TokenID, a.Tenant, a.Holder, clip(a.Evidence.Seen), clip(a.Evidence.Baseline))
	}
	return tw.Flush()
}

// PrintSummary writes what the replay did: lines, events, bad lines,
// anomalies by detector and severity, and the rates.
func (r *Result) PrintSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "lines read:        %d\n", r.Lines)
	fmt.Fprintf(&b, "events published:  %d (%d usage, %d ledger)\n", r.Events(), r.Usage, r.Ledger)
	if r.Skipped > 0 {
		fmt.Fprintf(&b, "skipped:           %d valid events of other types\n", r.Skipped)
	}
	fmt.Fprintf(&b, "bad lines:         %d\n", r.Bad)
	for _, bl := range r.BadLines {
		fmt.Fprintf(&b, "  %s\n", bl)
	}
	if r.Bad > len(r.BadLines) {
		fmt.Fprintf(&b, "  … and %d more\n", r.Bad-len(r.BadLines))
	}
	if r.Failed > 0 {
		fmt.Fprintf(&b, "failed to publish: %d\n", r.Failed)
	}
	byDet := map[string]int{}
	bySev := map[string]int{}
	for _, a := range r.Anomalies {
		byDet[a.Detector]++
		bySev[a.Severity]++
	}
	fmt.Fprintf(&b, "anomalies:         %d", len(r.Anomalies))
	if len(r.Anomalies) > 0 {
		fmt.Fprintf(&b, " (%s; %s)", counts(byDet), counts(bySev))
	}
	b.WriteByte('\n')
	rate := func(d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f events/s", float64(r.Events())/d.Seconds())
	}
	fmt.Fprintf(&b, "published in:      %v (%s)\n", r.Publish.Round(time.Millisecond), rate(r.Publish))
	fmt.Fprintf(&b, "processed in:      %v (%s, %d ordering waits)\n", r.Elapsed.Round(time.Millisecond), rate(r.Elapsed), r.Barriers)
	_, err := io.WriteString(w, b.String())
	return err
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func clip(s string) string {
	s = strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
	if utf8.RuneCountInString(s) <= maxCell {
		return s
	}
	r := []rune(s)
	return string(r[:maxCell-1]) + "…"
}
