package enforce

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// usageEvent is one decision read back from USAGE, from a usage batch or
// a single JSON event.
type usageEvent struct {
	subject string // the stored subject of its message
	msgID   string // its message's Nats-Msg-Id
	data    []byte // its message's data
	header  string // its message's headers, flattened
	batch   bool   // from a usage batch
	env     events.Envelope
	u       events.UsageDecided
}

// usageFilters are the subjects enforcer id's usage is stored under: its
// batches (partitioned or not) and its single events.
func usageFilters(id string) []string {
	return []string{
		events.SubjectUsagePrefix + "*." + id,
		events.SubjectUsagePrefix + "*." + id + ".*",
		events.SubjectUsagePartPrefix + "*.*." + id + ".*",
	}
}

// decodeUsage decodes one USAGE message into the decisions it carries.
func decodeUsage(m jetstream.Msg) ([]usageEvent, error) {
	base := usageEvent{subject: m.Subject(), msgID: m.Headers().Get(jetstream.MsgIDHeader), data: m.Data(), header: headerText(m)}
	if strings.Count(m.Subject(), ".") == 3 {
		env, u, err := events.DecodeAs[*events.UsageDecided](m.Data())
		if err != nil {
			return nil, fmt.Errorf("event on %s: %w", m.Subject(), err)
		}
		base.env, base.u = env, *u
		base.env.Data = &base.u
		return []usageEvent{base}, nil
	}
	var ub events.UsageBatch
	if err := events.DecodeUsageBatch(m.Subject(), m.Data(), &ub); err != nil {
		return nil, fmt.Errorf("batch on %s: %w", m.Subject(), err)
	}
	if base.msgID != ub.ID.String() {
		return nil, fmt.Errorf("batch on %s: message id %q, want the batch id %s", m.Subject(), base.msgID, ub.ID)
	}
	var out []usageEvent
	var env events.Envelope
	var u events.UsageDecided
	for ub.Next(&env, &u) {
		ev := base
		ev.batch = true
		ev.env, ev.u = env, u
		out = append(out, ev)
	}
	for i := range out {
		out[i].env.Data = &out[i].u
	}
	return out, nil
}

// fetchUsage reads the usage of enforcer id from USAGE: all of its
// messages, which must carry want decisions (any number if want < 0).
func fetchUsage(ctx context.Context, js jetstream.JetStream, id string, want int) ([]usageEvent, error) {
	st, err := js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.SubjectUsagePrefix+">"))
	if err != nil {
		return nil, err
	}
	msgs := 0
	for subject, n := range info.State.Subjects {
		for _, f := range usageFilters(id) {
			if subjectMatches(f, subject) {
				msgs += int(n)
			}
		}
	}
	var out []usageEvent
	if msgs == 0 {
		if want > 0 {
			return nil, fmt.Errorf("no usage of %s stored, want %d events", id, want)
		}
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamUsage, jetstream.OrderedConsumerConfig{FilterSubjects: usageFilters(id)})
	if err != nil {
		return nil, err
	}
	for read := 0; read < msgs; {
		batch, err := cons.Fetch(msgs-read, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			evs, err := decodeUsage(m)
			if err != nil {
				return nil, err
			}
			out = append(out, evs...)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("read %d usage messages of %d", read, msgs)
		}
		read += n
	}
	if want >= 0 && len(out) != want {
		return out, fmt.Errorf("USAGE holds %d usage events of %s, want %d", len(out), id, want)
	}
	return out, nil
}

// subjectMatches reports whether subject matches filter (wildcard "*").
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	if len(f) != len(s) {
		return false
	}
	for i := range f {
		if f[i] != "*" && f[i] != s[i] {
			return false
		}
	}
	return true
}

// readUsage waits until USAGE holds want usage events of enforcer id and
// returns them.
func readUsage(t *testing.T, js jetstream.JetStream, id string, want int) []usageEvent {
	t.Helper()
	var evs []usageEvent
	natstest.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		evs, err = fetchUsage(ctx, js, id, want)
		return err
	})
	return evs
}
