package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/ssf"
)

// Shared Signals.
//
// Transmitting: with SSFOptions.Signer and Receivers, every TokenRevoked
// on the ledger becomes a CAEP credential-change SET (change_type revoke)
// pushed to every receiver (RFC 8935). A durable consumer of the ledger's
// revocations (events.RevokerSSFDurable) carries the delivery: a SET is
// acknowledged once every receiver accepted it or refused it for good, and
// redelivered with back-off otherwise, so a receiver that is down gets it
// later and a revoker restart loses nothing. The SET's jti is the ledger
// event's id: a receiver that gets one twice can tell.
//
// Receiving: SSFHandler verifies SETs pushed by an identity provider
// (SSFOptions.Receive) and revokes every token of the holder an account
// event names: RISC account-disabled, account-purged and
// credential-compromise, and CAEP credential-change with change_type
// revoke. The holder is the subject's name (opaque id, email, iss_sub's
// sub, or a complex subject's user), the tenant its complex subject's
// tenant or SSFOptions.Tenant.

// SSFOptions configure Shared Signals.
type SSFOptions struct {
	// Signer signs transmitted SETs and publishes their key (JWKS); nil
	// transmits nothing.
	Signer *ssf.Signer
	// Issuer is the "iss" of transmitted SETs (default
	// DefaultSSFIssuer).
	Issuer string
	// Audience, when set, is their "aud".
	Audience string
	// Receivers get every revocation.
	Receivers []*ssf.Pusher
	// Receive verifies pushed SETs; with no Keys, nothing is received.
	Receive ssf.VerifyOptions
	// ReceiveAuthorization, when set, is the Authorization header a
	// pushing identity provider must send.
	ReceiveAuthorization string
	// Tenant is the tenant of received subjects that name none.
	Tenant string
}

// DefaultSSFIssuer is the "iss" of transmitted SETs when none is set.
const DefaultSSFIssuer = "urn:cordon:revoker"

// CredentialTypeAPIKey is the credential_type of Cordon's credential-change
// events: a bearer API token.
const CredentialTypeAPIKey = "api_key"

// ssfCounters count Shared Signals work.
type ssfCounters struct {
	sent, rejected, retried, received, acted atomic.Uint64
}

// SSFStats are the Shared Signals counters.
type SSFStats struct {
	// Sent counts SETs receivers accepted, Rejected those refused for good,
	// Retried deliveries to try again later.
	Sent, Rejected, Retried uint64
	// Received counts verified SETs pushed to the revoker, Acted those
	// that revoked a holder's tokens.
	Received, Acted uint64
}

// SSFStats returns the Shared Signals counters.
func (r *Revoker) SSFStats() SSFStats {
	c := &r.ssfStats
	return SSFStats{Sent: c.sent.Load(), Rejected: c.rejected.Load(), Retried: c.retried.Load(), Received: c.received.Load(), Acted: c.acted.Load()}
}

