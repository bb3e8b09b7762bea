package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// decoder walks the yaml.Node tree of a policy file, so that every error
// carries the line of the node it is about.
type decoder struct {
	yamlnode.Decoder
	// detectionOnly reads the file for the commands that need only its
	// detectors: and response: sections (ParseDetectionOnly): version and
	// holders become optional; whatever is present is still validated.
	detectionOnly bool
}

// newDecoder returns the decoder of the policy file named file.
func newDecoder(file string) *decoder {
	return &decoder{Decoder: yamlnode.Decoder{File: file, Err: ErrInvalid, Suggest: true, Extensions: true, TerseMergeItems: true}}
}

var (
	topFields    = []string{"version", "holders", "detectors", "response"}
	holderFields = []string{"tenant", "holder", "description", "scopes", "audiences", "networks",
		"environments", "windows", "max_ttl", "require_device", "break_glass"}
	windowFields = []string{"days", "start", "end", "zone"}
)

func (d *decoder) policy(data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.Errorf(nil, "", "%s", d.emptyMessage())
		}
		return nil, d.YAMLError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, d.Errorf(&extra, "", "a second YAML document; a policy is a single document")
	} else if !errors.Is(err, io.EOF) {
		return nil, d.YAMLError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, d.Errorf(root, "", "%s", d.emptyMessage())
		}
		root = root.Content[0]
	}
	fields, err := d.Mapping(root, "", topFields)
	if err != nil {
		return nil, err
	}
	p := &Policy{index: map[string]int{}}

	if d.detectionOnly {
		_, hasH := fields["holders"]
		_, hasD := fields["detectors"]
		_, hasR := fields["response"]
		if !hasH && !hasD && !hasR {
			return nil, d.Errorf(root, "", "no detectors: or response: section: nothing to read (without a policy the default thresholds apply)")
		}
	}
	v, ok := fields["version"]
	switch {
	case ok:
		vn := yamlnode.Resolve(v.Val)
		if vn.Kind != yaml.ScalarNode || vn.ShortTag() != "!!int" {
			return nil, d.Errorf(vn, "version", "want the number %d, got %s", Version, yamlnode.Describe(vn))
		}
		if err := vn.Decode(&p.Version); err != nil || p.Version != Version {
			return nil, d.Errorf(vn, "version", "%s is not supported; this build reads version %d", vn.Value, Version)
		}
	case d.detectionOnly:
		p.Version = Version
	default:
		return nil, d.Errorf(root, "", "missing required field %q (write version: %d)", "version", Version)
	}

	h, ok := fields["holders"]
	if !ok && !d.detectionOnly {
		return nil, d.Errorf(root, "", "missing required field %q", "holders")
	}
	var hn *yaml.Node
	if ok {
		hn = yamlnode.Resolve(h.Val)
	}
	switch {
	case hn == nil:
	case yamlnode.IsNull(hn):
	case hn.Kind != yaml.SequenceNode:
		return nil, d.Errorf(hn, "holders", "want a list of holders, got %s", yamlnode.Describe(hn))
	default:
		for i, item := range hn.Content {
			path := fmt.Sprintf("holders[%d]", i)
			c, err := d.ceiling(item, path)
			if err != nil {
				return nil, err
			}
			k := key(c.Tenant, c.Holder)
			if j, dup := p.index[k]; dup {
				return nil, d.Errorf(yamlnode.Resolve(item), path, "duplicate holder %s (first declared at line %d)", c.Name(), p.Holders[j].Line)
			}
			p.index[k] = len(p.Holders)
			p.Holders = append(p.Holders, c)
		}
	}
	if f, ok := fields["detectors"]; ok && !yamlnode.IsNull(yamlnode.Resolve(f.Val)) {
		p.Detectors = yamlnode.Resolve(f.Val)
	}
	if f, ok := fields["response"]; ok && !yamlnode.IsNull(yamlnode.Resolve(f.Val)) {
		p.Response = yamlnode.Resolve(f.Val)
	}
	return p, nil
}

// emptyMessage says what an empty file lacks.
func (d *decoder) emptyMessage() string {
	if d.detectionOnly {
		return "empty policy: want at least a detectors: or response: section"
	}
	return "empty policy: want at least version and holders"
}

