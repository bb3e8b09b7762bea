package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/revoker"
)

// runRevoker is `cordon revoker`: the revocation service on its own.
func runRevoker(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "revoker", "revoker --nats URL --policy FILE [--alert-webhook URL] [--slack-webhook URL] [--pagerduty-key KEY] [--check-config]")
	cfg := revoker.Config{Log: env.Log}
	cfg.RegisterFlags(fs)
	return runService(ctx, env, fs, args, &cfg, "validate the policy and flags, then exit",
		func(ctx context.Context) error { return revoker.Run(ctx, cfg) })
}

// runRevoke is `cordon revoke`: a NATS client of cordon.cmd.revoke that
// prints the structured reply.
func runRevoke(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "revoke",
		`revoke (--token ID | --holder TENANT/HOLDER | --kid KID | --tenant T | --before RFC3339 --tenant T) --reason "…" [--nats URL] [--token-file FILE]`)
	var (
		tokenFile, idem                               string
		tokenID, holder, kid, tenant, beforeS, reason string
		timeout                                       time.Duration
	)
	nf := addNATSFlags(fs, adminIdentity)
	fs.StringVar(&tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", ".cordon/admin.token"),
		"file holding a Cordon token with scope cordon:revoke ($CORDON_TOKEN_FILE)")
	fs.StringVar(&tokenID, "token", "", "revoke one token by id")
	fs.StringVar(&holder, "holder", "", "revoke every token of TENANT/HOLDER")
	fs.StringVar(&kid, "kid", "", "revoke every token signed by this key id")
	fs.StringVar(&tenant, "tenant", "", "revoke every token of this tenant (with --before: those issued before the time)")
	fs.StringVar(&beforeS, "before", "", "with --tenant: revoke tokens issued before this RFC 3339 time")
	fs.StringVar(&reason, "reason", "", "why (recorded on the ledger; required)")
	fs.StringVar(&idem, "idempotency-key", "", "makes a retry of this command a no-op (default: a random key)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	req := revoker.CommandRequest{Reason: reason, IdempotencyKey: idem}
	chosen := 0
	if tokenID != "" {
		chosen++
		req.Kind, req.TokenID = events.RevokeToken, tokenID
	}
	if holder != "" {
		chosen++
		t, h, ok := strings.Cut(holder, "/")
		if !ok || t == "" || h == "" {
			return fmt.Errorf("%w: --holder %q: want TENANT/HOLDER", errUsage, holder)
		}
		req.Kind, req.Tenant, req.Holder = events.RevokeHolder, t, h
	}
	if kid != "" {
		chosen++
		req.Kind, req.KeyID = events.RevokeKey, kid
	}
	switch {
	case beforeS != "":
		chosen++
		if tenant == "" {
			return fmt.Errorf("%w: --before needs --tenant", errUsage)
		}
		b, err := time.Parse(time.RFC3339, beforeS)
		if err != nil {
			return fmt.Errorf("%w: --before %q: want an RFC 3339 time such as 2026-11-27T10:00:00Z", errUsage, beforeS)
		}
		req.Kind, req.Tenant, req.Before = events.RevokeBefore, tenant, b
	case tenant != "":
		chosen++
		req.Kind, req.Tenant = events.RevokeTenant, tenant
	}
	if chosen != 1 {
		return fmt.Errorf("%w: give exactly one of --token, --holder, --kid, --tenant, --before with --tenant", errUsage)
	}
	if reason == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = uuid.NewString()
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	req.Auth = strings.TrimSpace(string(b))

	nc, err := nf.connect("cordon-revoke")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := revoker.Call(ctx, nc, req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no revoker is listening on %s at %s", events.SubjectCmdRevoke, nf.URL)
		}
		return err
	}
	out, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, string(out))
	if !rep.OK {
		return fmt.Errorf("revocation refused (%s): %s", rep.Code, rep.Error)
	}
	return nil
}