// startSSF starts the transmitter when there is something to send to.
func (r *Revoker) startSSF(ctx context.Context) error {
	o := r.o.SSF
	if o.Signer == nil || len(o.Receivers) == 0 {
		return nil
	}
	d := events.RevokerSSFDurable(r.o.Durable)
	cons, err := r.o.JS.CreateOrUpdateConsumer(ctx, d.Stream, jetstream.ConsumerConfig{
		Durable:        d.Name,
		Description:    "cordon revoker: pushes revocations and restrictions as Shared Signals events",
		FilterSubjects: []string{events.SubjectTokenPrefix + "revoked.>", events.SubjectTokenPrefix + "restricted.>"},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        2 * time.Minute,
		MaxAckPending:  64,
		// Revocations from now on: a new receiver is not sent history.
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("revoker: consumer %s: %w", d, err)
	}
	cc, err := cons.Consume(r.ssfMsg, jetstream.ConsumeErrHandler(r.consumeErr),
		jetstream.PullExpiry(consumePullExpiry), jetstream.PullHeartbeat(consumePullHeartbeat))
	if err != nil {
		return fmt.Errorf("revoker: consume %s: %w", d, err)
	}
	r.consumers = append(r.consumers, cc)
	return nil
}

// ssfMsg pushes one revocation (credential-change) or restriction
// (session-revoked) to every receiver.
func (r *Revoker) ssfMsg(m jetstream.Msg) {
	env, err := events.Decode(m.Data())
	if err != nil {
		r.o.Log.Warn().Err(err).Str("subject", m.Subject()).Msg("shared signals: undecodable ledger event skipped")
		_ = m.Term()
		return
	}
	var set ssf.SET
	var tokenID string
	switch p := env.Data.(type) {
	case *events.TokenRevoked:
		set, tokenID = r.revocationSET(env.ID.String(), p, r.now()), p.TokenID
	case *events.TokenRestricted:
		if p.Step != events.StepNarrow && p.Step != events.StepStepUp {
			_ = m.Ack() // a shadow changes nothing: nothing to signal
			return
		}
		set, tokenID = r.restrictionSET(env.ID.String(), p, r.now()), p.TokenID
	default:
		_ = m.Ack()
		return
	}
	tok, err := r.o.SSF.Signer.Sign(set)
	if err != nil {
		r.o.Log.Error().Err(err).Str("token_id", tokenID).Msg("shared signals: could not sign the event")
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	retry := false
	for _, p := range r.o.SSF.Receivers {
		err := p.Push(ctx, tok)
		switch {
		case err == nil:
			r.ssfStats.sent.Add(1)
		case errors.Is(err, ssf.ErrRejected):
			r.ssfStats.rejected.Add(1)
			r.o.Log.Error().Err(err).Str("token_id", tokenID).Msg("shared signals: a receiver refused the event for good")
		default:
			retry = true
			r.o.Log.Warn().Err(err).Str("token_id", tokenID).Msg("shared signals: push failed; retrying")
		}
	}
	if !retry {
		_ = m.Ack()
		return
	}
	r.ssfStats.retried.Add(1)
	n := uint64(1)
	if md, err := m.Metadata(); err == nil {
		n = md.NumDelivered
	}
	_ = m.NakWithDelay(min(time.Second<<min(n, 8), 5*time.Minute))
}

// revocationSET is the credential-change event of one revocation. The
// subject is the token (its id, never the string), with the holder and the
// tenant beside it.
func (r *Revoker) revocationSET(id string, rev *events.TokenRevoked, now time.Time) ssf.SET {
	return r.tokenSET(id, now, rev.Tenant, rev.Holder, rev.TokenID, ssf.EventCredentialChange, map[string]any{
		"credential_type":   CredentialTypeAPIKey,
		"change_type":       "revoke",
		"event_timestamp":   now.Unix(),
		"initiating_entity": initiator(rev.AnomalyID),
		"reason_admin":      map[string]string{"en": rev.Reason},
		"token_id":          rev.TokenID,
	})
}

// restrictionSET is the CAEP session-revoked event of a quarantine or a
// step-up: the token's sessions end and it must be re-established (within
// its read scopes from its known networks, or with its bound certificate)
// until the restriction ends.
func (r *Revoker) restrictionSET(id string, p *events.TokenRestricted, now time.Time) ssf.SET {
	return r.tokenSET(id, now, p.Tenant, p.Holder, p.TokenID, ssf.EventSessionRevoked, map[string]any{
		"event_timestamp":   now.Unix(),
		"initiating_entity": initiator(p.AnomalyID),
		"reason_admin":      map[string]string{"en": p.Reason},
		"token_id":          p.TokenID,
		"cordon_step":       p.Step,
		"cordon_until":      p.Until.Unix(),
	})
}

// initiator is the initiating_entity of an event: the response policy's
// when it answers an anomaly, an admin's otherwise.
func initiator(anomalyID string) string {
	if anomalyID != "" {
		return "policy"
	}
	return "admin"
}

// tokenSET is a SET about one token: the subject is the token (its id,
// never the string), with the holder and the tenant beside it.
func (r *Revoker) tokenSET(id string, now time.Time, tenant, holder, tokenID, eventType string, ev map[string]any) ssf.SET {
	set := ssf.SET{Issuer: r.o.SSF.Issuer, ID: id, IssuedAt: now.Unix(),
		Subject: &ssf.Subject{Format: "complex",
			User:   &ssf.Subject{Format: "opaque", ID: holder},
			Tenant: &ssf.Subject{Format: "opaque", ID: tenant},
			Token:  &ssf.Subject{Format: "opaque", ID: tokenID}},
		Events: ssf.EventsMap{eventType: ev}}
	if set.Issuer == "" {
		set.Issuer = DefaultSSFIssuer
	}
	if r.o.SSF.Audience != "" {
		set.Audience = ssf.Audience{r.o.SSF.Audience}
	}
	return set
}

// SSFHandler serves Shared Signals: GET /.well-known/jwks.json (the key
// of transmitted SETs, when there is a Signer) and POST /ssf/events (the
// push receiver, when SSFOptions.Receive has keys). Other paths are 404.
func (r *Revoker) SSFHandler() http.Handler {
	mux := http.NewServeMux()
	if r.o.SSF.Signer != nil {
		jwks, _ := json.Marshal(r.o.SSF.Signer.JWKS())
		mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/jwk-set+json")
			_, _ = w.Write(jwks)
		})
	}
	if len(r.o.SSF.Receive.Keys.Keys) > 0 {
		mux.Handle("/ssf/events", &ssf.Receiver{Verify: r.o.SSF.Receive, Authorization: r.o.SSF.ReceiveAuthorization, Handle: r.handleSET})
	}
	return mux
}

