package issuer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/adminauth"
)

// Operations served over NATS request/reply.
const (
	opIssue   = "issue"
	opRotate  = "rotate"
	opList    = "list"
	opInspect = "inspect"
)

// cmdTimeout bounds the work behind one command.
const cmdTimeout = 15 * time.Second

// cmdHandler answers one cordon.cmd.* subject. Every request gets a reply
// that says what was done or why not; nothing in a request can crash it.
func (i *Issuer) cmdHandler(op string) nats.MsgHandler {
	return func(m *nats.Msg) {
		if m.Reply == "" {
			i.log.Debug().Str("subject", m.Subject).Msg("command without a reply subject ignored")
			return
		}
		reply := i.command(op, m.Data)
		b, err := json.Marshal(reply)
		if err != nil {
			i.log.Error().Err(err).Str("op", op).Msg("encode command reply")
			return
		}
		if err := m.Respond(b); err != nil {
			i.log.Warn().Err(err).Str("op", op).Msg("send command reply")
		}
	}
}

func (i *Issuer) command(op string, data []byte) CmdReply {
	reply, err := i.runCommand(op, data)
	if err != nil {
		_, code := Classify(err)
		msg := err.Error()
		switch code {
		case "internal":
			i.log.Error().Err(err).Str("op", op).Msg("command failed")
			msg = "internal error; see the issuer log"
		case "unauthenticated", "forbidden":
			i.refused.Warn().Str("op", op).Str("code", code).Str("reason", msg).Msg("command refused")
		}
		return CmdReply{OK: false, Outcome: OutcomeRejected, Error: msg, Code: code}
	}
	reply.OK = true
	return reply
}

func (i *Issuer) runCommand(op string, data []byte) (CmdReply, error) {
	var req CmdRequest
	if err := decodeStrict(data, &req); err != nil {
		return CmdReply{}, err
	}
	scope := map[string]string{opIssue: ScopeIssue, opRotate: ScopeRotate, opList: ScopeRead, opInspect: ScopeRead}[op]
	ctx, cancel := context.WithTimeout(i.bg, cmdTimeout)
	defer cancel()
	// A NATS request says nothing provable about its sender: a token bound
	// to networks or a device is refused here (no Peer).
	c, err := i.Authenticate(ctx, adminauth.Request{Token: req.Auth, Scope: scope})
	if err != nil {
		return CmdReply{}, err
	}

	switch op {
	case opIssue:
		if req.Issue == nil {
			return CmdReply{}, fmt.Errorf("%w: issue: the request to issue is required", ErrBadRequest)
		}
		if req.IdempotencyKey == "" {
			return CmdReply{}, fmt.Errorf("%w: idempotency_key is required for issue", ErrBadRequest)
		}
		if err := authorizeGrant(c, req.Issue.Tenant, req.Issue.Scopes); err != nil {
			return CmdReply{}, err
		}
		res, replayed, err := i.idempotent(c, opIssue, req.IdempotencyKey, req.Issue, func() (any, error) {
			return i.Issue(ctx, c.Actor(), *req.Issue)
		})
		if err != nil {
			return CmdReply{}, err
		}
		return CmdReply{Outcome: OutcomeIssued, Replayed: replayed, Issued: res.(*IssueResponse)}, nil

	case opRotate:
		if req.Rotate == nil || req.Rotate.TokenID == "" {
			return CmdReply{}, fmt.Errorf("%w: rotate.token_id is required", ErrBadRequest)
		}
		if req.IdempotencyKey == "" {
			return CmdReply{}, fmt.Errorf("%w: idempotency_key is required for rotate", ErrBadRequest)
		}
		if err := i.authorizeRotate(c, req.Rotate.TokenID); err != nil {
			return CmdReply{}, err
		}
		in := *req.Rotate
		res, replayed, err := i.idempotent(c, opRotate, req.IdempotencyKey, in, func() (any, error) {
			return i.Rotate(ctx, c.Actor(), in.TokenID, in)
		})
		if err != nil {
			return CmdReply{}, err
		}
		return CmdReply{Outcome: OutcomeRotated, Replayed: replayed, Rotated: res.(*RotateResponse)}, nil

	case opList:
		var f ListFilter
		if req.List != nil {
			f = *req.List
		}
		list, err := i.List(f)
		if err != nil {
			return CmdReply{}, err
		}
		return CmdReply{Outcome: OutcomeListed, Tokens: list}, nil

	case opInspect:
		if req.TokenID == "" {
			return CmdReply{}, fmt.Errorf("%w: token_id is required", ErrBadRequest)
		}
		d, err := i.Inspect(req.TokenID)
		if err != nil {
			return CmdReply{}, err
		}
		return CmdReply{Outcome: OutcomeInspected, Token: d}, nil
	}
	return CmdReply{}, fmt.Errorf("%w: unknown operation %q", ErrBadRequest, op)
}

// idemTable remembers the results of requests carrying an idempotency key,
// so that a replay returns the original result instead of minting twice. It
// lives in memory only (it holds minted tokens, which are never stored) and
// keeps at most max entries, dropping the oldest.
type idemTable struct {
	mu    sync.Mutex
	max   int
	m     map[string]*idemEntry
	order []*idemEntry // insertion order, for eviction
}

type idemEntry struct {
	key    string
	digest [32]byte
	done   chan struct{}
	res    any
	err    error
}

func newIdemTable(max int) *idemTable {
	return &idemTable{max: max, m: map[string]*idemEntry{}}
}

// do runs fn for a new key, waits for and returns the first result for a
// known key, and refuses a known key with a different request digest. Only
// successes are remembered: a failed request may be retried with its key.
func (t *idemTable) do(key string, digest [32]byte, fn func() (any, error)) (any, bool, error) {
	t.mu.Lock()
	if e, ok := t.m[key]; ok {
		t.mu.Unlock()
		if e.digest != digest {
			return nil, false, fmt.Errorf("%w: idempotency key was used for a different request", ErrConflict)
		}
		<-e.done
		if e.err != nil {
			return nil, false, e.err
		}
		return e.res, true, nil
	}
	e := &idemEntry{key: key, digest: digest, done: make(chan struct{})}
	t.m[key] = e
	t.order = append(t.order, e)
	t.evict()
	t.mu.Unlock()

	e.res, e.err = fn()
	close(e.done)
	if e.err != nil {
		t.mu.Lock()
		if t.m[key] == e {
			delete(t.m, key)
		}
		t.mu.Unlock()
	}
	return e.res, false, e.err
}

// evict drops the oldest entries beyond max. Callers hold mu.
func (t *idemTable) evict() {
	for len(t.m) > t.max && len(t.order) > 0 {
		e := t.order[0]
		t.order = t.order[1:]
		if t.m[e.key] == e {
			delete(t.m, e.key)
		}
	}
	if len(t.order) > 2*t.max+16 { // forget entries of failed requests
		live := make([]*idemEntry, 0, len(t.m))
		for _, e := range t.order {
			if t.m[e.key] == e {
				live = append(live, e)
			}
		}
		t.order = live
	}
}
