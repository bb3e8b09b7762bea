package auditor_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestDurablesAreTheRolesGrants: the auditor, connected with its role's
// credentials to a server that enforces them, creates only durable
// consumers the role is granted (natsauth.Durables) — the ledger's; usage
// is read by ordered consumers per partition — with no permission
// violation.
func TestDurablesAreTheRolesGrants(t *testing.T) {
	sec := natstest.RunSecured(t)
	_, js := sec.Connect(t, natsauth.RoleAuditor)
	run(t, auditor.Options{JS: js, Store: openStore(t, "durables"), Log: zerolog.New(zerolog.NewTestWriter(t))})
	var want []string
	for _, d := range natsauth.Durables(natsauth.RoleAuditor) {
		want = append(want, d.String())
	}
	slices.Sort(want)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	natstest.WaitFor(t, 20*time.Second, func() error {
		got, err := sec.Durables(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("the auditor created the durables %v; its role is granted %v", got, want)
		}
		return nil
	})
	if v := sec.Violations(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}
