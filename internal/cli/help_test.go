//go:build !nochdb

package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var updateHelp = flag.Bool("update-help", false, "rewrite testdata/help/*.txt from the commands' current help")

// TestServiceHelpUnchanged: the service commands' flags — names, defaults,
// environment variables and help — are what deployments are written
// against (deploy/compose passes them), so `cordon <service> -h` must not
// change unnoticed. The golden files were recorded before the service
// wiring moved into the service packages.
func TestServiceHelpUnchanged(t *testing.T) {
	for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY",
		"CORDON_TLS_CERT", "CORDON_TLS_KEY", "CORDON_POLICY", "CORDON_ANCHOR_KEY", "CORDON_TRUST_ANCHOR",
		"CORDON_CLICKHOUSE_ADDR", "CORDON_CLICKHOUSE_USER", "CORDON_CLICKHOUSE_PASSWORD_FILE",
		"CORDON_CLICKHOUSE_ANALYST_USER", "CORDON_CLICKHOUSE_ANALYST_PASSWORD_FILE",
		"CORDON_ALERT_WEBHOOK", "CORDON_SLACK_WEBHOOK", "CORDON_PAGERDUTY_KEY", "CORDON_PAGERDUTY_URL",
		"CORDON_UPSTREAM", "CORDON_ROUTES"} {
		t.Setenv(v, "")
	}
	host := regexp.MustCompile(`\(default "enforce-[^"]*"\)`)
	for _, cmd := range []string{"issuer", "auditor", "revoker", "enforce"} {
		t.Run(cmd, func(t *testing.T) {
			var out bytes.Buffer
			if code := Main(context.Background(), []string{cmd, "-h"}, &out, &out); code != 0 {
				t.Fatalf("exit status %d:\n%s", code, out.String())
			}
			got := host.ReplaceAll(out.Bytes(), []byte(`(default "enforce-HOST")`))
			golden := filepath.Join("testdata", "help", cmd+".txt")
			if *updateHelp {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("cordon %s -h changed:\n--- got\n%s\n--- want (%s)\n%s", cmd, got, golden, want)
			}
		})
	}
}
