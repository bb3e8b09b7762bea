package up_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// intruder is a connection to the running system, with every permission
// violation the server reported to it.
type intruder struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func connectIntruder(t *testing.T, sys *up.System, name, seed string) *intruder {
	t.Helper()
	in := &intruder{name: name}
	nc, err := nats.Connect(sys.NATS.ClientURL(), natsauth.ConnectOption(seed), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				in.mu.Lock()
				in.violations = append(in.violations, err.Error())
				in.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	in.nc = nc
	if in.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return in
}

// refused runs op and requires the server to refuse kind ("Publish" or
// "Subscription") on subject, and op to fail. A refused request is only
// answered by its timeout: op's context is cancelled once the refusal is
// seen.
func (in *intruder) refused(t *testing.T, kind, subject string, op func(ctx context.Context) error) {
	t.Helper()
	in.mu.Lock()
	in.violations = nil
	in.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- op(ctx) }()
	want := fmt.Sprintf("Permissions Violation for %s to %q", kind, subject)
	natstest.WaitFor(t, 15*time.Second, func() error {
		in.mu.Lock()
		defer in.mu.Unlock()
		for _, v := range in.violations {
			if strings.Contains(v, want) {
				return nil
			}
		}
		return fmt.Errorf("%s: the server did not refuse %s to %q (violations so far: %v)", in.name, kind, subject, in.violations)
	})
	cancel()
	if err := <-errc; err == nil {
		t.Errorf("%s: %s to %q reported success", in.name, kind, subject)
	}
}

