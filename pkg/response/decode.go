package response

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// MaxFileSize bounds a policy file read by LoadFile.
const MaxFileSize = 4 << 20

var (
	sectionFields = []string{"dry_run", "rules"}
	ruleFields    = []string{"name", "detectors", "min_severity", "min_risk", "tenants", "holders", "all_of", "within", "action", "for", "would", "corroborate", "dry_run"}
	corrFields    = []string{"min_enforcers", "require_allowed", "within"}
	severities    = []string{events.SeverityLow, events.SeverityMedium, events.SeverityHigh, events.SeverityCritical}
)

// Decode decodes the response section of the policy file named file from
// its YAML node (the value of the `response:` key, as pkg/policy keeps it).
// A nil or null node, or a section without rules, gives the default rules
// (with the section's dry_run, if any).
func Decode(file string, n *yaml.Node) (*Policy, error) {
	d := newDecoder(file)
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
	d := newDecoder(file)
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Decode(file, nil)
		}
		return nil, d.YAMLError(err)
	}
	root := yamlnode.Resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = yamlnode.Resolve(root.Content[0])
	}
	if yamlnode.IsNull(root) {
		return Decode(file, nil)
	}
	if root.Kind != yaml.MappingNode {
		return nil, d.Errorf(root, "", "want a mapping at the top of the policy file, got %s", yamlnode.Describe(root))
	}
	var section *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "response" {
			if section != nil {
				return nil, d.Errorf(k, "response", "field %q is set twice", "response")
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
		return nil, newDecoder(path).Errorf(nil, "", "file is larger than %d bytes", MaxFileSize)
	}
	return Parse(path, b)
}

// decoder walks the yaml.Node tree so that errors carry lines.
type decoder struct {
	yamlnode.Decoder
}

// newDecoder returns the decoder of the policy file named file.
func newDecoder(file string) *decoder {
	return &decoder{yamlnode.Decoder{File: file, Err: ErrInvalid}}
}

