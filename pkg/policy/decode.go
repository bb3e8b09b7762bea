package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// decoder walks the yaml.Node tree of a policy file, so that every error
// carries the line of the node it is about.
type decoder struct {
	file string
}

// kv is one key/value pair of a mapping.
type kv struct {
	key, val *yaml.Node
}

var (
	topFields    = []string{"version", "holders", "detectors", "response"}
	holderFields = []string{"tenant", "holder", "description", "scopes", "audiences", "networks",
		"environments", "windows", "max_ttl", "require_device", "break_glass"}
	windowFields = []string{"days", "start", "end", "zone"}
)

// maxMergeDepth bounds nested merge keys (<<: *a where a merges b …).
const maxMergeDepth = 8

func (d *decoder) errf(n *yaml.Node, field, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlErr turns a yaml syntax error into an *Error with its line.
func (d *decoder) yamlErr(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.file, Line: line, Msg: "yaml: " + m[2]}
	}
	return &Error{File: d.file, Msg: msg}
}

func (d *decoder) policy(data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.errf(nil, "", "empty policy: want at least version and holders")
		}
		return nil, d.yamlErr(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, d.errf(&extra, "", "a second YAML document; a policy is a single document")
	} else if !errors.Is(err, io.EOF) {
		return nil, d.yamlErr(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, d.errf(root, "", "empty policy: want at least version and holders")
		}
		root = root.Content[0]
	}
	fields, err := d.mapping(root, "", topFields)
	if err != nil {
		return nil, err
	}
	p := &Policy{index: map[string]int{}}

	v, ok := fields["version"]
	if !ok {
		return nil, d.errf(root, "", "missing required field %q (write version: %d)", "version", Version)
	}
	vn := resolve(v.val)
	if vn.Kind != yaml.ScalarNode || vn.ShortTag() != "!!int" {
		return nil, d.errf(vn, "version", "want the number %d, got %s", Version, describe(vn))
	}
	if err := vn.Decode(&p.Version); err != nil || p.Version != Version {
		return nil, d.errf(vn, "version", "%s is not supported; this build reads version %d", vn.Value, Version)
	}

	h, ok := fields["holders"]
	if !ok {
		return nil, d.errf(root, "", "missing required field %q", "holders")
	}
	hn := resolve(h.val)
	switch {
	case isNull(hn):
	case hn.Kind != yaml.SequenceNode:
		return nil, d.errf(hn, "holders", "want a list of holders, got %s", describe(hn))
	default:
		for i, item := range hn.Content {
			path := fmt.Sprintf("holders[%d]", i)
			c, err := d.ceiling(item, path)
			if err != nil {
				return nil, err
			}
			k := key(c.Tenant, c.Holder)
			if j, dup := p.index[k]; dup {
				return nil, d.errf(resolve(item), path, "duplicate holder %s (first declared at line %d)", c.Name(), p.Holders[j].Line)
			}
			p.index[k] = len(p.Holders)
			p.Holders = append(p.Holders, c)
		}
	}
	if f, ok := fields["detectors"]; ok && !isNull(resolve(f.val)) {
		p.Detectors = resolve(f.val)
	}
	if f, ok := fields["response"]; ok && !isNull(resolve(f.val)) {
		p.Response = resolve(f.val)
	}
	return p, nil
}

