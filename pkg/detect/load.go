package detect

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/policy"
)

// LoadConfig reads the detectors: section of a policy file over
// DefaultConfig; no file (an empty path) gives the defaults. The file may
// hold only that section (and response:), or be a whole policy
// (policy.LoadDetectionOnly). Errors name the file, the line and the field.
func LoadConfig(path string) (Config, error) {
	if path == "" {
		return DefaultConfig(), nil
	}
	pol, err := policy.LoadDetectionOnly(path)
	if err != nil {
		return Config{}, err
	}
	return DecodeConfig(pol.File, pol.Detectors)
}

// DecodeConfig decodes a policy file's detectors: section strictly over
// DefaultConfig and validates it: an unknown field, a field given twice, a
// wrong type or an out-of-range value is an error (matching ErrConfig)
// naming the file, the line and the field. A nil or null section gives the
// defaults.
func DecodeConfig(file string, n *yaml.Node) (Config, error) {
	cfg := DefaultConfig()
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return cfg, nil
	}
	if err := checkKnownFields(file, "detectors", n, reflect.TypeOf(cfg)); err != nil {
		return Config{}, err
	}
	if err := n.Decode(&cfg); err != nil {
		return Config{}, &configError{fmt.Errorf("%s: detectors: %w", file, err)}
	}
	if err := cfg.Validate(); err != nil {
		line := n.Line
		if field := fieldOf(err); field != "" {
			if fn := findPath(n, strings.Split(field, ".")); fn != nil {
				line = fn.Line
			}
		}
		return Config{}, fmt.Errorf("%s:%d: detectors: %w", file, line, err)
	}
	return cfg, nil
}

// configError is a decoding error that matches ErrConfig without saying
// so in its message (which names file, line and field).
type configError struct{ err error }

func (e *configError) Error() string   { return e.err.Error() }
func (e *configError) Unwrap() []error { return []error{ErrConfig, e.err} }

// fieldOf extracts the field an ErrConfig error of Validate names
// ("invalid detector config: scope_probing.window: want …").
func fieldOf(err error) string {
	if !errors.Is(err, ErrConfig) {
		return ""
	}
	rest, ok := strings.CutPrefix(err.Error(), ErrConfig.Error()+": ")
	if !ok {
		return ""
	}
	field, _, _ := strings.Cut(rest, ":")
	return field
}

// findPath returns the value node at a dotted path of mapping keys.
func findPath(n *yaml.Node, path []string) *yaml.Node {
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

// checkKnownFields rejects mapping keys that no yaml tag of t names, and
// keys given twice, recursing into nested structs.
func checkKnownFields(file, path string, n *yaml.Node, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Duration(0)) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return &configError{fmt.Errorf("%s:%d: %s: want a mapping, got %s", file, n.Line, path, n.ShortTag())}
	}
	fields := map[string]reflect.Type{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = sf.Type
		names = append(names, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		if !ok {
			return &configError{fmt.Errorf("%s:%d: %s: unknown field %q (known: %s)", file, k.Line, path, k.Value, strings.Join(names, ", "))}
		}
		if seen[k.Value] {
			return &configError{fmt.Errorf("%s:%d: %s: field %q is set twice", file, k.Line, path, k.Value)}
		}
		seen[k.Value] = true
		if err := checkKnownFields(file, path+"."+k.Value, v, ft); err != nil {
			return err
		}
	}
	return nil
}
