// Package yamlnode decodes go.yaml.in/yaml/v3 node trees field by field, so
// that every error names the file, the line and the field it is about and
// quotes the offending value:
//
//	policy.yaml:14: holders[2].networks[0]: "10.0.0.0/33" is not a CIDR
//
// It exists because the sections of Cordon's policy file are decoded by
// different packages (pkg/policy reads the holders, pkg/response the
// response section) that must speak about mistakes in the same way: the
// same mapping rules (unknown and repeated keys are errors; anchors,
// aliases and << merge keys are followed), the same wording for a value of
// the wrong kind, and one Error type that each package's sentinel error
// rides on.
package yamlnode

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is an error in a YAML file, located by file, line and field.
type Error struct {
	// File is the name the file was loaded under.
	File string
	// Line is the 1-based line of the offending node; 0 when unknown.
	Line int
	// Field is the path of the offending field, such as holders[2].networks[0].
	Field string
	// Msg says what is wrong, quoting the offending value.
	Msg string
	// Err is the sentinel the error wraps (such as policy.ErrInvalid), so
	// that callers can branch on it with errors.Is. It is not part of the
	// message.
	Err error
}

// Error implements error: "file:line: field: msg", leaving out the line
// when it is 0 and the field when it is empty.
func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Msg
}

// Unwrap returns Err, making errors.Is(err, e.Err) true.
func (e *Error) Unwrap() error { return e.Err }

// Decoder decodes the nodes of one file into values, returning an *Error
// that wraps Err for anything it cannot decode. The zero options give the
// plainest behaviour; each option below is one package's established
// wording or leniency, kept so that its messages do not change.
type Decoder struct {
	// File names the file in errors.
	File string
	// Err is the sentinel every error of the decoder wraps.
	Err error
	// Suggest adds ` (did you mean "name"?)` to an unknown-field error when
	// a known field is a close spelling of it.
	Suggest bool
	// Extensions makes Mapping skip keys starting with "x-" at the top
	// level (path ""), so that such keys can hold anchors for the rest of
	// the file.
	Extensions bool
	// TerseMergeItems words the error about an item of a merged list that
	// is not a mapping "<< merges mappings, got …" instead of "<< merges a
	// mapping or a list of mappings, got …".
	TerseMergeItems bool
}

// Field is one key/value pair of a mapping, with the key node kept for
// errors about the key.
type Field struct {
	Key, Val *yaml.Node
}

// maxMergeDepth bounds nested merge keys (<<: *a where a merges b …).
const maxMergeDepth = 8

// Errorf returns an *Error at the line of n (0 when n is nil) about field.
func (d *Decoder) Errorf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: d.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...), Err: d.Err}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// YAMLError turns an error of the YAML parser into an *Error, moving the
// line it names ("yaml: line 3: …") into Line.
func (d *Decoder) YAMLError(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.File, Line: line, Msg: "yaml: " + m[2], Err: d.Err}
	}
	return &Error{File: d.File, Msg: msg, Err: d.Err}
}

// Mapping returns the fields of the mapping node n at path, following
// aliases and merge keys (a mapping's own keys win over what it merges),
// and rejecting keys that are not plain strings, keys not in allowed and
// keys set twice.
func (d *Decoder) Mapping(n *yaml.Node, path string, allowed []string) (map[string]Field, error) {
	n = Resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, d.Errorf(n, path, "want a mapping, got %s", Describe(n))
	}
	out := map[string]Field{}
	if err := d.collect(n, path, allowed, out, 0); err != nil {
		return nil, err
	}
	return out, nil
}

