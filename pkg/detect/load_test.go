package detect_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/detect"
)

func TestDecodeConfig(t *testing.T) {
	section := func(t *testing.T, doc string) *yaml.Node {
		t.Helper()
		var root yaml.Node
		if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
			t.Fatal(err)
		}
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "detectors" {
				return m.Content[i+1]
			}
		}
		return nil
	}
	good := "version: 1\ndetectors:\n  cooldown: 2h\n  learning:\n    min_events: 7\n"
	cfg, err := detect.DecodeConfig("p.yaml", section(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cooldown != 2*time.Hour || cfg.Learning.MinEvents != 7 {
		t.Fatalf("not decoded: %+v", cfg)
	}
	if cfg.NewNetwork != detect.DefaultConfig().NewNetwork {
		t.Fatal("defaults not kept for omitted fields")
	}
	bad := "version: 1\ndetectors:\n  cooldown: 2h\n  learnin:\n    min_events: 7\n"
	_, err = detect.DecodeConfig("p.yaml", section(t, bad))
	if !errors.Is(err, detect.ErrConfig) || !strings.Contains(err.Error(), "p.yaml:4: detectors: unknown field \"learnin\"") {
		t.Fatalf("unknown field: got %v", err)
	}
	if cfg, err := detect.DecodeConfig("p.yaml", nil); err != nil || cfg.Cooldown != detect.DefaultConfig().Cooldown {
		t.Fatalf("nil section: %v", err)
	}
}

const policyHead = "version: 1\nholders:\n  - tenant: acme\n    holder: billing-api\n    scopes: [invoices:read]\n    audiences: [payments]\n    max_ttl: 24h\n"

// TestLoadConfig: the detectors: section of a policy file (or of a file
// with only that section) over the defaults; every mistake names the file,
// the line and the field, and matches ErrConfig when it is the section's.
func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	def := detect.DefaultConfig()
	cases := []struct {
		name      string
		path      string
		check     func(detect.Config) bool
		wantErr   string
		errConfig bool // the error matches detect.ErrConfig
	}{
		{name: "no file: the defaults", check: func(c detect.Config) bool { return c.Cooldown == def.Cooldown }},
		{name: "overrides over the defaults",
			path: write("p.yaml", policyHead+"detectors:\n  cooldown: 30m\n  learning:\n    min_events: 10\n  volume_spike:\n    factor: 8\n"),
			check: func(c detect.Config) bool {
				return c.Cooldown == 30*time.Minute && c.Learning.MinEvents == 10 && c.VolumeSpike.Factor == 8 &&
					c.Learning.MinAge == def.Learning.MinAge && c.VolumeSpike.MinCount == def.VolumeSpike.MinCount && c.MultiNetwork.Enabled
			}},
		{name: "no section", path: write("n.yaml", policyHead), check: func(c detect.Config) bool { return c.Cooldown == def.Cooldown }},
		{name: "null section", path: write("null.yaml", policyHead+"detectors:\n"), check: func(c detect.Config) bool { return c.Cooldown == def.Cooldown }},
		{name: "a file with only detectors:", path: filepath.Join("..", "..", "testdata", "policy", "detection", "detectors-only.yaml"),
			check: func(c detect.Config) bool { return c.Cooldown == 30*time.Minute }},
		{name: "unknown nested field", path: write("unknown.yaml", policyHead+"detectors:\n  scope_probing:\n    window: 5m\n    denied_scopes: 5\n"),
			wantErr: "unknown.yaml:11: detectors.scope_probing: unknown field \"denied_scopes\" (known: ", errConfig: true},
		{name: "out of range: the field's line", path: write("range.yaml", policyHead+"detectors:\n  cooldown: 1h\n  scope_probing:\n    window: 5m\n    min_distinct: 1\n"),
			wantErr: "range.yaml:12: detectors: invalid detector config: scope_probing.min_distinct", errConfig: true},
		{name: "wrong type", path: write("type.yaml", policyHead+"detectors:\n  cooldown: soon\n"), wantErr: "line 9", errConfig: true},
		{name: "set twice", path: write("twice.yaml", policyHead+"detectors:\n  cooldown: 1h\n  cooldown: 2h\n"),
			wantErr: "twice.yaml:10: detectors: field \"cooldown\" is set twice", errConfig: true},
		{name: "not a mapping", path: write("list.yaml", policyHead+"detectors:\n  learning: [1, 2]\n"),
			wantErr: "list.yaml:9: detectors.learning: want a mapping, got !!seq", errConfig: true},
		{name: "missing file", path: "/nonexistent/policy.yaml", wantErr: "nonexistent"},
		{name: "a bad policy elsewhere in the file", path: write("bad.yaml", "version: 1\nholders:\n  - tenant: acme\n    networks: [10.0.0.0/33]\n"),
			wantErr: "bad.yaml:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := detect.LoadConfig(c.path)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !c.check(cfg) {
					t.Errorf("config %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
			if errors.Is(err, detect.ErrConfig) != c.errConfig {
				t.Errorf("errors.Is(ErrConfig) = %v, want %v: %v", !c.errConfig, c.errConfig, err)
			}
		})
	}
}
