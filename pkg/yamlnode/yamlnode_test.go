package yamlnode

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var errTest = errors.New("test sentinel")

// root parses src and returns its top node.
func root(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("parse %q: %v", src, err)
	}
	return doc.Content[0]
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  Error
		want string
	}{
		{"all", Error{File: "p.yaml", Line: 3, Field: "a.b", Msg: "bad"}, "p.yaml:3: a.b: bad"},
		{"no line", Error{File: "p.yaml", Field: "a", Msg: "bad"}, "p.yaml: a: bad"},
		{"no field", Error{File: "p.yaml", Line: 7, Msg: "bad"}, "p.yaml:7: bad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestErrorsWrapSentinel(t *testing.T) {
	d := &Decoder{File: "f.yaml", Err: errTest}
	for name, err := range map[string]error{
		"Errorf":    d.Errorf(nil, "x", "bad %d", 1),
		"YAMLError": d.YAMLError(errors.New("yaml: line 4: did not find expected key")),
	} {
		t.Run(name, func(t *testing.T) {
			var e *Error
			if !errors.Is(err, errTest) || !errors.As(err, &e) {
				t.Fatalf("%v does not wrap the sentinel as an *Error", err)
			}
			if !errors.Is(fmt.Errorf("ctx: %w", err), errTest) {
				t.Fatal("sentinel lost through wrapping")
			}
		})
	}
	if e := d.YAMLError(errors.New("yaml: line 4: did not find expected key")).(*Error); e.Line != 4 || e.Msg != "yaml: did not find expected key" {
		t.Fatalf("YAMLError: line %d, msg %q", e.Line, e.Msg)
	}
	if err := (&Decoder{File: "f"}).Errorf(nil, "", "x"); errors.Unwrap(err) != nil {
		t.Fatalf("a decoder without Err wraps %v", errors.Unwrap(err))
	}
}

func TestMapping(t *testing.T) {
	allowed := []string{"name", "action", "scopes"}
	plain := Decoder{File: "f.yaml"}
	policyLike := Decoder{File: "f.yaml", Suggest: true, Extensions: true, TerseMergeItems: true}
	for _, tc := range []struct {
		name    string
		dec     Decoder
		path    string
		src     string
		at      string            // decode the value of this top-level key, not the whole document
		want    map[string]string // field → value
		wantErr string
	}{
		{name: "plain", dec: plain, path: "p", src: "name: a\naction: b\n",
			want: map[string]string{"name": "a", "action": "b"}},
		{name: "own keys win over merged", dec: plain, path: "p", src: "x: &d {name: a, action: b}\nm: {<<: *d, name: c}\n", at: "m",
			want: map[string]string{"name": "c", "action": "b"}},
		{name: "merge a list", dec: plain, path: "p", src: "x: &d {name: a}\ny: &e {action: b, name: z}\nm: {<<: [*d, *e]}\n", at: "m",
			want: map[string]string{"name": "a", "action": "b"}},
		{name: "not a mapping", dec: plain, path: "p", src: "[1]\n", wantErr: `f.yaml:1: p: want a mapping, got a list`},
		{name: "unknown field", dec: plain, path: "p", src: "nme: a\n",
			wantErr: `f.yaml:1: p: unknown field "nme"; known fields: name, action, scopes`},
		{name: "unknown field suggested", dec: policyLike, path: "p", src: "nme: a\n",
			wantErr: `f.yaml:1: p: unknown field "nme" (did you mean "name"?); known fields: name, action, scopes`},
		{name: "set twice", dec: plain, path: "p", src: "name: a\nname: b\n",
			wantErr: `f.yaml:2: p: field "name" is set twice (first at line 1)`},
		{name: "key not a string", dec: plain, path: "p", src: "[a]: 1\n",
			wantErr: `f.yaml:1: p: a key must be a plain string, got a list`},
		{name: "extension at top level skipped", dec: policyLike, path: "", src: "x-any: 1\nname: a\n",
			want: map[string]string{"name": "a"}},
		{name: "extension below top level", dec: policyLike, path: "p", src: "x-any: 1\n",
			wantErr: `unknown field "x-any"`},
		{name: "extension without the option", dec: plain, path: "", src: "x-any: 1\n",
			wantErr: `unknown field "x-any"`},
		{name: "merge a scalar", dec: plain, path: "p", src: "<<: 1\n",
			wantErr: `f.yaml:1: p: << merges a mapping or a list of mappings, got the number 1`},
		{name: "merge a list item", dec: plain, path: "p", src: "<<: [1]\n",
			wantErr: `f.yaml:1: p: << merges a mapping or a list of mappings, got the number 1`},
		{name: "merge a list item tersely", dec: policyLike, path: "p", src: "<<: [1]\n",
			wantErr: `f.yaml:1: p: << merges mappings, got the number 1`},
		{name: "merge a scalar tersely", dec: policyLike, path: "p", src: "<<: 1\n",
			wantErr: `f.yaml:1: p: << merges a mapping or a list of mappings, got the number 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := root(t, tc.src)
			for i := 0; tc.at != "" && i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == tc.at {
					n = n.Content[i+1]
				}
			}
			fields, err := tc.dec.Mapping(n, tc.path, allowed)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k, f := range fields {
				got[k] = Resolve(f.Val).Value
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMergeDepth(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 {name: x}\n")
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "a%d: &a%d {<<: *a%d}\n", i, i, i-1)
	}
	b.WriteString("m: {<<: *a10}\n")
	n := root(t, b.String())
	d := &Decoder{File: "f.yaml"}
	_, err := d.Mapping(n.Content[len(n.Content)-1], "p", []string{"name"})
	if err == nil || !strings.Contains(err.Error(), "merge keys nested more than 8 deep") {
		t.Fatalf("got %v", err)
	}
}

func TestScalars(t *testing.T) {
	d := &Decoder{File: "f.yaml"}
	for _, tc := range []struct {
		name    string
		src     string
		decode  func(n *yaml.Node) (any, error)
		want    string
		wantErr string
	}{
		{"str", `"a b"`, func(n *yaml.Node) (any, error) { return d.Str(n, "s") }, "a b", ""},
		{"str from bool", `true`, func(n *yaml.Node) (any, error) { return d.Str(n, "s") }, "", `f.yaml:1: s: want a string, got the boolean true`},
		{"str from null", `~`, func(n *yaml.Node) (any, error) { return d.Str(n, "s") }, "", `f.yaml:1: s: want a string, got nothing (null)`},
		{"bool", `false`, func(n *yaml.Node) (any, error) { return d.Bool(n, "b") }, "false", ""},
		{"bool from yes", `yes`, func(n *yaml.Node) (any, error) { return d.Bool(n, "b") }, "", `f.yaml:1: b: want true or false, got "yes"`},
		{"duration", `90s`, func(n *yaml.Node) (any, error) { return d.Duration(n, "w") }, "1m30s", ""},
		{"duration bad", `ten`, func(n *yaml.Node) (any, error) { return d.Duration(n, "w") }, "", `f.yaml:1: w: "ten" is not a duration (such as 90s, 10m, 1h)`},
		{"list from scalar", `a`, func(n *yaml.Node) (any, error) { v, _, err := d.StrList(n, "l"); return v, err }, "", `f.yaml:1: l: want a list, got "a" (write [a])`},
		{"list item", `[a, 3.5]`, func(n *yaml.Node) (any, error) { v, _, err := d.StrList(n, "l"); return v, err }, "[a 3.5]", ""},
		{"list item not a string", `[a, [b]]`, func(n *yaml.Node) (any, error) { v, _, err := d.StrList(n, "l"); return v, err }, "", `f.yaml:1: l[1]: want a string, got a list`},
		{"list null", `~`, func(n *yaml.Node) (any, error) { v, _, err := d.StrList(n, "l"); return v, err }, "[]", ""},
		{"distinct", `[a, b]`, func(n *yaml.Node) (any, error) { return d.Distinct(n, "l", nil) }, "[a b]", ""},
		{"distinct repeat", "- a\n- b\n- a\n", func(n *yaml.Node) (any, error) { return d.Distinct(n, "l", nil) }, "", `f.yaml:3: l[2]: duplicate "a" (also at l[0])`},
		{"distinct check", "- a\n- B\n", func(n *yaml.Node) (any, error) {
			return d.Distinct(n, "l", func(s string) error {
				if strings.ToLower(s) != s {
					return fmt.Errorf("%q is not lowercase", s)
				}
				return nil
			})
		}, "", `f.yaml:2: l[1]: "B" is not lowercase`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.decode(root(t, tc.src))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	for src, want := range map[string]string{
		"{a: 1}": "a mapping",
		"[1]":    "a list",
		"~":      "nothing (null)",
		"3":      "the number 3",
		"1.5":    "the number 1.5",
		"true":   "the boolean true",
		`"a\tb"`: `"a\tb"`,
	} {
		t.Run(src, func(t *testing.T) {
			if got := Describe(root(t, src)); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		})
	}
	if got := Describe(nil); got != "nothing (null)" {
		t.Fatalf("nil: got %s", got)
	}
}
