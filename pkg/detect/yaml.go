package detect

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

var yamlLine = regexp.MustCompile(`line (\d+)`)

// DecodeConfig decodes the `detectors:` section of a policy file over
// DefaultConfig and validates it. Unknown fields are errors; messages name
// the file and the line in it. A nil node gives the defaults.
func DecodeConfig(file string, n *yaml.Node) (Config, error) {
	cfg := DefaultConfig()
	if n == nil {
		return cfg, nil
	}
	// yaml.v3 checks unknown fields only when decoding a document, so the
	// section is re-encoded (block style keeps its line layout) and decoded
	// strictly; reported lines are shifted back to the file's.
	b, err := yaml.Marshal(n)
	if err != nil {
		return cfg, fmt.Errorf("%s:%d: detectors: %w", file, n.Line, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		msg := yamlLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
			l, _ := strconv.Atoi(yamlLine.FindStringSubmatch(m)[1])
			return "line " + strconv.Itoa(l+n.Line-1)
		})
		return cfg, fmt.Errorf("%s:%d: detectors: %s: %w", file, n.Line, msg, ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s:%d: detectors: %w", file, n.Line, err)
	}
	return cfg, nil
}
