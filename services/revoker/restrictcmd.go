package revoker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/events"
)

// RestrictCommand is the JSON body of a cordon.cmd.restrict request:
// narrow (quarantine) or step up one token by hand.
type RestrictCommand struct {
	// Auth is a Cordon admin token with scope "cordon:revoke", as for
	// cordon.cmd.revoke (CommandRequest.Auth). It is never logged.
	Auth    string `json:"auth"`
	TokenID string `json:"token_id"`
	// Step is "narrow" or "step_up".
	Step string `json:"step"`
	// For is how long the restriction lasts, as a Go duration ("2h");
	// default one hour, at most 168h.
	For string `json:"for,omitempty"`
	// Networks, for narrow, are the networks the token keeps (CIDR
	// prefixes or addresses); default: the token's own networks.
	Networks []string `json:"networks,omitempty"`
	Reason   string   `json:"reason"`
}

// ReleaseCommand is the JSON body of a cordon.cmd.release request: lift a
// token's restrictions before they end.
type ReleaseCommand struct {
	// Auth is as for RestrictCommand.
	Auth    string `json:"auth"`
	TokenID string `json:"token_id"`
	Reason  string `json:"reason"`
}

// RestrictReply is the JSON reply to cordon.cmd.restrict and
// cordon.cmd.release. A failed one has ok false, error and code (the codes
// of cordon.cmd.revoke).
type RestrictReply struct {
	OK bool `json:"ok"`
	// Step is the step in force (restrict), Escalated why it differs from
	// the one asked for; Until when it ends; Scopes and Networks what a
	// quarantined token keeps; Already "revoked" or "restricted" when
	// nothing changed.
	Step      string    `json:"step,omitempty"`
	Escalated string    `json:"escalated,omitempty"`
	Until     time.Time `json:"until,omitzero"`
	Scopes    []string  `json:"scopes,omitempty"`
	Networks  []string  `json:"networks,omitempty"`
	Already   string    `json:"already,omitempty"`
	// Released are the steps lifted (release).
	Released []string `json:"released,omitempty"`
	Error    string   `json:"error,omitempty"`
	Code     string   `json:"code,omitempty"`
}

// startRestrictCommands serves cordon.cmd.restrict and cordon.cmd.release
// (one replica of the queue group answers each).
func (r *Revoker) startRestrictCommands() error {
	for subj, h := range map[string]func(context.Context, []byte) RestrictReply{
		events.SubjectCmdRestrict: r.restrictCommand,
		events.SubjectCmdRelease:  r.releaseCommand,
	} {
		sub, err := r.o.NC.QueueSubscribe(subj, "cordon-revoker", func(m *nats.Msg) {
			ctx, cancel := context.WithTimeout(r.ctx, 60*time.Second)
			defer cancel()
			rep := h(ctx, m.Data)
			code := rep.Code
			if rep.OK {
				code = "ok"
			}
			r.stats.request(code)
			b, err := json.Marshal(rep)
			if err != nil {
				b = []byte(`{"ok":false,"error":"encode reply","code":"internal"}`)
			}
			if m.Reply != "" {
				if err := m.Respond(b); err != nil {
					r.o.Log.Warn().Err(err).Str("subject", subj).Msg("reply not sent")
				}
			}
		})
		if err != nil {
			return fmt.Errorf("revoker: subscribe %s: %w", subj, err)
		}
		r.cmdSubs = append(r.cmdSubs, sub)
	}
	return nil
}