func (d *decoder) ceiling(n *yaml.Node, path string) (Ceiling, error) {
	n = yamlnode.Resolve(n)
	c := Ceiling{Line: n.Line}
	fields, err := d.Mapping(n, path, holderFields)
	if err != nil {
		return c, err
	}
	for _, req := range []string{"tenant", "holder", "scopes", "audiences", "max_ttl"} {
		if _, ok := fields[req]; !ok {
			return c, d.Errorf(n, path, "missing required field %q", req)
		}
	}
	sub := func(f string) string { return path + "." + f }

	for _, f := range []struct {
		name string
		dst  *string
	}{{"tenant", &c.Tenant}, {"holder", &c.Holder}} {
		v := fields[f.name].Val
		s, err := d.Str(v, sub(f.name))
		if err != nil {
			return c, err
		}
		if err := checkName(s); err != nil {
			return c, d.Errorf(yamlnode.Resolve(v), sub(f.name), "%v", err)
		}
		*f.dst = s
	}
	if f, ok := fields["description"]; ok && !yamlnode.IsNull(yamlnode.Resolve(f.Val)) {
		if c.Description, err = d.Str(f.Val, sub("description")); err != nil {
			return c, err
		}
	}

	// scopes
	if c.Scopes, err = d.Distinct(fields["scopes"].Val, sub("scopes"), checkScope); err != nil {
		return c, err
	}
	if len(c.Scopes) == 0 {
		return c, d.Errorf(yamlnode.Resolve(fields["scopes"].Val), sub("scopes"), "at least one scope is required")
	}

	// audiences
	if c.Audiences, err = d.Distinct(fields["audiences"].Val, sub("audiences"), checkAudience); err != nil {
		return c, err
	}
	if len(c.Audiences) == 0 {
		return c, d.Errorf(yamlnode.Resolve(fields["audiences"].Val), sub("audiences"), "at least one audience is required")
	}

	// networks
	if f, ok := fields["networks"]; ok {
		nets, nodes, err := d.StrList(f.Val, sub("networks"))
		if err != nil {
			return c, err
		}
		for i, s := range nets {
			pfx, err := ParseNetwork(s)
			if err != nil {
				return c, d.Errorf(nodes[i], fmt.Sprintf("%s[%d]", sub("networks"), i), "%v", err)
			}
			if slices.Contains(c.Networks, pfx) {
				return c, d.Errorf(nodes[i], fmt.Sprintf("%s[%d]", sub("networks"), i), "duplicate %q", s)
			}
			c.Networks = append(c.Networks, pfx)
		}
	}

	// environments
	if f, ok := fields["environments"]; ok {
		if c.Environments, err = d.Distinct(f.Val, sub("environments"), checkName); err != nil {
			return c, err
		}
	}

	// windows
	if f, ok := fields["windows"]; ok {
		wn := yamlnode.Resolve(f.Val)
		switch {
		case yamlnode.IsNull(wn):
		case wn.Kind != yaml.SequenceNode:
			return c, d.Errorf(wn, sub("windows"), "want a list of windows, got %s", yamlnode.Describe(wn))
		default:
			for i, item := range wn.Content {
				w, err := d.window(item, fmt.Sprintf("%s[%d]", sub("windows"), i))
				if err != nil {
					return c, err
				}
				c.Windows = append(c.Windows, w)
			}
		}
	}

	// max_ttl
	ttlNode := yamlnode.Resolve(fields["max_ttl"].Val)
	if ttlNode.Kind != yaml.ScalarNode || ttlNode.ShortTag() != "!!str" {
		return c, d.Errorf(ttlNode, sub("max_ttl"), "want a duration such as 24h or 7d, got %s", yamlnode.Describe(ttlNode))
	}
	ttl, err := ParseDuration(ttlNode.Value)
	if err != nil {
		return c, d.Errorf(ttlNode, sub("max_ttl"), "%v", err)
	}
	if ttl < minTTL {
		return c, d.Errorf(ttlNode, sub("max_ttl"), "%q is shorter than %s", ttlNode.Value, minTTL)
	}
	c.MaxTTL = ttl

	if f, ok := fields["require_device"]; ok {
		if c.RequireDevice, err = d.Bool(f.Val, sub("require_device")); err != nil {
			return c, err
		}
	}
	if f, ok := fields["break_glass"]; ok {
		if c.BreakGlass, err = d.Bool(f.Val, sub("break_glass")); err != nil {
			return c, err
		}
	}
	return c, nil
}

