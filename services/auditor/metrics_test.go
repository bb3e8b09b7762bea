package auditor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/services/auditor"
)

func TestCollectorExportsBounds(t *testing.T) {
	env := natstest.Run(t)
	cfg := detect.DefaultConfig()
	cfg.MaxTokens, cfg.MaxHolders = 1234, 567
	d, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	know, err := auditor.OpenKnowledge(context.Background(), env.JS, auditor.KnowledgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer know.Close()
	know.Shared().Learn(detect.Fact{Kind: detect.FactWorkNetwork, Key: 7, Time: 100})
	know.Shared().Learn(detect.Fact{Kind: detect.FactTenantLearnt, Tenant: 7, Time: 100})
	natstest.WaitFor(t, 30*time.Second, func() error {
		if w := know.Stats().Written; w != 2 {
			return fmt.Errorf("%d facts written", w)
		}
		return nil
	})
	a, err := auditor.New(auditor.Options{JS: env.JS, Store: openStore(t, "metrics"), Detector: d, Knowledge: know, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(a.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "level" {
					name += "{" + l.GetValue() + "}"
				}
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if len(got) < 10 {
		t.Fatalf("gathered %d metric families: %v", len(got), got)
	}
	if got["cordon_detect_tokens_max"] != 1234 || got["cordon_detect_state_bytes_per_token"] <= 0 {
		t.Errorf("detector bounds not exported: %v", got)
	}
	if got["cordon_detect_entries_max{holder}"] != 567 || got["cordon_detect_entries_max{source}"] != float64(cfg.MaxSources) ||
		got["cordon_detect_state_bytes{holder}"] <= 0 || got["cordon_detect_state_bytes{tenant}"] <= 0 {
		t.Errorf("holder, tenant and source bounds not exported: %v", got)
	}
	if got["cordon_auditor_shared_facts"] != 2 || got["cordon_auditor_shared_facts_written_total"] != 2 {
		t.Errorf("shared knowledge not exported: %v", got)
	}
	for _, name := range []string{"cordon_auditor_shared_waits_total", "cordon_auditor_shared_waits_given_up_total", "cordon_auditor_shared_entries_skipped_total"} {
		if v, ok := got[name]; !ok || v != 0 {
			t.Errorf("%s: %v, %v (want 0, exported)", name, v, ok)
		}
	}
}
