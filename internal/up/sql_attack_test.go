package up_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
)

// TestAnalystSQLEscapesOnCordonUp replays issue 8's SQL findings through
// `cordon up`'s analyst API (cordon.cmd.sql) with a read-only analyst
// token: reading the issuer's signing key and the admin token with the
// file() function, and every trick that got past the old text guard. Each
// must be refused with not_read_only and leave nothing behind; a plain
// query over Cordon's tables still works.
func TestAnalystSQLEscapesOnCordonUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := filepath.Abs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sys, err := up.Start(ctx, up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "sqlattack", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	reader, err := sys.Issuer.Issue(ctx, "test", issuer.IssueRequest{Tenant: issuer.AdminTenant, Holder: issuer.AdminHolder,
		Scopes: []string{issuer.ScopeRead}, Audience: []string{issuer.AdminAudience}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c := auditor.Client{NC: sys.NC, Token: reader.Token}
	if _, err := c.SQL(ctx, "SELECT holder, count() FROM usage_events GROUP BY holder"); err != nil {
		t.Fatalf("a plain analyst query: %v", err)
	}

	keys, err := filepath.Glob(filepath.Join(dir, "keys", "*.pem"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("signing keys in %s: %v %v", dir, keys, err)
	}
	secrets := map[string]string{}
	for _, f := range append(keys, filepath.Join(dir, issuer.AdminTokenFile), filepath.Join(dir, "keys", issuer.AnchorFile)) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		secrets[f] = strings.TrimSpace(string(b))
	}
	outfile := filepath.Join(dir, "written-by-sql")
	key := keys[0]
	for name, q := range map[string]string{
		"file() function":            "SELECT file('" + key + "')",
		"file() in a subquery":       "SELECT * FROM (SELECT file('" + filepath.Join(dir, issuer.AdminTokenFile) + "') AS x)",
		"file() table function":      "SELECT * FROM file('" + key + "', 'LineAsString')",
		"url() table function":       "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
		"INTO OUTFILE":               "SELECT 'pwned' INTO OUTFILE '" + outfile + "' FORMAT TSVRaw",
		"two statements":             "SELECT 1; DROP TABLE usage_events",
		"$$ hides a semicolon":       "SELECT $$x$$; DROP TABLE usage_events",
		"$$ hides INTO OUTFILE":      "SELECT $$a$$ AS a INTO OUTFILE '" + outfile + "' FORMAT TSVRaw",
		"unicode quotes":             "SELECT ‘x’; CREATE TABLE evil (x UInt8) ENGINE = Memory",
		"caller's SETTINGS":          "SELECT count() FROM usage_events SETTINGS readonly = 0",
		"endless system.numbers":     "SELECT count() FROM system.numbers",
		"IN a system table":          "SELECT 1 WHERE 'default' IN system.users",
		"a system table":             "SELECT name FROM system.tables",
		"file() function, hex path":  "SELECT file(unhex('" + hexOf(key) + "'))",
		"file() in a WITH":           "WITH file('" + key + "') AS k SELECT k",
		"file() in an aggregate arg": "SELECT any(file('" + key + "')) FROM usage_events",
	} {
		t.Run(name, func(t *testing.T) {
			res, err := c.SQL(ctx, q)
			if err == nil {
				t.Fatalf("accepted: %v", res.Rows)
			}
			if !strings.Contains(err.Error(), auditor.CodeNotReadOnly) {
				t.Errorf("refused with %v, want %s", err, auditor.CodeNotReadOnly)
			}
			for f, s := range secrets {
				if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), s[:min(len(s), 40)]) {
					t.Fatalf("the reply holds the content of %s", f)
				}
			}
		})
	}
	if _, err := os.Stat(outfile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("INTO OUTFILE wrote %s: %v", outfile, err)
	}
	if _, err := c.SQL(ctx, "SELECT count() FROM usage_events"); err != nil {
		t.Fatalf("usage_events after the attempts: %v", err)
	}
	if _, err := c.SQL(ctx, "SELECT count() FROM evil"); err == nil {
		t.Error("table evil was created")
	}
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, digits[s[i]>>4], digits[s[i]&15])
	}
	return string(b)
}