// window decodes a window: a mapping {days, start, end, zone} or the
// compact string "mon-fri 08:00-18:00 Europe/Paris".
func (d *decoder) window(n *yaml.Node, path string) (token.Window, error) {
	n = yamlnode.Resolve(n)
	if n.Kind == yaml.ScalarNode && !yamlnode.IsNull(n) {
		w, err := ParseWindow(n.Value)
		if err != nil {
			return w, d.Errorf(n, path, "%v", err)
		}
		return w, nil
	}
	fields, err := d.Mapping(n, path, windowFields)
	if err != nil {
		return token.Window{}, err
	}
	var w token.Window
	for _, req := range []string{"start", "end"} {
		if _, ok := fields[req]; !ok {
			return w, d.Errorf(n, path, "missing required field %q", req)
		}
	}
	if f, ok := fields["days"]; ok {
		dn := yamlnode.Resolve(f.Val)
		if dn.Kind == yaml.ScalarNode && !yamlnode.IsNull(dn) {
			// days: mon-fri
			if w.Days, err = ParseDays(dn.Value); err != nil {
				return w, d.Errorf(dn, path+".days", "%v", err)
			}
		} else {
			days, nodes, err := d.StrList(f.Val, path+".days")
			if err != nil {
				return w, err
			}
			for i, day := range days {
				if _, ok := dayIndex[strings.ToLower(day)]; !ok {
					return w, d.Errorf(nodes[i], fmt.Sprintf("%s.days[%d]", path, i), "%q is not one of mon, tue, wed, thu, fri, sat, sun", day)
				}
			}
			w.Days = canonicalDays(days)
		}
	}
	if w.Start, err = d.Str(fields["start"].Val, path+".start"); err != nil {
		return w, err
	}
	if w.End, err = d.Str(fields["end"].Val, path+".end"); err != nil {
		return w, err
	}
	if f, ok := fields["zone"]; ok {
		if w.Zone, err = d.Str(f.Val, path+".zone"); err != nil {
			return w, err
		}
		if err := checkZone(w.Zone); err != nil {
			return w, d.Errorf(yamlnode.Resolve(f.Val), path+".zone", "%v", err)
		}
	}
	if err := w.Validate(); err != nil {
		return w, d.Errorf(n, path, "%v", err)
	}
	return w, nil
}

// ParseNetwork parses a source network: a CIDR, or a bare IP address meaning
// that single address. Host bits must be zero and IPv4 is written as IPv4.
func ParseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 network; write it as IPv4", s)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address; write it as IPv4", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// checkName validates a tenant, holder or environment name.
func checkName(s string) error {
	if events.ValidateName(s) != nil {
		return fmt.Errorf("%q is not a valid name: use 1 to 64 characters of a-z, A-Z, 0-9, '-' and '_'", s)
	}
	return nil
}

// checkZone validates an IANA time zone name.
func checkZone(z string) error {
	if z == "" {
		return nil
	}
	if _, err := time.LoadLocation(z); err != nil || z == "Local" {
		return fmt.Errorf("%q is not an IANA time zone such as Europe/Paris or UTC", z)
	}
	return nil
}

// checkScope validates a scope of a ceiling or a request: resource:action,
// where the action may be "*" as a whole and the resource never a wildcard.
func checkScope(s string) error {
	if err := token.ValidateScope(s); err != nil {
		return fmt.Errorf("%q is not a scope: %v", s, err)
	}
	res, act, _ := strings.Cut(s, ":")
	if strings.Contains(res, "*") {
		return fmt.Errorf("%q: the resource cannot be a wildcard; list each resource", s)
	}
	if strings.Contains(act, "*") && act != "*" {
		return fmt.Errorf("%q: only a whole action may be a wildcard, as in %s:*", s, res)
	}
	return nil
}

// checkAudience validates an audience: a service or host name, or "*".
func checkAudience(a string) error {
	if a == "" || len(a) > 253 {
		return fmt.Errorf("%q is not an audience: want 1 to 253 characters", a)
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c > '~' || c == ',' {
			return fmt.Errorf("%q is not an audience: only printable ASCII without spaces or commas", a)
		}
	}
	return nil
}
