package response

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
)

// MaxFileSize bounds a policy file read by LoadFile.
const MaxFileSize = 4 << 20

var (
	sectionFields = []string{"dry_run", "rules"}
	ruleFields    = []string{"name", "detectors", "min_severity", "tenants", "holders", "all_of", "within", "action", "dry_run"}
	severities    = []string{events.SeverityLow, events.SeverityMedium, events.SeverityHigh, events.SeverityCritical}
)

// Decode decodes the response section of the policy file named file from
// its YAML node (the value of the `response:` key, as pkg/policy keeps it).
// A nil or null node, or a section without rules, gives the default rules
// (with the section's dry_run, if any).
func Decode(file string, n *yaml.Node) (*Policy, error) {
	d := &decoder{file: file}
	p, err := d.section(n)
	if err != nil {
		return nil, err
	}
	p.File = file
	return p, nil
}

// Parse decodes the response section of a whole policy file (other
// top-level keys are pkg/policy's and ignored here). A file without one
// gives Default.
func Parse(file string, data []byte) (*Policy, error) {
	d := &decoder{file: file}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Decode(file, nil)
		}
		return nil, d.yamlErr(err)
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = resolve(root.Content[0])
	}
	if isNull(root) {
		return Decode(file, nil)
	}
	if root.Kind != yaml.MappingNode {
		return nil, d.errf(root, "", "want a mapping at the top of the policy file, got %s", describe(root))
	}
	var section *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "response" {
			if section != nil {
				return nil, d.errf(k, "response", "field %q is set twice", "response")
			}
			section = root.Content[i+1]
		}
	}
	return Decode(file, section)
}

// LoadFile reads the policy file at path and decodes its response section.
func LoadFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load response policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load response policy %s: %w", path, err)
	}
	if len(b) > MaxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	return Parse(path, b)
}

// decoder walks the yaml.Node tree so that errors carry lines.
type decoder struct {
	file string
}

type kv struct{ key, val *yaml.Node }

func (d *decoder) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) yamlErr(err error) error {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.file, Line: line, Msg: "yaml: " + m[2]}
	}
	return &Error{File: d.file, Msg: err.Error()}
}

func (d *decoder) section(n *yaml.Node) (*Policy, error) {
	const path = "response"
	n = resolve(n)
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = resolve(n.Content[0])
	}
	if isNull(n) {
		return Default(), nil
	}
	fields, err := d.mapping(n, path, sectionFields)
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	if f, ok := fields["dry_run"]; ok {
		if p.DryRun, err = d.boolean(f.val, path+".dry_run"); err != nil {
			return nil, err
		}
	}
	if f, ok := fields["rules"]; ok {
		rn := resolve(f.val)
		if !isNull(rn) {
			if rn.Kind != yaml.SequenceNode {
				return nil, d.errf(rn, path+".rules", "want a list of rules, got %s", describe(rn))
			}
			names := map[string]int{}
			for i, item := range rn.Content {
				rp := fmt.Sprintf("%s.rules[%d]", path, i)
				r, err := d.rule(item, rp, i)
				if err != nil {
					return nil, err
				}
				if first, dup := names[r.Name]; dup {
					return nil, d.errf(resolve(item), rp+".name", "duplicate rule name %q (also rules[%d])", r.Name, first)
				}
				names[r.Name] = i
				p.Rules = append(p.Rules, r)
			}
		}
	}
	if len(p.Rules) == 0 {
		def := Default()
		def.DryRun = p.DryRun
		return def, nil
	}
	return p, nil
}

