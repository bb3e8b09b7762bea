package bench

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMainUsage: cordon-bench's help and listing speak to users (what is
// measured, on this machine, written to a results file), name every suite,
// and say nothing of the project's issue tracker.
func TestMainUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"help", []string{"-h"}, []string{"measure Cordon's latency, throughput and memory on this machine", "results file", "--out", "--only"}},
		{"list", []string{"--list"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(context.Background(), tt.args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, want 0\n%s", code, stderr.String())
			}
			text := stdout.String() + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
			for _, s := range Suites() {
				if !strings.Contains(text, s.Name) || !strings.Contains(text, s.Summary) {
					t.Errorf("output lacks suite %q (%s):\n%s", s.Name, s.Summary, text)
				}
			}
			if strings.Contains(strings.ToLower(text), "issue ") || strings.Contains(strings.ToLower(text), "issues") {
				t.Errorf("help text mentions the issue tracker:\n%s", text)
			}
		})
	}
}

// TestMainRefuses: a usage mistake exits 2 before any suite runs, with a
// message that says what was wrong.
func TestMainRefuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "bogus"},
		{"argument", []string{"enforce"}, `unexpected argument "enforce"`},
		{"no suite matches", []string{"--only", "nosuch"}, `"nosuch" matches no suite; the suites are: enforce, revocation`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(context.Background(), tt.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr.String())
			}
			if strings.Contains(stdout.String(), "machine:") {
				t.Errorf("a suite started:\n%s", stdout.String())
			}
		})
	}
}

// TestSuitesDescribed: every suite has a name --only can select alone and
// a summary for the help text.
func TestSuitesDescribed(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Suites() {
		if s.Name == "" || s.Summary == "" || s.Run == nil {
			t.Errorf("suite %+v: name, summary and run are required", s)
		}
		if seen[s.Name] {
			t.Errorf("two suites named %q", s.Name)
		}
		seen[s.Name] = true
	}
}

// TestSuitesSmoke runs every suite at smoke size, as make bench-smoke
// does, so that a suite that no longer runs fails make test: each must
// finish without error and give figures, none of them judged. Timings are
// not asserted.
func TestSuitesSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS, chDB, nats-server processes and the services")
	}
	var progress bytes.Buffer
	res := Run(context.Background(), "", Env{Progress: &progress, Smoke: true})
	if len(res) != len(Suites()) {
		t.Fatalf("%d results for %d suites", len(res), len(Suites()))
	}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("suite %s: %v", r.Suite, r.Err)
			continue
		}
		if len(r.Figures) == 0 {
			t.Errorf("suite %s gave no figure", r.Suite)
		}
		for _, f := range r.Figures {
			if f.Target != "" || f.Missed() {
				t.Errorf("suite %s: a smoke run judged %q against %q", r.Suite, f.Name, f.Target)
			}
		}
		t.Logf("%s: %d figures in %v", r.Suite, len(r.Figures), r.Took.Round(time.Millisecond))
	}
	if t.Failed() {
		t.Logf("progress:\n%s", progress.String())
	}
}

// TestSelected: --only runs every suite whose name contains the text,
// unless a suite is named exactly so, which then runs alone.
func TestSelected(t *testing.T) {
	suites := []Suite{{Name: "auditor"}, {Name: "scale-out: auditor instances"}, {Name: "fault tolerance"}, {Name: "fault tolerance: node loss"}}
	for _, c := range []struct {
		filter string
		want   []string
	}{
		{"", []string{"auditor", "scale-out: auditor instances", "fault tolerance", "fault tolerance: node loss"}},
		{"auditor", []string{"auditor"}},
		{"audit", []string{"auditor", "scale-out: auditor instances"}},
		{"fault tolerance", []string{"fault tolerance"}},
		{"fault", []string{"fault tolerance", "fault tolerance: node loss"}},
		{"node loss", []string{"fault tolerance: node loss"}},
		{"nosuch", nil},
	} {
		var got []string
		for _, s := range suites {
			if selected(suites, s.Name, c.filter) {
				got = append(got, s.Name)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("--only %q selects %q, want %q", c.filter, got, c.want)
		}
	}
}
