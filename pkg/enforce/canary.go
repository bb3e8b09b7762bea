package enforce

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Canary tokens.
//
// A canary is on the denylist from the moment it is issued, with a record
// that marks it (events.DenyRecord.Canary), so every enforcer denies it
// like a revoked token: the thief learns nothing more than from any dead
// token. The enforcer also reports the use at once on core NATS
// (events.CanarySubject), naming the token by id, the source, the client
// and the route; the revoker alerts on-call. Check never waits for the
// report: a publish only copies into the connection's buffer.

// canaryCounters count canary uses.
type canaryCounters struct {
	trips, lost atomic.Uint64
}

// tripCanary reports the use of canary t, planted for h.
func (e *Enforcer) tripCanary(req *Request, t *token.Token, h holderKey, now time.Time) {
	e.canaries.trips.Add(1)
	rep := events.CanaryTripped{TokenID: t.ID, Tenant: t.Tenant, Holder: h.holder, Enforcer: e.opts.ID, Time: now.UTC(),
		UserAgent: clip(req.UserAgent, 1024), Method: clip(req.Method, 32), Route: clip(req.Route, 1024)}
	if rep.Holder == "" {
		rep.Holder = t.Holder
	}
	if req.RemoteAddr.IsValid() {
		rep.SourceIP = req.RemoteAddr.Unmap().String()
	}
	e.deny.Warn().Str("token_id", t.ID).Str("tenant", t.Tenant).Str("holder", rep.Holder).Str("source_ip", rep.SourceIP).
		Str("route", rep.Route).Msg("canary token used")
	bc := e.bcast.Load()
	if bc == nil || bc.nc == nil {
		e.canaries.lost.Add(1)
		return
	}
	b, err := json.Marshal(rep)
	if err == nil {
		err = bc.nc.Publish(events.CanarySubject(e.opts.ID), b)
	}
	if err != nil {
		e.canaries.lost.Add(1)
	}
}
