//go:build !nochdb

package replay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
)

// TestReplayGraduatedResponse: a replayed input holding the graduated
// response's ledger events publishes them on the TOKENS stream and the
// pipeline's auditor writes each to token_ledger, none dead-lettered.
func TestReplayGraduatedResponse(t *testing.T) {
	p := startPipeline(t)
	lines := append([]string{issuedLine(t, t0, "tok-g"), usageLine(t, t0.Add(time.Second), "tok-g")},
		graduatedLines(t, t0.Add(time.Minute), "tok-g")...)
	res, err := replay.Run(context.Background(), strings.NewReader(jsonl(lines...)), replay.Options{
		JS: p.JS, Auditor: p.Watcher(), Wait: 30 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Usage != 1 || res.Ledger != 5 || res.Skipped != 0 || res.Bad != 0 {
		t.Fatalf("published %d usage, %d ledger, skipped %d, bad %d: want 1, 5, 0, 0", res.Usage, res.Ledger, res.Skipped, res.Bad)
	}
	if st := p.Auditor.Stats(); st.Ledger != 5 || st.Dead != 0 {
		t.Fatalf("auditor wrote %d ledger rows and dead-lettered %d, want 5 and 0", st.Ledger, st.Dead)
	}
	q, err := p.Store.Query(context.Background(), "SELECT toString(type), toString(step), toString(would), until, rule, risk "+
		"FROM token_ledger WHERE token_id = 'tok-g' ORDER BY time")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{
		{"issued", "", "", nil, "", 0.0},
		{"restricted", "narrow", "", t0.Add(time.Minute + time.Hour), "quarantine-new-network", 0.75},
		{"released", "narrow", "", nil, "", 0.0},
		{"restricted", "step_up", "", t0.Add(time.Minute + 2*time.Hour), "", 0.0},
		{"restricted", "shadow", "revoke", nil, "revoke-travel", 0.5},
	}
	if got := fmt.Sprint(q.Rows); got != fmt.Sprint(want) {
		t.Fatalf("token_ledger rows\n got %s\nwant %v", got, want)
	}
}
