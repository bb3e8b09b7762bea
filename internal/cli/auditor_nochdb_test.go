//go:build nochdb

package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestAuditorWithoutChDB: the server build writes to a ClickHouse server by
// default and refuses the embedded store with a clear message.
func TestAuditorWithoutChDB(t *testing.T) {
	env, out, _ := testEnv()
	if err := runAuditor(context.Background(), env, []string{"--check-config"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "store clickhouse at localhost:8123") {
		t.Errorf("default store: %q", out.String())
	}
	err := runAuditor(context.Background(), env, []string{"--check-config", "--store", "chdb"})
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "use --store clickhouse") {
		t.Errorf("--store chdb: %v", err)
	}
}
