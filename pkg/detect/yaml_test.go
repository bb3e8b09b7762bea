package detect_test

import (
	"errors"
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
	if !errors.Is(err, detect.ErrConfig) || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "learnin") {
		t.Fatalf("unknown field: got %v", err)
	}
	if cfg, err := detect.DecodeConfig("p.yaml", nil); err != nil || cfg.Cooldown != detect.DefaultConfig().Cooldown {
		t.Fatalf("nil section: %v", err)
	}
}
