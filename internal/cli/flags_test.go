package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateClientHelp = flag.Bool("update-client-help", false, "rewrite testdata/help/ of the client commands from their current help")

// TestClientHelpUnchanged: the client commands' flags — names, defaults,
// environment variables and help — are what users and scripts are written
// against, so `cordon <command> -h` must not change unnoticed when their
// declarations move. The golden files were recorded before the flags moved
// next to the options they fill (services/issuer, services/auditor,
// pkg/natsauth, internal/replay).
func TestClientHelpUnchanged(t *testing.T) {
	for _, v := range []string{"CORDON_API", "CORDON_API_CA", "CORDON_TOKEN_FILE", "CORDON_POLICY",
		"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY"} {
		t.Setenv(v, "")
	}
	for _, cmd := range [][]string{
		{"token", "issue"}, {"token", "list"}, {"token", "inspect"}, {"token", "rotate"},
		{"key", "list"}, {"key", "rotate"}, {"key", "retire"},
		{"creds", "generate"}, {"creds", "permissions"},
		{"sql"}, {"anomalies"}, {"report"},
		{"replay"}, {"eval"}, {"simulate"},
	} {
		name := strings.Join(cmd, "-")
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if code := Main(context.Background(), append(cmd, "-h"), &out, &out); code != 0 {
				t.Fatalf("exit status %d:\n%s", code, out.String())
			}
			golden := filepath.Join("testdata", "help", name+".txt")
			if *updateClientHelp {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("cordon %s -h changed:\n--- got\n%s\n--- want (%s)\n%s", strings.Join(cmd, " "), out.Bytes(), golden, want)
			}
		})
	}
}
