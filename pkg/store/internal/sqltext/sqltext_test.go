package sqltext

import (
	"errors"
	"testing"
)

func TestLex(t *testing.T) {
	tests := []struct {
		name     string
		q        string
		wantErr  error
		first    string
		text     string
		outfile  bool
		format   string
		settings bool
	}{
		{name: "select", q: "SELECT 1", first: "SELECT", text: "SELECT 1"},
		{name: "trailing semicolon and blanks", q: " select 1 ;\n  ", first: "select", text: " select 1"},
		{name: "comment after semicolon", q: "SELECT 1; -- done", first: "SELECT", text: "SELECT 1"},
		{name: "leading comments", q: "-- c\n/* d /* nested */ */ WITH x AS (SELECT 1) SELECT * FROM x", first: "WITH"},
		{name: "keywords in literals", q: "SELECT 'a; INTO OUTFILE ''x'' FORMAT CSV', \"FORMAT\", `INTO` FROM t", first: "SELECT"},
		{name: "backslash escape", q: `SELECT 'it\'s; fine'`, first: "SELECT"},
		{name: "into outfile", q: "SELECT 1 INTO OUTFILE '/tmp/x'", first: "SELECT", outfile: true},
		{name: "into outfile in a subquery", q: "SELECT * FROM (SELECT 1 into outfile 'x')", first: "SELECT", outfile: true},
		{name: "trailing format", q: "SELECT 1 FORMAT CSV", first: "SELECT", format: "CSV"},
		{name: "format then settings", q: "SELECT 1 FORMAT JSON SETTINGS max_threads = 1", first: "SELECT", format: "JSON", settings: true},
		{name: "column named format", q: "SELECT format FROM t ORDER BY format", first: "SELECT"},
		{name: "settings clause", q: "SELECT 1 SETTINGS max_threads = 1", first: "SELECT", settings: true},
		{name: "settings in a subquery only", q: "SELECT * FROM (SELECT 1 SETTINGS max_threads = 1)", first: "SELECT"},
		{name: "column named settings", q: "SELECT settings FROM t", first: "SELECT"},
		{name: "empty", q: "  ", wantErr: ErrEmpty},
		{name: "only a comment", q: "-- nothing here", wantErr: ErrEmpty},
		{name: "two statements", q: "SELECT 1; DROP TABLE t", wantErr: ErrMultiple},
		{name: "two semicolons", q: "SELECT 1;;", wantErr: ErrMultiple},
		{name: "semicolon in a line comment", q: "SELECT 1 -- ; DROP TABLE t", wantErr: ErrMultiple},
		{name: "semicolon in a block comment", q: "SELECT 1 /* ; */", wantErr: ErrMultiple},
		{name: "literal after semicolon", q: "SELECT 1; 'x'", wantErr: ErrMultiple},
		{name: "unterminated string", q: "SELECT 'abc", wantErr: ErrUnterminate},
		{name: "unterminated comment", q: "SELECT 1 /* abc", wantErr: ErrUnterminate},
		{name: "unbalanced", q: "SELECT (1", wantErr: ErrParens},
		{name: "closing first", q: "SELECT 1) + (2", wantErr: ErrParens},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Lex(tc.q)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := q.First().Text; got != tc.first {
				t.Errorf("first = %q, want %q", got, tc.first)
			}
			if tc.text != "" && q.Text != tc.text {
				t.Errorf("text = %q, want %q", q.Text, tc.text)
			}
			if got := q.Has("INTO", "OUTFILE"); got != tc.outfile {
				t.Errorf("into outfile = %v, want %v", got, tc.outfile)
			}
			if got, _ := q.TrailingFormat(); got != tc.format {
				t.Errorf("format = %q, want %q", got, tc.format)
			}
			if got := q.hasTopLevelSettings(); got != tc.settings {
				t.Errorf("settings = %v, want %v", got, tc.settings)
			}
		})
	}
}

func TestWithSettings(t *testing.T) {
	tests := []struct {
		q    string
		want string
	}{
		{"SELECT 1", "SELECT 1\nSETTINGS a = 1, b = 'x'"},
		{"SELECT 1;", "SELECT 1\nSETTINGS a = 1, b = 'x'"},
		{"SELECT 1 -- comment", "SELECT 1 -- comment\nSETTINGS a = 1, b = 'x'"},
		{"SELECT 1 SETTINGS max_threads = 2", "SELECT 1 SETTINGS max_threads = 2\n, a = 1, b = 'x'"},
		{"SELECT * FROM (SELECT 1 SETTINGS max_threads = 2)", "SELECT * FROM (SELECT 1 SETTINGS max_threads = 2)\nSETTINGS a = 1, b = 'x'"},
	}
	for _, tc := range tests {
		t.Run(tc.q, func(t *testing.T) {
			q, err := Lex(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.WithSettings([]string{"a = 1", "b = 'x'"}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if got := q.WithSettings(nil); got != q.Text {
				t.Errorf("no settings: got %q, want %q", got, q.Text)
			}
		})
	}
}