// accountEvents are the received events that revoke a holder's tokens.
var accountEvents = map[string]string{
	ssf.EventAccountDisabled:      "account disabled",
	ssf.EventAccountPurged:        "account deleted",
	ssf.EventCredentialCompromise: "credential compromised",
}

// handleSET revokes the tokens of the holder an account event names.
func (r *Revoker) handleSET(set ssf.SET) error {
	r.ssfStats.received.Add(1)
	what := ""
	for typ, ev := range set.Events {
		if w, ok := accountEvents[typ]; ok {
			what = w
		} else if typ == ssf.EventCredentialChange && ev["change_type"] == "revoke" {
			what = "credentials revoked"
		}
	}
	if what == "" {
		r.o.Log.Info().Str("iss", set.Issuer).Str("jti", set.ID).Msg("shared signals: event received, nothing to do")
		return nil
	}
	if set.Subject == nil || set.Subject.Name() == "" {
		return fmt.Errorf("%w: the event names no subject Cordon can map to a holder", ssf.ErrInvalid)
	}
	holder, tenant := set.Subject.Name(), r.o.SSF.Tenant
	if set.Subject.Tenant != nil && set.Subject.Tenant.Name() != "" {
		tenant = set.Subject.Tenant.Name()
	}
	if tenant == "" {
		return fmt.Errorf("%w: the subject names no tenant and the revoker has no default (--ssf-tenant)", ssf.ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.Revoke(ctx, Request{Kind: events.RevokeHolder, Tenant: tenant, Holder: holder, Actor: "ssf:" + set.Issuer,
		Reason: fmt.Sprintf("identity provider %s: %s (SET %s)", set.Issuer, what, set.ID)})
	if errors.Is(err, ErrBadRequest) {
		return fmt.Errorf("%w: %v", ssf.ErrInvalid, err)
	}
	if err != nil {
		return err
	}
	r.ssfStats.acted.Add(1)
	r.o.Log.Warn().Str("iss", set.Issuer).Str("tenant", tenant).Str("holder", holder).Int("revoked", len(res.Revoked)).
		Msg("shared signals: the identity provider disabled a holder; its tokens are revoked")
	return nil
}
