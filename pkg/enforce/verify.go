package enforce

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

// ErrRejected is wrapped by Verify and Revoked when a token cannot be
// accepted; the message names the Reason, never the token.
var ErrRejected = errors.New("token rejected")

// Verify parses s and verifies its signature against the keys the enforcer
// follows (the keys bucket), through its decision cache. It is the narrow
// view a control-plane service needs to authenticate its own callers; the
// time, audience, scope and context checks are the caller's (Check makes
// them for a request).
func (e *Enforcer) Verify(s string) (*token.Token, error) {
	// No source address: a control-plane caller is never throttled here.
	c, reason, _ := e.verify(s, netip.Addr{}, time.Now())
	if c == nil || reason != "" {
		return nil, fmt.Errorf("%w: %s", ErrRejected, reason)
	}
	return c.tok, nil
}

// Revoked reports whether the replicated denylist revokes t: its own entry
// or a holder, key, tenant or "before" rule. With FailClosed and
// MaxStaleness, a denylist view older than the bound is an error wrapping
// ErrRejected (ReasonDenylistStale), as Check denies then.
func (e *Enforcer) Revoked(_ context.Context, t *token.Token) (bool, error) {
	if e.opts.FailClosed && e.opts.MaxStaleness > 0 && e.fresh.staleAt(time.Now(), e.opts.MaxStaleness) {
		return false, fmt.Errorf("%w: %s", ErrRejected, ReasonDenylistStale)
	}
	return e.dl.revoked(t), nil
}
