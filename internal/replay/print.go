package replay

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
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
	if r.Events() > 0 {
		fmt.Fprintf(&b, "event time:        %s → %s\n", r.FirstEvent.UTC().Format(time.RFC3339), r.LastEvent.UTC().Format(time.RFC3339))
	}
	if r.Sorted {
		fmt.Fprintf(&b, "sorted:            by event time in memory; %d events were out of order in the input\n", r.Moved)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(&b, "duplicates:        %d events the stream already held (same id), not analysed again\n", r.Duplicates)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, "skipped:           %d valid events of other types\n", r.Skipped)
	}
	r.writeBadLines(&b)
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

// PrintBadLines writes the number of bad lines, the first ones with their
// numbers and how many more there were.
func (r *Result) PrintBadLines(w io.Writer) error {
	var b strings.Builder
	r.writeBadLines(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Result) writeBadLines(b *strings.Builder) {
	fmt.Fprintf(b, "bad lines:         %d\n", r.Bad)
	for _, bl := range r.BadLines {
		fmt.Fprintf(b, "  %s\n", clipLine(bl.String()))
	}
	if r.Bad > len(r.BadLines) {
		fmt.Fprintf(b, "  … and %d more\n", r.Bad-len(r.BadLines))
	}
}

// clipLine bounds a bad line's reason (which may quote the line) to one
// plain line of at most 200 characters.
func clipLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 200 {
		return string(r[:199]) + "…"
	}
	return s
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

// progress reports how far a replay got.
type progress interface {
	// add counts n more units (bytes or events).
	add(n int)
	// finish ends the report.
	finish()
}

// newProgress returns a bar (on a terminal) or plain lines on o.Progress;
// total is in bytes when bytes is set, in events otherwise, and unknown
// when not positive.
func newProgress(o Options, desc string, total int64, bytes bool, res *Result) progress {
	if isTerminal(o.Progress) {
		return barProgress{newBar(o.Progress, desc, total, bytes)}
	}
	return &plainProgress{w: o.Progress, desc: desc, total: total, bytes: bytes, res: res, every: o.ProgressEvery,
		start: time.Now(), last: time.Now()}
}

func newBar(w io.Writer, desc string, total int64, bytes bool) *progressbar.ProgressBar {
	if total <= 0 {
		total = -1
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(bytes),
		progressbar.OptionShowTotalBytes(bytes),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		progressbar.OptionSetRenderBlankState(true),
	)
}

type barProgress struct{ b *progressbar.ProgressBar }

func (p barProgress) add(n int) { _ = p.b.Add(n) }
func (p barProgress) finish()   { _ = p.b.Finish() }

// plainProgress writes a plain line (no carriage return, no colour) every
// so often and one at the end: what a log file or a CI job can show.
type plainProgress struct {
	w           io.Writer
	desc        string
	total, done int64
	bytes       bool
	res         *Result
	every       time.Duration
	start, last time.Time
	n           int // adds since the clock was last read
}

func (p *plainProgress) add(n int) {
	p.done += int64(n)
	// Read the clock every 1024 adds only: this is the hot loop.
	if p.n++; p.n < 1024 {
		return
	}
	p.n = 0
	if now := time.Now(); now.Sub(p.last) >= p.every {
		p.last = now
		p.line("")
	}
}

func (p *plainProgress) finish() { p.line(" done") }

func (p *plainProgress) line(suffix string) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%s ", p.desc, suffix)
	amount := func(v int64) string {
		if p.bytes {
			return byteSize(v)
		}
		return fmt.Sprintf("%d events", v)
	}
	if p.total > 0 {
		fmt.Fprintf(&b, "%.0f%% (%s of %s)", 100*float64(p.done)/float64(p.total), amount(p.done), amount(p.total))
	} else {
		b.WriteString(amount(p.done))
	}
	fmt.Fprintf(&b, ", %d lines, %d events, %d bad lines, %v\n", p.res.Lines, p.res.Events(), p.res.Bad, time.Since(p.start).Round(time.Second))
	_, _ = io.WriteString(p.w, b.String())
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// isTerminal says whether w is a terminal: bars and carriage returns are
// for terminals only.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