// streamMsgs is the number of messages in stream (matching filter when
// set), as the admin sees it.
func streamMsgs(t *testing.T, sys *up.System, stream, filter string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := sys.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	if filter == "" {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// pubOf is the public key of the seed in file.
func pubOf(t *testing.T, file string) string {
	t.Helper()
	p, err := natsauth.PublicKeyOf(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func subscribeOp(in *intruder, subject string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		sub, err := in.nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		_, err = sub.NextMsgWithContext(ctx)
		return err
	}
}

// TestAttacksOnTheEmbeddedNATS replays, against a running `cordon up`,
// what an outsider did to the embedded NATS when it had no authentication
// (issue 8, finding 3), then what a holder of one enforcer's credential or
// of the auditor's can try. Every attempt must be refused by the server
// and leave no trace: keys, denylist entries, streams unchanged.
func TestAttacksOnTheEmbeddedNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// An existing data directory readable by others is tightened at start.
	dir := filepath.Join(t.TempDir(), "cordon")
	for _, d := range []string{dir, filepath.Join(dir, "nats")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var logs natstest.LogBuffer
	sys, err := up.Start(ctx, up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "attacks", Log: zerolog.New(&logs).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()

	t.Run("data directories are private", func(t *testing.T) {
		for _, d := range []string{dir, filepath.Join(dir, "nats"), sys.CredsDir, filepath.Join(dir, "keys"), filepath.Join(dir, "auditor")} {
			st, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v, want 0700", d, st.Mode().Perm())
			}
		}
		for _, f := range []string{sys.CredsFile(natsauth.RoleAdmin), sys.EnforcerCredsFile("edge-1")} {
			if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, want mode 0600", f, err)
			}
		}
		if got := logs.String(); !strings.Contains(got, "tightened to 0700") || !strings.Contains(got, `"dir":"`+dir+`"`) {
			t.Errorf("no log line about the tightened data directory:\n%s", got)
		}
	})

	// Something to protect: a key, a revoked token's denylist entry.
	iss, err := sys.Issuer.Issue(ctx, "attack-test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"},
		Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Revoker.Revoke(ctx, revoker.Request{Kind: events.RevokeToken, TokenID: iss.ID, Tenant: "acme", Holder: "billing-api",
		Actor: "attack-test", Reason: "revoked before the attack"}); err != nil {
		t.Fatal(err)
	}
	denied := func() error {
		d := sys.Enforcer.Check(&enforce.Request{Token: iss.Token, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read"})
		if d.Allow || d.Reason != enforce.ReasonRevoked {
			return fmt.Errorf("the revoked token is %v/%s at the enforcer, want denied as revoked", d.Allow, d.Reason)
		}
		return nil
	}
	natstest.WaitFor(t, 10*time.Second, denied)
	denyKey := events.DenyKeyToken(iss.ID)
	keysBefore := streamMsgs(t, sys, "KV_"+events.BucketKeys, "")
	denyBefore := streamMsgs(t, sys, "KV_"+events.BucketDenylist, "")
	ledgerBefore := streamMsgs(t, sys, events.StreamTokens, "")

	t.Run("anonymous connections are refused", func(t *testing.T) {
		nc, err := nats.Connect(sys.NATS.ClientURL(), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous TCP connection was accepted")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("anonymous TCP connection: %v, want an authorization violation", err)
		}
		// In-process: a failed authentication closes the pipe.
		if nc, err := sys.NATS.Connect("anonymous", nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("an anonymous in-process connection was accepted")
		}
		// A key the server does not know is no better.
		stranger := t.TempDir()
		if _, err := natsauth.Generate(stranger, natsauth.GenerateOptions{Roles: []natsauth.Role{natsauth.RoleAdmin}}); err != nil {
			t.Fatal(err)
		}
		if _, err := nats.Connect(sys.NATS.ClientURL(), natsauth.ConnectOption(natsauth.SeedFile(stranger, natsauth.RoleAdmin)), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("a stranger's key: %v, want an authorization violation", err)
		}
	})

	enf := connectIntruder(t, sys, "enforcer edge-1", sys.EnforcerCredsFile("edge-1"))
	t.Run("enforcer credential", func(t *testing.T) {
		t.Run("put a signing key", func(t *testing.T) {
			kv, err := enf.js.KeyValue(ctx, events.BucketKeys)
			if err != nil {
				t.Fatal(err)
			}
			enf.refused(t, "Publish", "$KV.keys.evil", func(ctx context.Context) error {
				_, err := kv.Put(ctx, "evil", []byte(`{"kid":"evil","public_key":"AAAA"}`))
				return err
			})
			if _, err := kv.Get(ctx, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("injected key: get says %v, want not found", err)
			}
		})
		t.Run("delete a denylist entry", func(t *testing.T) {
			kv, err := enf.js.KeyValue(ctx, events.BucketDenylist)
			if err != nil {
				t.Fatal(err)
			}
			enf.refused(t, "Publish", "$KV.denylist."+denyKey, func(ctx context.Context) error { return kv.Delete(ctx, denyKey) })
			enf.refused(t, "Publish", "$KV.denylist."+denyKey, func(ctx context.Context) error { return kv.Purge(ctx, denyKey) })
			if _, err := kv.Get(ctx, denyKey); err != nil {
				t.Errorf("denylist entry of the revoked token: %v", err)
			}
		})
		for _, s := range []struct{ subject, what string }{
			{"$JS.API.STREAM.DELETE." + events.StreamTokens, "delete the ledger"},
			{"$JS.API.STREAM.DELETE.KV_" + events.BucketDenylist, "delete the denylist"},
			{"$JS.API.STREAM.PURGE.KV_" + events.BucketDenylist, "purge the denylist"},
			{"$JS.API.STREAM.PURGE." + events.StreamUsage, "purge usage"},
			{"$JS.API.STREAM.UPDATE." + events.StreamTokens, "reconfigure the ledger"},
		} {
			t.Run(s.what, func(t *testing.T) {
				enf.refused(t, "Publish", s.subject, func(ctx context.Context) error {
					_, err := enf.nc.RequestWithContext(ctx, s.subject, []byte(`{}`))
					return err
				})
			})
		}
		t.Run("read the ledger", func(t *testing.T) {
			enf.refused(t, "Publish", "$JS.API.CONSUMER.CREATE."+events.StreamTokens+".spy.cordon.token.>", func(ctx context.Context) error {
				_, err := enf.js.CreateOrUpdateConsumer(ctx, events.StreamTokens, jetstream.ConsumerConfig{Durable: "spy", FilterSubject: "cordon.token.>"})
				return err
			})
			enf.refused(t, "Publish", "$JS.API.STREAM.INFO."+events.StreamTokens, func(ctx context.Context) error {
				_, err := enf.js.Stream(ctx, events.StreamTokens)
				return err
			})
		})
		for _, cmd := range []string{events.SubjectCmdIssue, events.SubjectCmdRevoke, events.SubjectCmdList, events.SubjectCmdSQL} {
			t.Run("request "+cmd, func(t *testing.T) {
				enf.refused(t, "Publish", cmd, func(ctx context.Context) error {
					_, err := enf.nc.RequestWithContext(ctx, cmd, []byte(`{}`))
					return err
				})
			})
		}
		for _, subj := range []string{events.SubjectCmdSQL, "cordon.cmd.>", "_INBOX.>", natsauth.InboxPrefix(pubOf(t, sys.CredsFile(natsauth.RoleAdmin))) + ".>"} {
			t.Run("subscribe "+subj, func(t *testing.T) {
				enf.refused(t, "Subscription", subj, subscribeOp(enf, subj))
			})
		}
		// Meanwhile the admin's own requests carry its token untouched.
		admin, err := os.ReadFile(sys.Issuer.AdminTokenPath())
		if err != nil {
			t.Fatal(err)
		}
		c := auditor.Client{NC: sys.NC, Token: strings.TrimSpace(string(admin))}
		if _, err := c.SQL(ctx, "SELECT count() FROM token_ledger"); err != nil {
			t.Fatalf("the admin's query: %v", err)
		}
	})

	aud := connectIntruder(t, sys, "auditor", sys.CredsFile(natsauth.RoleAuditor))
	t.Run("auditor credential", func(t *testing.T) {
		kv, err := aud.js.KeyValue(ctx, events.BucketDenylist)
		if err != nil {
			t.Fatal(err)
		}
		aud.refused(t, "Publish", "$KV.denylist."+denyKey, func(ctx context.Context) error { return kv.Delete(ctx, denyKey) })
		aud.refused(t, "Publish", "$KV.denylist.tok.forged", func(ctx context.Context) error {
			_, err := kv.Put(ctx, "tok.forged", []byte(`{}`))
			return err
		})
		if _, err := kv.Get(ctx, "tok.forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("forged denylist entry: %v, want not found", err)
		}
	})

	t.Run("nothing changed", func(t *testing.T) {
		for _, c := range []struct {
			stream string
			before uint64
		}{{"KV_" + events.BucketKeys, keysBefore}, {"KV_" + events.BucketDenylist, denyBefore}} {
			if got := streamMsgs(t, sys, c.stream, ""); got != c.before {
				t.Errorf("%s: %d messages, %d before the attacks", c.stream, got, c.before)
			}
		}
		if got := streamMsgs(t, sys, events.StreamTokens, ""); got < ledgerBefore {
			t.Errorf("ledger: %d messages, %d before the attacks", got, ledgerBefore)
		}
		if err := denied(); err != nil {
			t.Error(err)
		}
	})
}

// usageFrom makes a usage event attributed to enforcer: a denied use, as
// revoked, of a token nobody has seen — which the use_after_revoke
// detector reports at once.
func usageFrom(t *testing.T, enforcer string) (tokenID string, env events.Envelope, data []byte) {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	u := &events.UsageDecided{TokenID: id.String(), Tenant: "acme", Holder: "billing-api", KeyID: "k1", Enforcer: enforcer,
		Service: "invoices", SourceIP: "127.0.0.1", Method: "GET", Route: "GET /invoices/{id}", Scope: "invoices:read",
		Decision: events.DecisionDeny, Reason: string(enforce.ReasonRevoked), LatencyNS: 1000}
	env, err = events.New("enforcer/"+enforcer, time.Now(), u)
	if err != nil {
		t.Fatal(err)
	}
	if data, err = events.Encode(env); err != nil {
		t.Fatal(err)
	}
	return id.String(), env, data
}

// TestForgedUsageFromAnotherEnforcer: enforcer edge-1's credential cannot
// publish on edge-2's subject (NATS refuses it), and a usage event it
// publishes on its own subject while claiming to come from edge-2 is
// dead-lettered by the auditor: not stored, never analysed, no anomaly. The
// same event honestly attributed to edge-1 is stored and raises its
// anomaly, which shows the forged one would have.
func TestForgedUsageFromAnotherEnforcer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: t.TempDir(), NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "forged_usage", ExtraEnforcers: []string{"edge-2"},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	var mu sync.Mutex
	anomalies := map[string][]string{} // token → detectors
	sub, err := sys.NC.Subscribe(events.SubjectAnomalyPrefix+">", func(m *nats.Msg) {
		if _, a, err := events.DecodeAs[*events.AnomalyDetected](m.Data); err == nil {
			mu.Lock()
			anomalies[a.TokenID] = append(anomalies[a.TokenID], a.Detector)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	enf := connectIntruder(t, sys, "enforcer edge-1", sys.EnforcerCredsFile("edge-1"))

	t.Run("publish on another enforcer's subject", func(t *testing.T) {
		_, env, data := usageFrom(t, "edge-2")
		subject := events.UsageSubject("acme", "edge-2")
		enf.refused(t, "Publish", subject, func(ctx context.Context) error {
			_, err := enf.js.Publish(ctx, subject, data, jetstream.WithMsgID(env.MsgID()))
			return err
		})
		if n := streamMsgs(t, sys, events.StreamUsage, subject); n != 0 {
			t.Fatalf("%d forged events stored on %s", n, subject)
		}
	})

	t.Run("claim another enforcer's name on its own subject", func(t *testing.T) {
		deadBefore := sys.Auditor.Stats().Dead
		forged, fenv, fdata := usageFrom(t, "edge-2")
		honest, henv, hdata := usageFrom(t, "edge-1")
		own := events.UsageSubject("acme", "edge-1")
		for _, m := range []struct {
			env  events.Envelope
			data []byte
		}{{fenv, fdata}, {henv, hdata}} {
			if _, err := enf.js.Publish(ctx, own, m.data, jetstream.WithMsgID(m.env.MsgID())); err != nil {
				t.Fatalf("edge-1 publishes on its own subject: %v", err)
			}
		}
		// The honest event comes after the forged one in the stream: once
		// its anomaly is out and its row stored, the forged one was handled.
		natstest.WaitFor(t, 30*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(anomalies[honest]) == 0 {
				return fmt.Errorf("no anomaly yet for the honestly attributed event (auditor %+v)", sys.Auditor.Stats())
			}
			return nil
		})
		rows := func(table, token string) uint64 {
			res, err := sys.Store.Query(ctx, fmt.Sprintf("SELECT count() FROM %s WHERE token_id = '%s'", table, token))
			if err != nil || len(res.Rows) == 0 {
				t.Fatalf("query %s: %v", table, err)
			}
			n, _ := res.Rows[0][0].(uint64)
			return n
		}
		natstest.WaitFor(t, 30*time.Second, func() error {
			if n := rows("usage_events", honest); n != 1 {
				return fmt.Errorf("honest event: %d usage rows", n)
			}
			return nil
		})
		if n := rows("usage_events", forged); n != 0 {
			t.Errorf("the forged event was stored (%d rows)", n)
		}
		if n := rows("anomalies", forged); n != 0 {
			t.Errorf("the forged event raised %d anomalies", n)
		}
		mu.Lock()
		if got := anomalies[forged]; len(got) != 0 {
			t.Errorf("the forged event raised anomalies %v", got)
		}
		mu.Unlock()
		if d := sys.Auditor.Stats().Dead; d != deadBefore+1 {
			t.Errorf("dead letters: %d, want %d (the forged event)", d, deadBefore+1)
		}
		if n := streamMsgs(t, sys, events.StreamDead, events.DeadLetterSubject(events.DeadLetterAuditor)); n != 1 {
			t.Errorf("%d dead letters from the auditor, want 1", n)
		}
	})
}
