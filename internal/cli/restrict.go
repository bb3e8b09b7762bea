package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/revoker"
)

// runTokenRestrict is `cordon token restrict`: narrow (quarantine) or step
// up one token over cordon.cmd.restrict.
func runTokenRestrict(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token restrict",
		`token restrict --token ID (--narrow [--networks CIDR,…] | --step-up) [--for 1h] --reason "…" [--nats URL] [--token-file FILE]`)
	var (
		tokenFile, tokenID, networks, reason string
		narrow, stepUp                       bool
		dur, timeout                         time.Duration
	)
	nf := addNATSFlags(fs, adminIdentity)
	fs.StringVar(&tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", ".cordon/admin.token"),
		"file holding a Cordon token with scope cordon:revoke ($CORDON_TOKEN_FILE)")
	fs.StringVar(&tokenID, "token", "", "the token to restrict, by id (required)")
	fs.BoolVar(&narrow, "narrow", false, "quarantine: only its read scopes, only from --networks (default: its own networks)")
	fs.BoolVar(&stepUp, "step-up", false, "deny it unless the request presents the client certificate it is bound to")
	fs.StringVar(&networks, "networks", "", "with --narrow: comma-separated CIDR prefixes or addresses its holder uses")
	fs.DurationVar(&dur, "for", revoker.DefaultRestrictFor, "how long the restriction lasts (at most 168h; never past the token's expiry)")
	fs.StringVar(&reason, "reason", "", "why (recorded on the ledger; required)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	req := revoker.RestrictCommand{TokenID: tokenID, For: dur.String(), Reason: reason}
	switch {
	case narrow == stepUp:
		return fmt.Errorf("%w: give exactly one of --narrow and --step-up", errUsage)
	case narrow:
		req.Step = events.StepNarrow
	default:
		req.Step = events.StepStepUp
	}
	if networks != "" {
		if !narrow {
			return fmt.Errorf("%w: --networks applies to --narrow only", errUsage)
		}
		for _, n := range strings.Split(networks, ",") {
			if n = strings.TrimSpace(n); n != "" {
				req.Networks = append(req.Networks, n)
			}
		}
	}
	if tokenID == "" {
		return fmt.Errorf("%w: --token is required", errUsage)
	}
	if reason == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	auth, err := readAdminToken(env, tokenFile)
	if err != nil {
		return err
	}
	req.Auth = auth
	return callRevokerCmd(ctx, env, nf, timeout, events.SubjectCmdRestrict, "restriction", func(ctx context.Context, nc *nats.Conn) (revoker.RestrictReply, error) {
		return revoker.CallRestrict(ctx, nc, req)
	})
}

// runTokenRelease is `cordon token release`: lift a token's restrictions
// over cordon.cmd.release.
func runTokenRelease(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token release", `token release --token ID --reason "…" [--nats URL] [--token-file FILE]`)
	var (
		tokenFile, tokenID, reason string
		timeout                    time.Duration
	)
	nf := addNATSFlags(fs, adminIdentity)
	fs.StringVar(&tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", ".cordon/admin.token"),
		"file holding a Cordon token with scope cordon:revoke ($CORDON_TOKEN_FILE)")
	fs.StringVar(&tokenID, "token", "", "the token to release, by id (required)")
	fs.StringVar(&reason, "reason", "", "why (recorded on the ledger; required)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if tokenID == "" {
		return fmt.Errorf("%w: --token is required", errUsage)
	}
	if reason == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	auth, err := readAdminToken(env, tokenFile)
	if err != nil {
		return err
	}
	req := revoker.ReleaseCommand{Auth: auth, TokenID: tokenID, Reason: reason}
	return callRevokerCmd(ctx, env, nf, timeout, events.SubjectCmdRelease, "release", func(ctx context.Context, nc *nats.Conn) (revoker.RestrictReply, error) {
		return revoker.CallRelease(ctx, nc, req)
	})
}

// callRevokerCmd connects, sends one restrict or release request and
// prints the reply.
func callRevokerCmd(ctx context.Context, env *Env, nf *natsFlags, timeout time.Duration, subj, what string,
	call func(context.Context, *nats.Conn) (revoker.RestrictReply, error)) error {
	nc, err := nf.connect("cordon-" + what)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := call(ctx, nc)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no revoker is listening on %s at %s", subj, nf.URL)
		}
		return err
	}
	out, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, string(out))
	if !rep.OK {
		return fmt.Errorf("%s refused (%s): %s", what, rep.Code, rep.Error)
	}
	return nil
}
