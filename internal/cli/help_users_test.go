package cli

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// trackerWords are how help text would speak of the project's issue
// tracker instead of the user's task ("issue" alone is a verb here: tokens
// are issued).
var trackerWords = regexp.MustCompile(`(?i)\bissues\b|\bissue\s*#?\d|\bwork package\b`)

// TestHelpSpeaksToUsers: cordon --help lists every command with a summary
// and no command of the harnesses (the benchmarks are cordon-bench's), and
// no help text, the top level's or a command's, speaks of the issue
// tracker.
func TestHelpSpeaksToUsers(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("cordon --help: exit %d\n%s", code, stderr.String())
	}
	top := stderr.String()
	for name, c := range commands() {
		if c.summary == "" || !strings.Contains(top, "  "+name+" ") || !strings.Contains(top, c.summary) {
			t.Errorf("cordon --help lacks command %q with its summary %q", name, c.summary)
		}
	}
	if _, ok := commands()["bench"]; ok || strings.Contains(top, "bench") {
		t.Errorf("cordon lists the benchmarks, which live in cordon-bench:\n%s", top)
	}

	helps := map[string]string{"cordon --help": top}
	for _, args := range helpInvocations() {
		var stdout, stderr bytes.Buffer
		Main(context.Background(), args, &stdout, &stderr)
		helps["cordon "+strings.Join(args, " ")] = stdout.String() + stderr.String()
	}
	for cmd, text := range helps {
		if m := trackerWords.FindString(text); m != "" {
			t.Errorf("%s mentions %q:\n%s", cmd, m, text)
		}
	}
}

// helpInvocations are the -h of every command and subcommand.
func helpInvocations() [][]string {
	var out [][]string
	for name := range commands() {
		out = append(out, []string{name, "-h"})
	}
	for _, sub := range []string{"token issue", "token list", "token inspect", "token rotate",
		"key list", "key rotate", "key retire", "creds generate", "creds permissions", "anchor generate"} {
		out = append(out, append(strings.Fields(sub), "-h"))
	}
	return out
}

// TestTrackerWords: the judge of help text flags the tracker and lets the
// verb through.
func TestTrackerWords(t *testing.T) {
	tests := []struct {
		text string
		bad  bool
	}{
		{"measure the figures the issues name", true},
		{"the bar of issue 9", true},
		{"see issue #12", true},
		{"issue, list, inspect and rotate tokens", false},
		{"revoke tokens by id, holder, key, tenant or issue time", false},
		{"tokens issued before", false},
	}
	for _, tt := range tests {
		if got := trackerWords.MatchString(tt.text); got != tt.bad {
			t.Errorf("%q judged bad=%v, want %v", tt.text, got, tt.bad)
		}
	}
}
