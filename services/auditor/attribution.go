package auditor

import (
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/pkg/events"
)

// ErrMisattributed is why a usage event is dead-lettered when its enforcer
// field does not name the enforcer whose subject it arrived on. NATS lets
// each enforcer's credential publish usage only on its own subject,
// cordon.usage.<tenant>.<its id> (pkg/natsauth), so the subject is the
// attribution the server vouches for: an event that claims another
// enforcer is a forgery (or a bug), and is neither stored nor analysed —
// it could otherwise get a token revoked in another enforcer's name.
var ErrMisattributed = events.ErrMisattributed

// decodeAttributedUsage decodes a usage message that arrived on subject
// and checks that it is attributable (checkAttribution).
func decodeAttributedUsage(subject string, data []byte) (events.Envelope, *events.UsageDecided, error) {
	e, u, err := events.DecodeUsage(data)
	if err != nil {
		return e, u, err
	}
	if err := checkAttribution(subject, u); err != nil {
		return events.Envelope{}, nil, err
	}
	return e, u, nil
}

// checkAttribution requires subject to be a usage subject,
// cordon.usage.<tenant>.<enforcer>, whose enforcer is the event's.
func checkAttribution(subject string, u *events.UsageDecided) error {
	rest, ok := strings.CutPrefix(subject, events.SubjectUsagePrefix)
	tenant, enforcer, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || tenant == "" || enforcer == "" || strings.Contains(enforcer, ".") {
		return fmt.Errorf("%w: subject %q is not %s<tenant>.<enforcer>", ErrMisattributed, subject, events.SubjectUsagePrefix)
	}
	if u.Enforcer != enforcer {
		return fmt.Errorf("%w: the event names enforcer %q but arrived on %s, the subject of enforcer %q (an enforcer reports only as itself)",
			ErrMisattributed, u.Enforcer, subject, enforcer)
	}
	return nil
}

// attribute records, on the anomalies that usage event e raised, the
// enforcer the event is attributed to and its decision: the response
// policy's corroboration counts distinct enforcers and allowed requests.
func attribute(found []events.AnomalyDetected, e events.Envelope, u *events.UsageDecided) {
	if len(found) == 0 {
		return
	}
	id := e.ID.String()
	for i := range found {
		if found[i].EventID == id && found[i].Enforcer == "" {
			found[i].Enforcer, found[i].Decision = u.Enforcer, u.Decision
		}
	}
}
