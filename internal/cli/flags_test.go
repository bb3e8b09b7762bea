package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// clientCommands are the commands that call a running system or work on
// files: every one but the services.
var clientCommands = [][]string{
	{"token", "issue"}, {"token", "list"}, {"token", "inspect"}, {"token", "rotate"},
	{"key", "list"}, {"key", "rotate"}, {"key", "retire"},
	{"creds", "generate"}, {"creds", "permissions"},
	{"sql"}, {"anomalies"}, {"report"},
	{"replay"}, {"eval"}, {"simulate"},
}

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
	for _, cmd := range clientCommands {
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

// TestClientHelpArgNames: each flag's help shows one word for its value
// ("-replay-dir DIR", "-nats-creds file"): the flag package takes the first
// `quoted` words of a help text for that name, so a command quoted in
// backquotes became "-replay-dir cordon replay --dir DIR" and left the
// help without it.
func TestClientHelpArgNames(t *testing.T) {
	flagLine := regexp.MustCompile(`^  -(\S+)(?: (.*))?$`)
	services := [][]string{{"issuer"}, {"auditor"}, {"revoker"}, {"enforce"}}
	for _, cmd := range append(services, clientCommands...) {
		var out bytes.Buffer
		if code := Main(context.Background(), append(cmd, "-h"), &out, &out); code != 0 {
			t.Fatalf("cordon %v -h: exit status %d", cmd, code)
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if m := flagLine.FindStringSubmatch(line); m != nil && strings.ContainsAny(m[2], " `") {
				t.Errorf("cordon %s: flag -%s shows %q for its value", strings.Join(cmd, " "), m[1], m[2])
			}
			if strings.HasPrefix(line, "    \t") && strings.Contains(line, "`") {
				t.Errorf("cordon %s: a backquote left in the help: %q", strings.Join(cmd, " "), line)
			}
		}
	}
}