func (d *decoder) ceiling(n *yaml.Node, path string) (Ceiling, error) {
	n = resolve(n)
	c := Ceiling{Line: n.Line}
	fields, err := d.mapping(n, path, holderFields)
	if err != nil {
		return c, err
	}
	for _, req := range []string{"tenant", "holder", "scopes", "audiences", "max_ttl"} {
		if _, ok := fields[req]; !ok {
			return c, d.errf(n, path, "missing required field %q", req)
		}
	}
	sub := func(f string) string { return path + "." + f }

	for _, f := range []struct {
		name string
		dst  *string
	}{{"tenant", &c.Tenant}, {"holder", &c.Holder}} {
		v := fields[f.name].val
		s, err := d.str(v, sub(f.name))
		if err != nil {
			return c, err
		}
		if err := checkName(s); err != nil {
			return c, d.errf(resolve(v), sub(f.name), "%v", err)
		}
		*f.dst = s
	}
	if f, ok := fields["description"]; ok && !isNull(resolve(f.val)) {
		if c.Description, err = d.str(f.val, sub("description")); err != nil {
			return c, err
		}
	}

	// scopes
	scopes, nodes, err := d.strList(fields["scopes"].val, sub("scopes"))
	if err != nil {
		return c, err
	}
	if len(scopes) == 0 {
		return c, d.errf(resolve(fields["scopes"].val), sub("scopes"), "at least one scope is required")
	}
	for i, s := range scopes {
		if err := checkScope(s); err != nil {
			return c, d.errf(nodes[i], fmt.Sprintf("%s[%d]", sub("scopes"), i), "%v", err)
		}
	}
	if err := d.noDup(scopes, nodes, sub("scopes")); err != nil {
		return c, err
	}
	c.Scopes = scopes

	// audiences
	auds, nodes, err := d.strList(fields["audiences"].val, sub("audiences"))
	if err != nil {
		return c, err
	}
	if len(auds) == 0 {
		return c, d.errf(resolve(fields["audiences"].val), sub("audiences"), "at least one audience is required")
	}
	for i, a := range auds {
		if err := checkAudience(a); err != nil {
			return c, d.errf(nodes[i], fmt.Sprintf("%s[%d]", sub("audiences"), i), "%v", err)
		}
	}
	if err := d.noDup(auds, nodes, sub("audiences")); err != nil {
		return c, err
	}
	c.Audiences = auds

	// networks
	if f, ok := fields["networks"]; ok {
		nets, nodes, err := d.strList(f.val, sub("networks"))
		if err != nil {
			return c, err
		}
		for i, s := range nets {
			pfx, err := ParseNetwork(s)
			if err != nil {
				return c, d.errf(nodes[i], fmt.Sprintf("%s[%d]", sub("networks"), i), "%v", err)
			}
			if slices.Contains(c.Networks, pfx) {
				return c, d.errf(nodes[i], fmt.Sprintf("%s[%d]", sub("networks"), i), "duplicate %q", s)
			}
			c.Networks = append(c.Networks, pfx)
		}
	}

	// environments
	if f, ok := fields["environments"]; ok {
		envs, nodes, err := d.strList(f.val, sub("environments"))
		if err != nil {
			return c, err
		}
		for i, e := range envs {
			if err := checkName(e); err != nil {
				return c, d.errf(nodes[i], fmt.Sprintf("%s[%d]", sub("environments"), i), "%v", err)
			}
		}
		if err := d.noDup(envs, nodes, sub("environments")); err != nil {
			return c, err
		}
		c.Environments = envs
	}

	// windows
	if f, ok := fields["windows"]; ok {
		wn := resolve(f.val)
		switch {
		case isNull(wn):
		case wn.Kind != yaml.SequenceNode:
			return c, d.errf(wn, sub("windows"), "want a list of windows, got %s", describe(wn))
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
	ttlNode := resolve(fields["max_ttl"].val)
	if ttlNode.Kind != yaml.ScalarNode || ttlNode.ShortTag() != "!!str" {
		return c, d.errf(ttlNode, sub("max_ttl"), "want a duration such as 24h or 7d, got %s", describe(ttlNode))
	}
	ttl, err := ParseDuration(ttlNode.Value)
	if err != nil {
		return c, d.errf(ttlNode, sub("max_ttl"), "%v", err)
	}
	if ttl < minTTL {
		return c, d.errf(ttlNode, sub("max_ttl"), "%q is shorter than %s", ttlNode.Value, minTTL)
	}
	c.MaxTTL = ttl

	if f, ok := fields["require_device"]; ok {
		if c.RequireDevice, err = d.boolean(f.val, sub("require_device")); err != nil {
			return c, err
		}
	}
	if f, ok := fields["break_glass"]; ok {
		if c.BreakGlass, err = d.boolean(f.val, sub("break_glass")); err != nil {
			return c, err
		}
	}
	return c, nil
}

// window decodes a window: a mapping {days, start, end, zone} or the
// compact string "mon-fri 08:00-18:00 Europe/Paris".
func (d *decoder) window(n *yaml.Node, path string) (token.Window, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		w, err := ParseWindow(n.Value)
		if err != nil {
			return w, d.errf(n, path, "%v", err)
		}
		return w, nil
	}
	fields, err := d.mapping(n, path, windowFields)
	if err != nil {
		return token.Window{}, err
	}
	var w token.Window
	for _, req := range []string{"start", "end"} {
		if _, ok := fields[req]; !ok {
			return w, d.errf(n, path, "missing required field %q", req)
		}
	}
	if f, ok := fields["days"]; ok {
		dn := resolve(f.val)
		if dn.Kind == yaml.ScalarNode && !isNull(dn) {
			// days: mon-fri
			if w.Days, err = ParseDays(dn.Value); err != nil {
				return w, d.errf(dn, path+".days", "%v", err)
			}
		} else {
			days, nodes, err := d.strList(f.val, path+".days")
			if err != nil {
				return w, err
			}
			for i, day := range days {
				if _, ok := dayIndex[strings.ToLower(day)]; !ok {
					return w, d.errf(nodes[i], fmt.Sprintf("%s.days[%d]", path, i), "%q is not one of mon, tue, wed, thu, fri, sat, sun", day)
				}
			}
			w.Days = canonicalDays(days)
		}
	}
	if w.Start, err = d.str(fields["start"].val, path+".start"); err != nil {
		return w, err
	}
	if w.End, err = d.str(fields["end"].val, path+".end"); err != nil {
		return w, err
	}
	if f, ok := fields["zone"]; ok {
		if w.Zone, err = d.str(f.val, path+".zone"); err != nil {
			return w, err
		}
		if err := checkZone(w.Zone); err != nil {
			return w, d.errf(resolve(f.val), path+".zone", "%v", err)
		}
	}
	if err := w.Validate(); err != nil {
		return w, d.errf(n, path, "%v", err)
	}
	return w, nil
}

// mapping returns the fields of a mapping node, resolving aliases and merge
// keys, and rejecting unknown and duplicate keys.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string) (map[string]kv, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		where := path
		return nil, d.errf(n, where, "want a mapping, got %s", describe(n))
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
		if path == "" && strings.HasPrefix(k.Value, "x-") {
			continue // top-level extension keys hold anchors and are ignored
		}
		if !slices.Contains(allowed, k.Value) {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := suggest(k.Value, allowed); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return d.errf(k, path, "%s; known fields: %s", msg, strings.Join(allowed, ", "))
		}
		if prev, dup := own[k.Value]; dup {
			return d.errf(k, path, "field %q is set twice (first at line %d)", k.Value, prev.Line)
		}
		own[k.Value] = k
		if _, set := out[k.Value]; !set { // a mapping's own keys win over what it merges
			out[k.Value] = kv{k, v}
		}
	}
	for _, m := range merges {
		m = resolve(m)
		switch m.Kind {
		case yaml.MappingNode:
			if err := d.collect(m, path, allowed, out, depth+1); err != nil {
				return err
			}
		case yaml.SequenceNode:
			for _, item := range m.Content {
				item = resolve(item)
				if item.Kind != yaml.MappingNode {
					return d.errf(item, path, "<< merges mappings, got %s", describe(item))
				}
				if err := d.collect(item, path, allowed, out, depth+1); err != nil {
					return err
				}
			}
		default:
			return d.errf(m, path, "<< merges a mapping or a list of mappings, got %s", describe(m))
		}
	}
	return nil
}

// str decodes a scalar as a string.
func (d *decoder) str(n *yaml.Node, path string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) || n.ShortTag() == "!!bool" {
		return "", d.errf(n, path, "want a string, got %s", describe(n))
	}
	return n.Value, nil
}

// strList decodes a list of strings, returning the item nodes for errors.
// A null (empty) value is an empty list.
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

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names a node for an error message, quoting scalars.
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