// decodeCommand decodes a command body strictly.
func decodeCommand(data []byte, v any) error {
	if len(data) > MaxRequestSize {
		return fmt.Errorf("request is larger than %d bytes", MaxRequestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request is not valid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("request has trailing data")
	}
	return nil
}

func restrictFailure(code, format string, args ...any) RestrictReply {
	return RestrictReply{Code: code, Error: fmt.Sprintf(format, args...)}
}

// restrictCommand authenticates and carries out one cordon.cmd.restrict.
func (r *Revoker) restrictCommand(ctx context.Context, data []byte) RestrictReply {
	var req RestrictCommand
	if err := decodeCommand(data, &req); err != nil {
		return restrictFailure(CodeBadRequest, "%v", err)
	}
	caller, rep := r.authenticate(ctx, req.Auth)
	if caller == nil {
		r.o.Log.Warn().Str("code", rep.Code).Str("error", rep.Error).Msg("restrict request refused")
		return restrictFailure(rep.Code, "%s", rep.Error)
	}
	d := DefaultRestrictFor
	if req.For != "" {
		var err error
		if d, err = time.ParseDuration(req.For); err != nil {
			return restrictFailure(CodeBadRequest, "for %q: %v", req.For, err)
		}
	}
	res, err := r.Restrict(ctx, RestrictRequest{TokenID: req.TokenID, Step: req.Step, For: d, Networks: req.Networks,
		Actor: caller.Tenant + "/" + caller.Holder, Reason: req.Reason})
	if c := errorCode(err); c != "" {
		if c == CodeInternal {
			r.o.Log.Error().Err(err).Str("token_id", req.TokenID).Msg("restrict request failed")
		}
		return restrictFailure(c, "%v", err)
	}
	return RestrictReply{OK: true, Step: res.Step, Escalated: res.Escalated, Until: res.Until, Scopes: res.Scopes,
		Networks: res.Networks, Already: res.Already}
}

// releaseCommand authenticates and carries out one cordon.cmd.release.
func (r *Revoker) releaseCommand(ctx context.Context, data []byte) RestrictReply {
	var req ReleaseCommand
	if err := decodeCommand(data, &req); err != nil {
		return restrictFailure(CodeBadRequest, "%v", err)
	}
	caller, rep := r.authenticate(ctx, req.Auth)
	if caller == nil {
		r.o.Log.Warn().Str("code", rep.Code).Str("error", rep.Error).Msg("release request refused")
		return restrictFailure(rep.Code, "%s", rep.Error)
	}
	lifted, err := r.Release(ctx, req.TokenID, caller.Tenant+"/"+caller.Holder, req.Reason)
	if c := errorCode(err); c != "" {
		if c == CodeInternal {
			r.o.Log.Error().Err(err).Str("token_id", req.TokenID).Msg("release request failed")
		}
		return restrictFailure(c, "%v", err)
	}
	if len(lifted) == 0 {
		return restrictFailure(CodeNotFound, "token %s has no restriction in force", req.TokenID)
	}
	return RestrictReply{OK: true, Released: lifted}
}

// DefaultRestrictFor is how long a restriction by command lasts when the
// request gives no duration.
const DefaultRestrictFor = time.Hour

// errorCode maps an error of Restrict or Release to a reply code ("" for
// nil).
func errorCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, ErrUnknownToken):
		return CodeNotFound
	}
	return CodeInternal
}

// CallRestrict sends a cordon.cmd.restrict request and decodes the reply.
func CallRestrict(ctx context.Context, nc *nats.Conn, req RestrictCommand) (RestrictReply, error) {
	return callRestrict(ctx, nc, events.SubjectCmdRestrict, req)
}

// CallRelease sends a cordon.cmd.release request and decodes the reply.
func CallRelease(ctx context.Context, nc *nats.Conn, req ReleaseCommand) (RestrictReply, error) {
	return callRestrict(ctx, nc, events.SubjectCmdRelease, req)
}

func callRestrict(ctx context.Context, nc *nats.Conn, subj string, req any) (RestrictReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return RestrictReply{}, fmt.Errorf("encode %s request: %w", subj, err)
	}
	m, err := nc.RequestWithContext(ctx, subj, b)
	if err != nil {
		return RestrictReply{}, fmt.Errorf("request %s: %w", subj, err)
	}
	var rep RestrictReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return RestrictReply{}, fmt.Errorf("decode %s reply: %w", subj, err)
	}
	return rep, nil
}
