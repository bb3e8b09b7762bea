package revoker

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// retryDelay is how long a message whose write failed waits before it is
// redelivered.
const retryDelay = time.Second

// compileMsg handles one TOKENS message: a TokenRevoked becomes a denylist
// entry; other ledger events need nothing here (the token index follows
// them). It acknowledges only after the write; bad input goes to the
// dead-letter subject and is acknowledged so it never blocks the consumer.
func (r *Revoker) compileMsg(msg jetstream.Msg) {
	env, err := events.Decode(msg.Data())
	if err != nil {
		r.deadLetter(msg, err.Error())
		return
	}
	switch p := env.Data.(type) {
	case *events.TokenRevoked:
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		rec := events.DenyRecord{
			Kind: p.Kind, TokenID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, KeyID: p.KeyID,
			Reason: p.Reason, Actor: p.Actor, RevokedAt: env.Time, Expiry: p.Expiry,
		}
		created, err := r.writeToken(ctx, rec, 0)
		if err != nil {
			r.o.Log.Error().Err(err).Str("token_id", p.TokenID).Msg("denylist write failed, will retry")
			r.pendWrite(rec)
			_ = msg.NakWithDelay(retryDelay)
			return
		}
		if created {
			r.stats.denyWrites.Add(1)
			r.o.Log.Info().Str("token_id", p.TokenID).Str("tenant", p.Tenant).Str("kind", p.Kind).Str("actor", p.Actor).
				Time("until", p.Expiry).Msg("token denied")
		} else {
			r.stats.denySkipped.Add(1)
		}
		r.index.markRevoked(p.TokenID)
		r.alerts.ResolveOpenedBefore(p.TokenID, fmt.Sprintf("token revoked by %s (kind %s): %s", p.Actor, p.Kind, p.Reason), env.Time)
	case *events.TokenExpired:
		r.alerts.Resolve(p.TokenID, "token expired")
	case *events.TokenIssued:
		if p.Canary && !r.denyCanary(msg, env, p) {
			return
		}
	case *events.TokenRotated, *events.TokenRestricted, *events.TokenReleased:
		// Restrictions are written to the denylist by the step that
		// records them (restrict.go).
	default:
		r.deadLetter(msg, fmt.Sprintf("unexpected event type %q on the token ledger", env.Type))
		return
	}
	r.ack(msg)
}

// pendWrite hands a token entry the bucket refused to the retrier, unless
// it already holds it: it is broadcast now (pending) and written when
// JetStream accepts it. The ledger message is redelivered as well; both
// writes create the entry once.
func (r *Revoker) pendWrite(rec events.DenyRecord) {
	key := events.DenyKeyToken(rec.TokenID)
	if r.pend.hasKey(key) {
		return
	}
	j := &job{ID: uuid.NewString(), Kind: rec.Kind, Since: r.now().UTC(), Token: &denyWrite{Key: key, Rec: rec}}
	if err := r.announcePending(j); err != nil {
		r.o.Log.Error().Err(err).Str("token_id", rec.TokenID).Msg("denylist broadcast")
		return
	}
	if err := r.pend.add(j, false, false); err != nil {
		r.o.Log.Error().Err(err).Msg("revocation journal")
	}
}

// anomalyMsg handles one ANOMALIES message.
func (r *Revoker) anomalyMsg(msg jetstream.Msg) {
	env, a, err := events.DecodeAs[*events.AnomalyDetected](msg.Data())
	if err != nil {
		r.deadLetter(msg, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	if err := r.respond(ctx, env, a); err != nil {
		r.o.Log.Error().Err(err).Str("anomaly_id", a.AnomalyID).Str("token_id", a.TokenID).Msg("anomaly response failed, will retry")
		_ = msg.NakWithDelay(retryDelay)
		return
	}
	r.ack(msg)
}

func (r *Revoker) ack(msg jetstream.Msg) {
	if err := msg.Ack(); err != nil {
		r.o.Log.Warn().Err(err).Str("subject", msg.Subject()).Msg("ack failed; the message will be redelivered")
	}
}

// deadLetter moves a message the revoker cannot use to the dead-letter
// subject, with the reason and the original subject in headers, and
// acknowledges it. If the dead letter cannot be published the message is
// redelivered later rather than lost.
func (r *Revoker) deadLetter(msg jetstream.Msg, reason string) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	dl := nats.NewMsg(events.DeadLetterSubject(DeadLetterName))
	dl.Data = msg.Data()
	dl.Header.Set(events.HeaderDeadReason, reason)
	dl.Header.Set(events.HeaderDeadSubject, msg.Subject())
	var opts []jetstream.PublishOpt
	if meta, err := msg.Metadata(); err == nil {
		// Redelivery of the same poison message is de-duplicated.
		opts = append(opts, jetstream.WithMsgID(fmt.Sprintf("%s:%s:%d", DeadLetterName, meta.Stream, meta.Sequence.Stream)))
	}
	if _, err := r.o.JS.PublishMsg(ctx, dl, opts...); err != nil {
		r.o.Log.Error().Err(err).Str("subject", msg.Subject()).Msg("dead letter publish failed, will retry")
		_ = msg.NakWithDelay(retryDelay)
		return
	}
	r.stats.deadLetters.Add(1)
	r.o.Log.Warn().Str("subject", msg.Subject()).Str("reason", reason).Msg("poison message moved to dead letters")
	r.ack(msg)
}
