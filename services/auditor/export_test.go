package auditor

import (
	"context"

	"github.com/cordonhq/cordon/pkg/events"
)

// SetCrash installs the tests' fault injection: f runs at each step of a
// partition's writes (before-intent, after-intent, after-insert,
// before-checkpoint); an error stops the write or checkpoint there, as a
// crash would. Call it before Run.
func SetCrash(a *Auditor, f func(step string, p int) error) { a.crash = f }

// MakeDurable writes anomalies published already as the partitions do
// (makeDurable).
func MakeDurable(ctx context.Context, a *Auditor, envs []events.Envelope) error {
	anoms := make([]pendingAnomaly, len(envs))
	for i, e := range envs {
		anoms[i] = pendingAnomaly{env: e, done: true}
	}
	return a.makeDurable(ctx, anoms)
}

// CallForGroups makes every partition with an open group close it now,
// as the combiner does when an insert starts collecting: the groups go
// in one insert.
func CallForGroups(a *Auditor) {
	if a.comb != nil {
		a.comb.callForGroups()
	}
}
