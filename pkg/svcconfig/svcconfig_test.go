package svcconfig_test

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

func TestInvalid(t *testing.T) {
	err := svcconfig.Invalidf("--replicas %d: want 1 to 5", 9)
	if err.Error() != "--replicas 9: want 1 to 5" {
		t.Errorf("message %q: the mark must not show", err)
	}
	if !errors.Is(err, svcconfig.ErrInvalid) {
		t.Error("Invalidf does not match ErrInvalid")
	}
	wrapped := svcconfig.Invalidf("--policy: %w", fs.ErrNotExist)
	if !errors.Is(wrapped, fs.ErrNotExist) || !errors.Is(wrapped, svcconfig.ErrInvalid) {
		t.Error("Invalidf loses the wrapped error")
	}
	if !errors.Is(fmt.Errorf("start: %w", err), svcconfig.ErrInvalid) {
		t.Error("the mark does not survive wrapping")
	}
	if svcconfig.Invalid(nil) != nil {
		t.Error("Invalid(nil) is not nil")
	}
	if plain := errors.New("x"); errors.Is(plain, svcconfig.ErrInvalid) || !errors.Is(svcconfig.Invalid(plain), svcconfig.ErrInvalid) {
		t.Error("Invalid does not mark")
	}
}

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{{"", true}, {"127.0.0.1:9090", true}, {":0", true}, {"[::1]:80", true}, {"nope", false}, {"1.2.3.4", false}} {
		err := svcconfig.CheckListen("metrics-listen", c.addr)
		if (err == nil) != c.ok {
			t.Errorf("%q: %v", c.addr, err)
		}
		if err != nil && (!errors.Is(err, svcconfig.ErrInvalid) || !strings.HasPrefix(err.Error(), `--metrics-listen "`+c.addr+`"`)) {
			t.Errorf("%q: %v", c.addr, err)
		}
	}
}

func TestTrustAnchors(t *testing.T) {
	a, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	pub := a.Public()
	file := filepath.Join(t.TempDir(), svcconfig.TrustAnchorFile)
	if err := os.WriteFile(file, []byte("# the issuer's anchor\n"+pub.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := token.GenerateAnchor()
	cases := []struct {
		name   string
		v      string
		given  token.Anchors
		want   string // anchor id, or "" for an error
		errHas string
	}{
		{name: "text", v: pub.String(), want: pub.ID()},
		{name: "file", v: file, want: pub.ID()},
		{name: "given wins", v: "/nonexistent", given: token.Anchors{other.Public()}, want: other.Public().ID()},
		{name: "none", errHas: "--trust-anchor is required"},
		{name: "missing file", v: "/nonexistent/trust-anchor.pub", errHas: "--trust-anchor: trust anchor: open /nonexistent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := svcconfig.TrustAnchors(c.v, c.given)
			if c.want == "" {
				if err == nil || !errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("error %v, want a configuration mistake with %q", err, c.errHas)
				}
				return
			}
			if err != nil || len(got) != 1 || got[0].ID() != c.want {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("CORDON_TEST_VALUE", "")
	if got := svcconfig.Getenv("CORDON_TEST_VALUE", "def"); got != "def" {
		t.Errorf("empty variable: %q", got)
	}
	t.Setenv("CORDON_TEST_VALUE", "set")
	if got := svcconfig.Getenv("CORDON_TEST_VALUE", "def"); got != "set" {
		t.Errorf("set variable: %q", got)
	}
	if s := svcconfig.DefaultSource("auditor"); !strings.HasPrefix(s, "auditor/") || strings.Contains(s, ".") {
		t.Errorf("default source %q", s)
	}
	if svcconfig.DefaultTrustAnchor != filepath.Join(".cordon", "trust-anchor.pub") {
		t.Errorf("default trust anchor %q", svcconfig.DefaultTrustAnchor)
	}
}

// TestUsagePartitionsFlag: --usage-partitions takes 1 to 64, defaults to
// $CORDON_USAGE_PARTITIONS or 8, and refuses anything else with a message
// that names the flag; a bad environment value is refused by the check.
func TestUsagePartitionsFlag(t *testing.T) {
	for _, c := range []struct {
		name, env string
		args      []string
		want      int
		parseErr  string
		checkErr  string
	}{
		{name: "default", want: 8},
		{name: "flag", args: []string{"--usage-partitions", "16"}, want: 16},
		{name: "one", args: []string{"--usage-partitions", "1"}, want: 1},
		{name: "most", args: []string{"--usage-partitions", "64"}, want: 64},
		{name: "env", env: "4", want: 4},
		{name: "flag over env", env: "4", args: []string{"--usage-partitions", "32"}, want: 32},
		{name: "zero", args: []string{"--usage-partitions", "0"}, parseErr: "want a partition count from 1 to 64"},
		{name: "too many", args: []string{"--usage-partitions", "65"}, parseErr: "want a partition count from 1 to 64"},
		{name: "negative", args: []string{"--usage-partitions", "-2"}, parseErr: "usage-partitions"},
		{name: "not a number", args: []string{"--usage-partitions", "eight"}, parseErr: `"eight"`},
		{name: "bad env", env: "lots", checkErr: "$CORDON_USAGE_PARTITIONS"},
		{name: "env too many", env: "100", checkErr: "want 1 to 64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("CORDON_USAGE_PARTITIONS", c.env)
			set := flag.NewFlagSet("t", flag.ContinueOnError)
			set.SetOutput(io.Discard)
			var n int
			svcconfig.UsagePartitionsFlag(set, &n)
			err := set.Parse(c.args)
			if c.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.parseErr) {
					t.Fatalf("parse error %v, want one with %q", err, c.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = svcconfig.CheckUsagePartitions(n)
			if c.checkErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.checkErr) || !errors.Is(err, svcconfig.ErrInvalid) {
					t.Fatalf("check error %v, want an invalid configuration with %q", err, c.checkErr)
				}
				return
			}
			if err != nil || n != c.want {
				t.Fatalf("partitions %d (%v), want %d", n, err, c.want)
			}
		})
	}
	if err := svcconfig.CheckUsagePartitions(0); err != nil {
		t.Errorf("0 (not configured, as a program leaves it) refused: %v", err)
	}
}