func (d *decoder) section(n *yaml.Node) (*Policy, error) {
	const path = "response"
	n = yamlnode.Resolve(n)
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = yamlnode.Resolve(n.Content[0])
	}
	if yamlnode.IsNull(n) {
		return Default(), nil
	}
	fields, err := d.Mapping(n, path, sectionFields)
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	if f, ok := fields["dry_run"]; ok {
		if p.DryRun, err = d.Bool(f.Val, path+".dry_run"); err != nil {
			return nil, err
		}
	}
	if f, ok := fields["rules"]; ok {
		rn := yamlnode.Resolve(f.Val)
		if !yamlnode.IsNull(rn) {
			if rn.Kind != yaml.SequenceNode {
				return nil, d.Errorf(rn, path+".rules", "want a list of rules, got %s", yamlnode.Describe(rn))
			}
			names := map[string]int{}
			for i, item := range rn.Content {
				rp := fmt.Sprintf("%s.rules[%d]", path, i)
				r, err := d.rule(item, rp, i)
				if err != nil {
					return nil, err
				}
				if first, dup := names[r.Name]; dup {
					return nil, d.Errorf(yamlnode.Resolve(item), rp+".name", "duplicate rule name %q (also rules[%d])", r.Name, first)
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
	r := Rule{Name: fmt.Sprintf("rules[%d]", i), Line: yamlnode.Resolve(n).Line}
	fields, err := d.Mapping(n, path, ruleFields)
	if err != nil {
		return r, err
	}
	if f, ok := fields["name"]; ok {
		if r.Name, err = d.Str(f.Val, path+".name"); err != nil {
			return r, err
		}
		if err := events.ValidateName(r.Name); err != nil {
			return r, d.Errorf(yamlnode.Resolve(f.Val), path+".name", "%v", err)
		}
	}
	list := func(field string, check func(string) error) ([]string, error) {
		f, ok := fields[field]
		if !ok {
			return nil, nil
		}
		return d.Distinct(f.Val, path+"."+field, check)
	}
	if r.Detectors, err = list("detectors", knownDetector); err != nil {
		return r, err
	}
	if r.AllOf, err = list("all_of", knownDetector); err != nil {
		return r, err
	}
	if f, ok := fields["min_severity"]; ok {
		if r.MinSeverity, err = d.Str(f.Val, path+".min_severity"); err != nil {
			return r, err
		}
		if events.SeverityRank(r.MinSeverity) < 0 {
			return r, d.Errorf(yamlnode.Resolve(f.Val), path+".min_severity", "%q is not one of %s", r.MinSeverity, strings.Join(severities, ", "))
		}
	}
	if f, ok := fields["min_risk"]; ok {
		v := yamlnode.Resolve(f.Val)
		if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!float" && v.ShortTag() != "!!int") {
			return r, d.Errorf(v, path+".min_risk", "want a risk score between 0 and 1 (such as 0.8), got %s", yamlnode.Describe(v))
		}
		m, err := strconv.ParseFloat(v.Value, 64)
		if err != nil || !(m > 0 && m <= 1) {
			return r, d.Errorf(v, path+".min_risk", "%q: want a risk score above 0 and at most 1 (such as 0.8)", v.Value)
		}
		r.MinRisk = m
	}
	if r.Tenants, err = list("tenants", events.ValidateName); err != nil {
		return r, err
	}
	if r.Holders, err = list("holders", events.ValidateName); err != nil {
		return r, err
	}
	if f, ok := fields["within"]; ok {
		if r.Within, err = d.Duration(f.Val, path+".within"); err != nil {
			return r, err
		}
		if r.Within <= 0 || r.Within > MaxWithin {
			return r, d.Errorf(yamlnode.Resolve(f.Val), path+".within", "%q must be more than 0 and at most %s", yamlnode.Resolve(f.Val).Value, MaxWithin)
		}
	}
	switch {
	case len(r.AllOf) == 1:
		return r, d.Errorf(yamlnode.Resolve(fields["all_of"].Val), path+".all_of", "a combination needs at least two detectors, got %q", r.AllOf[0])
	case len(r.AllOf) > 1 && r.Within == 0:
		return r, d.Errorf(yamlnode.Resolve(fields["all_of"].Key), path+".within", "all_of needs a window: add within (such as within: 10m)")
	case len(r.AllOf) == 0 && r.Within != 0:
		return r, d.Errorf(yamlnode.Resolve(fields["within"].Key), path+".within", "within only applies to all_of")
	}
	f, ok := fields["action"]
	if !ok {
		return r, d.Errorf(yamlnode.Resolve(n), path+".action", "missing: every rule needs an action (%s)", actionList())
	}
	act, err := d.Str(f.Val, path+".action")
	if err != nil {
		return r, err
	}
	if !slices.Contains(Actions, Action(act)) {
		return r, d.Errorf(yamlnode.Resolve(f.Val), path+".action", "%q is not one of %s", act, actionList())
	}
	r.Action = Action(act)
	if f, ok := fields["for"]; ok {
		if r.Action != ActionNarrow && r.Action != ActionStepUp {
			return r, d.Errorf(yamlnode.Resolve(f.Key), path+".for", "applies to action: narrow or step_up only (how long the restriction lasts)")
		}
		if r.For, err = d.Duration(f.Val, path+".for"); err != nil {
			return r, err
		}
		if r.For <= 0 || r.For > events.MaxRestriction {
			return r, d.Errorf(yamlnode.Resolve(f.Val), path+".for", "%q must be more than 0 and at most %s", yamlnode.Resolve(f.Val).Value, events.MaxRestriction)
		}
	} else if r.Action == ActionNarrow || r.Action == ActionStepUp {
		r.For = DefaultRestriction
	}
	if f, ok := fields["would"]; ok {
		if r.Action != ActionShadow {
			return r, d.Errorf(yamlnode.Resolve(f.Key), path+".would", "applies to action: shadow only (the step it records)")
		}
		w, err := d.Str(f.Val, path+".would")
		if err != nil {
			return r, err
		}
		if !Action(w).restricts() {
			return r, d.Errorf(yamlnode.Resolve(f.Val), path+".would", "%q is not one of narrow, step_up, revoke", w)
		}
		r.Would = Action(w)
	} else if r.Action == ActionShadow {
		r.Would = ActionRevoke
	}
	if f, ok := fields["corroborate"]; ok {
		if !r.Action.restricts() {
			return r, d.Errorf(yamlnode.Resolve(f.Key), path+".corroborate", "applies to actions revoke, narrow and step_up only (%s needs no corroboration)", r.Action)
		}
		if r.Corroborate, err = d.corroboration(f.Val, path+".corroborate", r.Within); err != nil {
			return r, err
		}
	}
	if f, ok := fields["dry_run"]; ok {
		if r.DryRun, err = d.Bool(f.Val, path+".dry_run"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// corroboration decodes a rule's corroborate: section; ruleWithin is the
// rule's all_of window, the default window.
func (d *decoder) corroboration(n *yaml.Node, path string, ruleWithin time.Duration) (*Corroboration, error) {
	fields, err := d.Mapping(n, path, corrFields)
	if err != nil {
		return nil, err
	}
	c := &Corroboration{Within: ruleWithin}
	if c.Within == 0 {
		c.Within = DefaultCorroborationWindow
	}
	if f, ok := fields["min_enforcers"]; ok {
		v := yamlnode.Resolve(f.Val)
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
			return nil, d.Errorf(v, path+".min_enforcers", "want a whole number of enforcers, got %s", yamlnode.Describe(v))
		}
		m, err := strconv.Atoi(v.Value)
		if err != nil || m < 2 || m > MaxMinEnforcers {
			return nil, d.Errorf(v, path+".min_enforcers", "%q: want 2 to %d (1 asks for nothing: leave it out)", v.Value, MaxMinEnforcers)
		}
		c.MinEnforcers = m
	}
	if f, ok := fields["require_allowed"]; ok {
		if c.RequireAllowed, err = d.Bool(f.Val, path+".require_allowed"); err != nil {
			return nil, err
		}
	}
	if f, ok := fields["within"]; ok {
		if c.Within, err = d.Duration(f.Val, path+".within"); err != nil {
			return nil, err
		}
		if c.Within <= 0 || c.Within > MaxWithin {
			return nil, d.Errorf(yamlnode.Resolve(f.Val), path+".within", "%q must be more than 0 and at most %s", yamlnode.Resolve(f.Val).Value, MaxWithin)
		}
	}
	if c.MinEnforcers == 0 && !c.RequireAllowed {
		return nil, d.Errorf(yamlnode.Resolve(n), path, "asks for nothing: set min_enforcers (2 or more) and/or require_allowed: true")
	}
	return c, nil
}

// actionList is the actions, for errors.
func actionList() string {
	s := make([]string, len(Actions))
	for i, a := range Actions {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

// knownDetector rejects a detector name that is not in KnownDetectors.
func knownDetector(name string) error {
	if !slices.Contains(KnownDetectors, name) {
		return fmt.Errorf("unknown detector %q; known detectors: %s", name, strings.Join(KnownDetectors, ", "))
	}
	return nil
}
