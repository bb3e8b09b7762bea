package svcconfig_test

import (
	"errors"
	"fmt"
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
