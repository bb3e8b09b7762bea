package up_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/services/auditor"
)

// chdbPath is shared by the tests of this package: chDB keeps one session
// per process, so each test uses its own database in it.
var chdbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "up-chdb-")
	if err != nil {
		panic(err)
	}
	chdbPath = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestLeakDrill is the closed loop end to end on the embedded default: a
// leaked token replayed from another address is detected, revoked and then
// denied at the enforcer; the other holder is never denied; on-call gets an
// alert; the whole story is in ClickHouse.
func TestLeakDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end drill skipped with -short")
	}
	pager := newPager(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: t.TempDir(), NATSPort: -1, IssuerListen: "127.0.0.1:0",
		ProxyListen: "127.0.0.1:0", AlertWebhook: pager.URL, ChDBPath: chdbPath, Database: "drill", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	// The demo proxy fails closed by default: an enforcer cut off from
	// NATS must not keep serving tokens revoked meanwhile.
	if o := sys.Enforcer.Options(); !o.FailClosed || o.MaxStaleness != enforce.DefaultMaxStaleness {
		t.Errorf("cordon up's enforcer: fail closed %v, max staleness %v; want on, %v", o.FailClosed, o.MaxStaleness, enforce.DefaultMaxStaleness)
	}

	var out bytes.Buffer
	rep, err := up.Drill(ctx, sys, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	switch {
	case rep.LegitDenied != 0:
		t.Errorf("legitimate use denied %d times before the leak", rep.LegitDenied)
	case rep.OtherDenied != 0:
		t.Errorf("the other holder's token was denied %d times", rep.OtherDenied)
	case !rep.FreshAllowed:
		t.Error("a fresh token for the victim holder was not allowed")
	case rep.FirstRevokedDenial.Before(rep.FirstAttack) || rep.Revoked.IsZero() || rep.FirstAnomaly.IsZero() ||
		rep.Revoked.Before(rep.FirstAttack) || rep.FirstAnomaly.Before(rep.FirstAttack):
		t.Errorf("timeline out of order: %+v", rep)
	case rep.UsageRows < uint64(31+rep.AttackerAllowed+rep.AttackerDenied):
		t.Errorf("clickhouse has %d usage rows for the token, want ≥ %d", rep.UsageRows, 31+rep.AttackerAllowed+rep.AttackerDenied)
	case rep.AnomalyRows == 0 || rep.LedgerRows < 2:
		t.Errorf("clickhouse: %d anomalies, %d ledger rows for the token", rep.AnomalyRows, rep.LedgerRows)
	}
	t.Logf("detection to denial: %v", rep.DetectionToDenial())
	if !strings.Contains(out.String(), "first request denied: revoked") {
		t.Error("timeline not printed")
	}
	// The attacker stays denied.
	res, err := sys.Store.Query(ctx, "SELECT count() FROM usage_events WHERE token_id = '"+rep.LeakedToken+"' AND reason = 'revoked'")
	if err != nil || len(res.Rows) == 0 {
		t.Fatalf("query: %v", err)
	}
	if n, _ := res.Rows[0][0].(uint64); n == 0 {
		t.Error("no revoked denial recorded in clickhouse")
	}
	// On-call got an alert naming the token and what Cordon did.
	pager.await(t, "for the leaked token", func(a string) bool { return strings.Contains(a, rep.LeakedToken) })
}

// TestAnalystAPI: cordon sql / anomalies / report reach the running
// system's store through the auditor, with the bootstrap admin token.
func TestAnalystAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	sys, err := up.Start(ctx, up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "analyst", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	admin, err := os.ReadFile(sys.Issuer.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	c := auditor.Client{NC: sys.NC, Token: strings.TrimSpace(string(admin))}
	res, err := c.SQL(ctx, "SELECT count() AS n FROM token_ledger")
	if err != nil {
		t.Fatalf("sql: %v", err)
	}
	if len(res.Rows) != 1 {
		t.Fatalf("sql rows: %v", res.Rows)
	}
	if _, err := c.SQL(ctx, "DROP TABLE usage_events"); err == nil {
		t.Fatal("a write statement was accepted")
	}
	bad := auditor.Client{NC: sys.NC, Token: "cordon_nonsense"}
	if _, err := bad.SQL(ctx, "SELECT 1"); err == nil {
		t.Fatal("a bad token was accepted")
	}
}