// collect adds the fields of mapping n to out, then those of the mappings
// it merges.
func (d *Decoder) collect(n *yaml.Node, path string, allowed []string, out map[string]Field, depth int) error {
	if depth > maxMergeDepth {
		return d.Errorf(n, path, "merge keys nested more than %d deep", maxMergeDepth)
	}
	var merges []*yaml.Node
	own := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return d.Errorf(k, path, "a key must be a plain string, got %s", Describe(k))
		}
		if d.Extensions && path == "" && strings.HasPrefix(k.Value, "x-") {
			continue
		}
		if !slices.Contains(allowed, k.Value) {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if d.Suggest {
				if s := suggest(k.Value, allowed); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
			}
			return d.Errorf(k, path, "%s; known fields: %s", msg, strings.Join(allowed, ", "))
		}
		if prev, dup := own[k.Value]; dup {
			return d.Errorf(k, path, "field %q is set twice (first at line %d)", k.Value, prev.Line)
		}
		own[k.Value] = k
		if _, set := out[k.Value]; !set {
			out[k.Value] = Field{k, v}
		}
	}
	const anyMerge = "<< merges a mapping or a list of mappings, got %s"
	itemMerge := anyMerge
	if d.TerseMergeItems {
		itemMerge = "<< merges mappings, got %s"
	}
	for _, m := range merges {
		m = Resolve(m)
		items := []*yaml.Node{m}
		switch m.Kind {
		case yaml.MappingNode:
		case yaml.SequenceNode:
			items = m.Content
		default:
			return d.Errorf(m, path, anyMerge, Describe(m))
		}
		for _, item := range items {
			item = Resolve(item)
			if item.Kind != yaml.MappingNode {
				return d.Errorf(item, path, itemMerge, Describe(item))
			}
			if err := d.collect(item, path, allowed, out, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Str decodes a scalar as a string; null and booleans are not strings.
func (d *Decoder) Str(n *yaml.Node, path string) (string, error) {
	n = Resolve(n)
	if n.Kind != yaml.ScalarNode || IsNull(n) || n.ShortTag() == "!!bool" {
		return "", d.Errorf(n, path, "want a string, got %s", Describe(n))
	}
	return n.Value, nil
}

// StrList decodes a list of strings, returning the item nodes for errors
// about the items. A null (empty) value is an empty list.
func (d *Decoder) StrList(n *yaml.Node, path string) ([]string, []*yaml.Node, error) {
	n = Resolve(n)
	if IsNull(n) {
		return nil, nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(" (write [%s])", n.Value)
		}
		return nil, nil, d.Errorf(n, path, "want a list, got %s%s", Describe(n), hint)
	}
	out := make([]string, 0, len(n.Content))
	nodes := make([]*yaml.Node, 0, len(n.Content))
	for i, item := range n.Content {
		s, err := d.Str(item, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
		nodes = append(nodes, Resolve(item))
	}
	return out, nodes, nil
}

// Distinct decodes a list of distinct strings as StrList does, checking
// each item with check (when not nil): the error check returns for an item,
// or a repeated item, is reported at that item as path[i].
func (d *Decoder) Distinct(n *yaml.Node, path string, check func(string) error) ([]string, error) {
	vals, nodes, err := d.StrList(n, path)
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		if check != nil {
			if err := check(v); err != nil {
				return nil, d.Errorf(nodes[i], fmt.Sprintf("%s[%d]", path, i), "%v", err)
			}
		}
	}
	for i := range vals {
		if j := slices.Index(vals[:i], vals[i]); j >= 0 {
			return nil, d.Errorf(nodes[i], fmt.Sprintf("%s[%d]", path, i), "duplicate %q (also at %s[%d])", vals[i], path, j)
		}
	}
	return vals, nil
}

// Bool decodes a YAML boolean; strings such as "yes" are not booleans.
func (d *Decoder) Bool(n *yaml.Node, path string) (bool, error) {
	n = Resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, d.Errorf(n, path, "want true or false, got %s", Describe(n))
	}
	return b, nil
}

// Duration decodes a string in time.ParseDuration's syntax, such as 10m.
func (d *Decoder) Duration(n *yaml.Node, path string) (time.Duration, error) {
	s, err := d.Str(n, path)
	if err != nil {
		return 0, err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, d.Errorf(Resolve(n), path, "%q is not a duration (such as 90s, 10m, 1h)", s)
	}
	return v, nil
}

// Resolve follows aliases to the node they name.
func Resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is absent or a YAML null (~, null or nothing).
func IsNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// Describe names a node for an error message, quoting strings: "a
// mapping", "a list", "the number 3", "the boolean true", "nothing (null)",
// `"text"`.
func Describe(n *yaml.Node) string {
	n = Resolve(n)
	switch {
	case IsNull(n):
		return "nothing (null)"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	}
	return strconv.Quote(n.Value)
}

// suggest returns the allowed name closest to s, if it is close.
func suggest(s string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(s), a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, capped for long
// input.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
