package revoker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestDurablesAreTheRolesGrants: the revoker, connected with its role's
// credentials to a server that enforces them, creates exactly the durable
// consumers the role is granted (natsauth.Durables), with no permission
// violation.
func TestDurablesAreTheRolesGrants(t *testing.T) {
	sec := natstest.RunSecured(t)
	nc, js := sec.Connect(t, natsauth.RoleRevoker)
	anchor, err := token.GenerateAnchor()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := revoker.New(revoker.Options{NC: nc, JS: js, TrustAnchors: token.Anchors{anchor.Public()}, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var want []string
	for _, d := range natsauth.Durables(natsauth.RoleRevoker) {
		want = append(want, d.String())
	}
	slices.Sort(want)
	natstest.WaitFor(t, 20*time.Second, func() error {
		got, err := sec.Durables(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("the revoker created the durables %v; its role is granted %v", got, want)
		}
		return nil
	})
	if v := sec.Violations(); len(v) > 0 {
		t.Fatalf("permission violations: %v", v)
	}
}