func (d *decoder) rule(n *yaml.Node, path string, i int) (Rule, error) {
	r := Rule{Name: fmt.Sprintf("rules[%d]", i), Line: resolve(n).Line}
	fields, err := d.mapping(n, path, ruleFields)
	if err != nil {
		return r, err
	}
	if f, ok := fields["name"]; ok {
		if r.Name, err = d.str(f.val, path+".name"); err != nil {
			return r, err
		}
		if err := events.ValidateName(r.Name); err != nil {
			return r, d.errf(resolve(f.val), path+".name", "%v", err)
		}
	}
	detectorList := func(field string) ([]string, error) {
		f, ok := fields[field]
		if !ok {
			return nil, nil
		}
		vals, nodes, err := d.strList(f.val, path+"."+field)
		if err != nil {
			return nil, err
		}
		for j, v := range vals {
			if !slices.Contains(KnownDetectors, v) {
				return nil, d.errf(nodes[j], fmt.Sprintf("%s.%s[%d]", path, field, j), "unknown detector %q; known detectors: %s",
					v, strings.Join(KnownDetectors, ", "))
			}
		}
		return vals, d.noDup(vals, nodes, path+"."+field)
	}
	if r.Detectors, err = detectorList("detectors"); err != nil {
		return r, err
	}
	if r.AllOf, err = detectorList("all_of"); err != nil {
		return r, err
	}
	if f, ok := fields["min_severity"]; ok {
		if r.MinSeverity, err = d.str(f.val, path+".min_severity"); err != nil {
			return r, err
		}
		if events.SeverityRank(r.MinSeverity) < 0 {
			return r, d.errf(resolve(f.val), path+".min_severity", "%q is not one of %s", r.MinSeverity, strings.Join(severities, ", "))
		}
	}
	names := func(field string) ([]string, error) {
		f, ok := fields[field]
		if !ok {
			return nil, nil
		}
		vals, nodes, err := d.strList(f.val, path+"."+field)
		if err != nil {
			return nil, err
		}
		for j, v := range vals {
			if err := events.ValidateName(v); err != nil {
				return nil, d.errf(nodes[j], fmt.Sprintf("%s.%s[%d]", path, field, j), "%v", err)
			}
		}
		return vals, d.noDup(vals, nodes, path+"."+field)
	}
	if r.Tenants, err = names("tenants"); err != nil {
		return r, err
	}
	if r.Holders, err = names("holders"); err != nil {
		return r, err
	}
	if f, ok := fields["within"]; ok {
		if r.Within, err = d.duration(f.val, path+".within"); err != nil {
			return r, err
		}
		if r.Within <= 0 || r.Within > MaxWithin {
			return r, d.errf(resolve(f.val), path+".within", "%q must be more than 0 and at most %s", resolve(f.val).Value, MaxWithin)
		}
	}
	switch {
	case len(r.AllOf) == 1:
		return r, d.errf(resolve(fields["all_of"].val), path+".all_of", "a combination needs at least two detectors, got %q", r.AllOf[0])
	case len(r.AllOf) > 1 && r.Within == 0:
		return r, d.errf(resolve(fields["all_of"].key), path+".within", "all_of needs a window: add within (such as within: 10m)")
	case len(r.AllOf) == 0 && r.Within != 0:
		return r, d.errf(resolve(fields["within"].key), path+".within", "within only applies to all_of")
	}
	f, ok := fields["action"]
	if !ok {
		return r, d.errf(resolve(n), path+".action", "missing: every rule needs an action (revoke or alert)")
	}
	act, err := d.str(f.val, path+".action")
	if err != nil {
		return r, err
	}
	switch Action(act) {
	case ActionRevoke, ActionAlert:
		r.Action = Action(act)
	default:
		return r, d.errf(resolve(f.val), path+".action", "%q is not one of revoke, alert", act)
	}
	if f, ok := fields["dry_run"]; ok {
		if r.DryRun, err = d.boolean(f.val, path+".dry_run"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// maxMergeDepth bounds nested merge keys.
const maxMergeDepth = 8

// mapping returns the fields of a mapping node, resolving aliases and merge
// keys and rejecting unknown and duplicate keys.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string) (map[string]kv, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, d.errf(n, path, "want a mapping, got %s", describe(n))
	}
	out := map[string]kv{}
	if err := d.collect(n, path, allowed, out, 0); err != nil {
		return nil, err
	}
	return out, nil
}

func (d *decoder) collect(n *yaml.Node, path string, allowed []string, out map[string]kv, depth int) error {
	if depth > maxMergeDepth {
		return d.errf(n, path, "merge keys nested more than %d deep", maxMergeDepth)
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
			return d.errf(k, path, "a key must be a plain string, got %s", describe(k))
		}
		if !slices.Contains(allowed, k.Value) {
			return d.errf(k, path, "unknown field %q; known fields: %s", k.Value, strings.Join(allowed, ", "))
		}
		if prev, dup := own[k.Value]; dup {
			return d.errf(k, path, "field %q is set twice (first at line %d)", k.Value, prev.Line)
		}
		own[k.Value] = k
		if _, set := out[k.Value]; !set {
			out[k.Value] = kv{k, v}
		}
	}
	for _, m := range merges {
		m = resolve(m)
		items := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			items = m.Content
		}
		for _, item := range items {
			item = resolve(item)
			if item.Kind != yaml.MappingNode {
				return d.errf(item, path, "<< merges a mapping or a list of mappings, got %s", describe(item))
			}
			if err := d.collect(item, path, allowed, out, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *decoder) str(n *yaml.Node, path string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) || n.ShortTag() == "!!bool" {
		return "", d.errf(n, path, "want a string, got %s", describe(n))
	}
	return n.Value, nil
}

func (d *decoder) strList(n *yaml.Node, path string) ([]string, []*yaml.Node, error) {
	n = resolve(n)
	if isNull(n) {
		return nil, nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(" (write [%s])", n.Value)
		}
		return nil, nil, d.errf(n, path, "want a list, got %s%s", describe(n), hint)
	}
	out := make([]string, 0, len(n.Content))
	nodes := make([]*yaml.Node, 0, len(n.Content))
	for i, item := range n.Content {
		s, err := d.str(item, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
		nodes = append(nodes, resolve(item))
	}
	return out, nodes, nil
}

func (d *decoder) noDup(vals []string, nodes []*yaml.Node, path string) error {
	for i := range vals {
		if j := slices.Index(vals[:i], vals[i]); j >= 0 {
			return d.errf(nodes[i], fmt.Sprintf("%s[%d]", path, i), "duplicate %q (also at %s[%d])", vals[i], path, j)
		}
	}
	return nil
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, error) {
	n = resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, d.errf(n, path, "want true or false, got %s", describe(n))
	}
	return b, nil
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, error) {
	s, err := d.str(n, path)
	if err != nil {
		return 0, err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, d.errf(resolve(n), path, "%q is not a duration (such as 90s, 10m, 1h)", s)
	}
	return v, nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func describe(n *yaml.Node) string {
	n = resolve(n)
	switch {
	case isNull(n):
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
