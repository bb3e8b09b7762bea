package auditor_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// revokedUseBy is a usage event of enforcer: a use denied as revoked of a
// token nobody has seen, which use_after_revoke reports at once.
func revokedUseBy(t *testing.T, token, enforcer string) []byte {
	t.Helper()
	u := &events.UsageDecided{TokenID: token, Tenant: "acme", Holder: "billing-api", KeyID: "k1", Enforcer: enforcer, Service: "payments",
		SourceIP: "10.0.0.1", Method: "GET", Route: "GET /invoices/{id}", Scope: "invoices:read", Decision: events.DecisionDeny, Reason: "revoked", LatencyNS: 1}
	e, err := events.New("test", base, u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMisattributedUsageIsDeadLettered: a usage event whose enforcer field
// is not the enforcer of the subject it arrived on — edge-1's credential
// claiming to be edge-2, or a subject that is not
// cordon.usage.<tenant>.<enforcer> — is dead-lettered with the reason,
// never stored and never seen by the detectors (both readers check it);
// the honest event after it is stored, and its anomaly names its enforcer
// and decision.
func TestMisattributedUsageIsDeadLettered(t *testing.T) {
	env := natstest.Run(t)
	s := openStore(t, "attribution")
	det, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	raised := map[string][]*events.AnomalyDetected{}
	a, _, _ := run(t, auditor.Options{JS: env.JS, Store: s, Detector: det, StateDir: t.TempDir(), BatchWait: 20 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OnAnomaly: func(e events.Envelope) {
			an := e.Data.(*events.AnomalyDetected)
			mu.Lock()
			raised[an.TokenID] = append(raised[an.TokenID], an)
			mu.Unlock()
		}})
	forged := []struct {
		name, subject string
		data          []byte
		reason        string
	}{
		{"another enforcer's name", events.UsageSubject("acme", "edge-1"), revokedUseBy(t, "tok-forged-1", "edge-2"), `names enforcer "edge-2" but arrived on cordon.usage.acme.edge-1`},
		{"subject with extra tokens", events.UsageSubject("acme", "edge-1") + ".x.y", revokedUseBy(t, "tok-forged-3", "edge-1"), "is not cordon.usage.<tenant>.<enforcer>"},
		{"subject without an enforcer", "cordon.usage.edge-1", revokedUseBy(t, "tok-forged-4", "edge-1"), "is not cordon.usage.<tenant>.<enforcer>"},
	}
	for _, f := range forged {
		publish(t, env.JS, f.subject, [][]byte{f.data})
	}
	publish(t, env.JS, events.UsageSubject("acme", "edge-1"), [][]byte{revokedUseBy(t, "tok-honest", "edge-1")})

	natstest.WaitFor(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if st := a.Stats(); st.Usage != 1 || len(raised["tok-honest"]) == 0 {
			return fmt.Errorf("stats %+v, honest anomalies %d", st, len(raised["tok-honest"]))
		}
		return nil
	})
	st := a.Stats()
	if st.Dead != uint64(len(forged)) {
		t.Errorf("dead letters %d, want %d", st.Dead, len(forged))
	}
	if st.Observed != 1 {
		t.Errorf("the detectors observed %d events, want only the honest one", st.Observed)
	}
	mu.Lock()
	for tok, ans := range raised {
		if tok != "tok-honest" {
			t.Errorf("a misattributed event raised %d anomalies for %s", len(ans), tok)
		}
	}
	for _, an := range raised["tok-honest"] {
		if an.Enforcer != "edge-1" || an.Decision != events.DecisionDeny {
			t.Errorf("anomaly %s: enforcer %q, decision %q, want edge-1, deny", an.Detector, an.Enforcer, an.Decision)
		}
	}
	mu.Unlock()
	if c, _ := s.CountUsage(context.Background()); c != 1 {
		t.Errorf("usage rows %d, want only the honest event", c)
	}

	// Each dead letter says why, and on which subject it came.
	ctx := context.Background()
	cons, err := env.JS.OrderedConsumer(ctx, events.StreamDead, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(len(forged), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		f := forged[i]
		reason := m.Headers().Get(events.HeaderDeadReason)
		if !strings.HasPrefix(reason, auditor.ErrMisattributed.Error()) || !strings.Contains(reason, f.reason) {
			t.Errorf("%s: dead letter reason %q", f.name, reason)
		}
		if got := m.Headers().Get(events.HeaderDeadSubject); got != f.subject {
			t.Errorf("%s: dead letter subject %q, want %q", f.name, got, f.subject)
		}
		i++
	}
	if i != len(forged) {
		t.Errorf("%d dead letters read, want %d", i, len(forged))
	}
}
