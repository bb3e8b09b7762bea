package store

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitType(t *testing.T) {
	tests := []struct {
		in   string
		name string
		args []string
	}{
		{"UInt64", "UInt64", nil},
		{"Nullable(DateTime64(6, 'UTC'))", "Nullable", []string{"DateTime64(6, 'UTC')"}},
		{"Map(String, Array(Tuple(a UInt8, b String)))", "Map", []string{"String", "Array(Tuple(a UInt8, b String))"}},
		{"Enum8('a,b' = 1, 'c)' = 2)", "Enum8", []string{"'a,b' = 1", "'c)' = 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			name, args := SplitType(tc.in)
			if name != tc.name || !slices.Equal(args, tc.args) {
				t.Errorf("SplitType = %q %q, want %q %q", name, args, tc.name, tc.args)
			}
		})
	}
	if got := BaseType("LowCardinality(Nullable(String))"); got != "String" {
		t.Errorf("BaseType = %q", got)
	}
}

func TestParseUnixTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
	}{
		{"0", time.Unix(0, 0)},
		{"1772445072", time.Date(2026, 3, 2, 9, 51, 12, 0, time.UTC)},
		{"1772445072.345678", time.Date(2026, 3, 2, 9, 51, 12, 345678000, time.UTC)},
		{"1772445072.5", time.Date(2026, 3, 2, 9, 51, 12, 500000000, time.UTC)},
		{"-1.5", time.Unix(-1, -500000000)},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseUnixTime(tc.in)
			if err != nil || !got.Equal(tc.want) {
				t.Errorf("parseUnixTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
	if _, err := parseUnixTime("2026-03-02"); err == nil {
		t.Error("a date string parsed as Unix time")
	}
}

func TestDecodeJSONCompact(t *testing.T) {
	in := `{"meta":[{"name":"n","type":"Nullable(Int32)"},{"name":"f","type":"Float64"},{"name":"t","type":"Tuple(a UInt8, b String)"},
		{"name":"a","type":"Array(Nullable(DateTime('UTC')))"},{"name":"big","type":"UInt128"}],
		"data":[[null, null, {"a":1,"b":"x"}, ["1772445072", null], "340282366920938463463374607431768211455"],
		        ["-5", 2.5, {"a":2,"b":"y"}, [], "1"]]}`
	res, err := DecodeJSONCompact([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := res.Rows[0], res.Rows[1]
	if r0[0] != nil || r0[1] != nil || r1[0] != int64(-5) || r1[1] != 2.5 {
		t.Errorf("scalars = %#v %#v", r0[:2], r1[:2])
	}
	if tup := r0[2].(map[string]any); tup["a"] != uint64(1) || tup["b"] != "x" {
		t.Errorf("named tuple = %#v", r0[2])
	}
	if arr := r0[3].([]any); len(arr) != 2 || !arr[0].(time.Time).Equal(time.Unix(1772445072, 0)) || arr[1] != nil {
		t.Errorf("array = %#v", r0[3])
	}
	if r0[4] != "340282366920938463463374607431768211455" {
		t.Errorf("UInt128 = %#v", r0[4])
	}
	if _, err := DecodeJSONCompact([]byte(`{"meta":[{"name":"a","type":"UInt8"}],"data":[[1,2]]}`)); err == nil {
		t.Error("row wider than meta accepted")
	}
	if res, err := DecodeJSONCompact(nil); err != nil || len(res.Columns) != 0 {
		t.Errorf("empty output = %v, %v", res, err)
	}
}

func TestFormatValue(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 51, 12, 345678912, time.UTC)
	tests := []struct {
		typ  string
		v    any
		want string
	}{
		{"Date", at, "2026-03-02"},
		{"DateTime('UTC')", at, "2026-03-02 09:51:12"},
		{"DateTime64(6, 'UTC')", at, "2026-03-02 09:51:12.345678"},
		{"Nullable(DateTime64(3))", at, "2026-03-02 09:51:12.345"},
		{"UInt64", uint64(18446744073709551615), "18446744073709551615"},
		{"Float64", 0.1, "0.1"},
		{"Array(String)", []any{"a", nil, uint64(2)}, `["a",null,2]`},
		{"Map(String, String)", map[string]any{"b": "2", "a": "1"}, `{"a":"1","b":"2"}`},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			if got := FormatValue(tc.typ, tc.v); got != tc.want {
				t.Errorf("FormatValue = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLedgerStatus(t *testing.T) {
	now := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	future, past := now.Add(time.Hour), now.Add(-time.Hour)
	tests := []struct {
		name   string
		ledger []LedgerEntry
		want   string
	}{
		{"none", nil, "unknown"},
		{"issued", []LedgerEntry{{Type: "issued", Expiry: future}}, "active"},
		{"issued past expiry", []LedgerEntry{{Type: "issued", Expiry: past}}, "expired"},
		{"rotated", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "rotated"}}, "rotated"},
		{"revoked after rotation", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "rotated"}, {Type: "revoked"}}, "revoked"},
		{"expired", []LedgerEntry{{Type: "issued", Expiry: past}, {Type: "expired"}}, "expired"},
		{"revoked stays revoked", []LedgerEntry{{Type: "issued", Expiry: past}, {Type: "revoked"}, {Type: "expired"}}, "revoked"},
		{"revocation only", []LedgerEntry{{Type: "revoked"}}, "revoked"},
		// A restriction bounds what a live token may do for a while; its
		// status stays what the rest of the ledger says.
		{"restricted", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "restricted", Step: "narrow", Until: future}}, "active"},
		{"restricted then released", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "restricted", Step: "step_up", Until: future},
			{Type: "released", Step: "step_up"}}, "active"},
		{"restricted then revoked", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "restricted", Step: "narrow", Until: future},
			{Type: "revoked"}}, "revoked"},
		{"restricted past expiry", []LedgerEntry{{Type: "issued", Expiry: past}, {Type: "restricted", Step: "shadow", Would: "revoke"}}, "expired"},
		{"restricted after rotation", []LedgerEntry{{Type: "issued", Expiry: future}, {Type: "rotated"}, {Type: "restricted", Step: "narrow"}}, "rotated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ledgerStatus(tc.ledger, now); got != tc.want {
				t.Errorf("status = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMigrationsParse(t *testing.T) {
	ms, err := Migrations("my_db")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 4 {
		t.Fatalf("%d migrations", len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("%s: version %d, want %d (versions are consecutive)", m.Name, m.Version, i+1)
		}
		if len(m.Statements) == 0 {
			t.Errorf("%s: no statements", m.Name)
		}
		for _, s := range m.Statements {
			if strings.Contains(s, "{db}") || !strings.Contains(s, "`my_db`.") {
				t.Errorf("%s: statement not bound to the database: %s", m.Name, s)
			}
			// ALTER … MODIFY SETTING sets a value: applying it twice is
			// applying it once (TestMigrationsIdempotent runs it again).
			modifySetting := strings.HasPrefix(withoutComments(s), "ALTER TABLE ") && strings.Contains(s, " MODIFY SETTING ") && !strings.Contains(withoutComments(s), ",")
			// A copy into a table guarded by that table being empty
			// copies once.
			guardedCopy := false
			if m := copyInto.FindStringSubmatch(withoutComments(s)); m != nil {
				guardedCopy = strings.Contains(s, "WHERE (SELECT count() FROM "+m[1]+") = 0")
			}
			dropIfExists := strings.HasPrefix(withoutComments(s), "DROP VIEW IF EXISTS ")
			// ALTER … MODIFY COLUMN c EnumN(…) alone sets the column's
			// type: setting it again is a no-op (enum values added at
			// the end are a metadata change).
			modifyEnum := modifyEnumColumn.MatchString(withoutComments(s))
			if !strings.Contains(s, "IF NOT EXISTS") && !strings.HasPrefix(withoutComments(s), "CREATE OR REPLACE VIEW ") && !modifySetting && !guardedCopy && !dropIfExists && !modifyEnum {
				t.Errorf("%s: statement is not idempotent (IF NOT EXISTS, CREATE OR REPLACE VIEW, DROP VIEW IF EXISTS, ALTER TABLE … MODIFY SETTING alone, ALTER TABLE … MODIFY COLUMN c EnumN(…) alone, or INSERT INTO t … WHERE (SELECT count() FROM t) = 0): %s", m.Name, s)
			}
		}
	}
}

// modifyEnumColumn matches an ALTER TABLE that only sets one column's type
// to an enum.
var modifyEnumColumn = regexp.MustCompile(`^ALTER TABLE \S+\s+MODIFY COLUMN \w+ Enum(8|16)\((\s*'[a-z_]+' = \d+,?)+\)$`)

// copyInto matches an INSERT … SELECT and names its target.
var copyInto = regexp.MustCompile("^INSERT INTO (\\S+)\\s+SELECT ")

// withoutComments drops the "--" comment lines that open a statement.
func withoutComments(stmt string) string {
	for strings.HasPrefix(stmt, "--") {
		_, stmt, _ = strings.Cut(stmt, "\n")
		stmt = strings.TrimSpace(stmt)
	}
	return stmt
}

func TestQuoteString(t *testing.T) {
	if got := quoteString(`a'b\c`); got != `'a\'b\\c'` {
		t.Errorf("quoteString = %s", got)
	}
}

func TestValidateDatabase(t *testing.T) {
	for _, ok := range []string{"cordon", "_x1", "A_b"} {
		if err := ValidateDatabase(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1a", "a-b", "a.b", "a`", strings.Repeat("a", 65)} {
		if err := ValidateDatabase(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
