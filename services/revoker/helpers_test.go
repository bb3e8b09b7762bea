package revoker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

type fixture struct {
	t      *testing.T
	env    *natstest.Env
	r      *revoker.Revoker
	o      revoker.Options
	signer token.Signer
	admin  string
	logs   *natstest.LogBuffer
	now    time.Time
}

const maxTTL = 2 * time.Hour

// setup starts JetStream, publishes a signing key, mints an admin token
// and starts a revoker; tune adjusts its options.
func setup(t *testing.T, tune func(*revoker.Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, env: natstest.Run(t), logs: &natstest.LogBuffer{}, now: time.Now()}
	s, err := token.GenerateSigner(f.now)
	if err != nil {
		t.Fatal(err)
	}
	f.signer = s
	f.publishKey(s)
	f.admin = f.mint(token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}})
	f.o = revoker.Options{
		NC: f.env.NC, JS: f.env.JS, MaxTokenTTL: maxTTL, Source: "revoker/test", TrustAnchors: f.env.Anchors(),
		Log: zerolog.New(io.MultiWriter(f.logs, zerolog.NewTestWriter(t))).With().Timestamp().Logger(),
	}
	if tune != nil {
		tune(&f.o)
	}
	f.start()
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	r, err := revoker.New(f.o)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		r.Close()
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { r.Close() })
	f.r = r
}

func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

func (f *fixture) publishKey(s token.Signer) {
	f.t.Helper()
	f.env.PublishKey(f.t, s)
}

func newID(t *testing.T) string {
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// mint mints a token with f.signer and records it on the ledger, as the
// issuer does; zero times default to valid for an hour.
func (f *fixture) mint(c token.Claims) string {
	return f.mintWith(f.signer, c)
}

// mintWith mints with s and records the token on the ledger.
func (f *fixture) mintWith(s token.Signer, c token.Claims) string {
	f.t.Helper()
	tok, c := f.forgeWith(s, c)
	f.publish(time.Unix(c.IssuedAt, 0), &events.TokenIssued{TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder, KeyID: s.KeyID,
		Claims: adminauth.LedgerClaims(c), Actor: "issuer:test", BreakGlass: c.BreakGlass})
	return tok
}

// forge mints with f.signer outside the issuer: the ledger knows nothing
// of it.
func (f *fixture) forge(c token.Claims) string {
	f.t.Helper()
	tok, _ := f.forgeWith(f.signer, c)
	return tok
}

func (f *fixture) forgeWith(s token.Signer, c token.Claims) (string, token.Claims) {
	f.t.Helper()
	if c.ID == "" {
		c.ID = newID(f.t)
	}
	if c.IssuedAt == 0 {
		c.IssuedAt = f.now.Add(-time.Minute).Unix()
		c.NotBefore = c.IssuedAt
	}
	if c.Expiry == 0 {
		c.Expiry = f.now.Add(time.Hour).Unix()
	}
	tok, err := s.Mint(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok, c
}

// tok is a token on the ledger.
type tok struct {
	id, tenant, holder, kid string
	issued, expiry          time.Time
	breakGlass              bool
}

// issue publishes a TokenIssued event, issued `ago` and living `ttl` from then.
func (f *fixture) issue(tenant, holder, kid string, ago, ttl time.Duration, breakGlass bool) tok {
	f.t.Helper()
	t := tok{id: newID(f.t), tenant: tenant, holder: holder, kid: kid, issued: f.now.Add(-ago).Truncate(time.Second),
		breakGlass: breakGlass}
	t.expiry = t.issued.Add(ttl)
	f.publish(t.issued, &events.TokenIssued{TokenID: t.id, Tenant: tenant, Holder: holder, KeyID: kid, Actor: "issuer",
		BreakGlass: breakGlass,
		Claims:     events.TokenClaims{Scopes: []string{"invoices:read"}, Audience: []string{"payments"}, NotBefore: t.issued, Expiry: t.expiry}})
	return t
}

func (f *fixture) publish(at time.Time, p events.Payload) events.Envelope {
	f.t.Helper()
	e, err := events.New("test", at, p)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.env.JS.Publish(f.ctx(), events.Subject(e), b, jetstream.WithMsgID(e.MsgID())); err != nil {
		f.t.Fatal(err)
	}
	return e
}

// waitKnown waits until the revoker's index holds the tokens.
func (f *fixture) waitKnown(toks ...tok) {
	f.t.Helper()
	natstest.WaitFor(f.t, 5*time.Second, func() error {
		for _, t := range toks {
			if _, ok := f.r.Token(t.id); !ok {
				return fmt.Errorf("token %s not indexed", t.id)
			}
		}
		return nil
	})
}

// call sends a cordon.cmd.revoke request with the admin token unless auth is set.
func (f *fixture) call(req revoker.CommandRequest) (revoker.Reply, []byte) {
	f.t.Helper()
	if req.Auth == "" {
		req.Auth = f.admin
	}
	if req.Reason == "" {
		req.Reason = "test"
	}
	b, _ := json.Marshal(req)
	m, err := f.env.NC.Request(events.SubjectCmdRevoke, b, 10*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	var rep revoker.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		f.t.Fatalf("%v: %s", err, m.Data)
	}
	return rep, m.Data
}

// revocations reads every TokenRevoked on the ledger, by token id.
func (f *fixture) revocations() map[string][]*events.TokenRevoked {
	f.t.Helper()
	out := map[string][]*events.TokenRevoked{}
	for _, e := range f.ledger(events.SubjectTokenPrefix + "revoked.>") {
		p := e.Data.(*events.TokenRevoked)
		out[p.TokenID] = append(out[p.TokenID], p)
	}
	return out
}

// ledger reads every event on subjects matching filter.
func (f *fixture) ledger(filter string) []events.Envelope {
	f.t.Helper()
	cons, err := f.env.JS.OrderedConsumer(f.ctx(), events.StreamTokens, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []events.Envelope
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(150*time.Millisecond))
		if err != nil {
			f.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			e, err := events.Decode(m.Data())
			if err != nil {
				f.t.Fatalf("ledger holds a bad event: %v", err)
			}
			out = append(out, e)
		}
		if n == 0 {
			return out
		}
	}
}

// deny reads a denylist entry and its TTL (from the Nats-TTL header).
func (f *fixture) deny(key string) (events.DenyRecord, time.Duration, bool) {
	f.t.Helper()
	kv, err := f.env.JS.KeyValue(f.ctx(), events.BucketDenylist)
	if err != nil {
		f.t.Fatal(err)
	}
	e, err := kv.Get(f.ctx(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.DenyRecord{}, 0, false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var rec events.DenyRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		f.t.Fatal(err)
	}
	s, err := f.env.JS.Stream(f.ctx(), "KV_"+events.BucketDenylist)
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(f.ctx(), "$KV."+events.BucketDenylist+"."+key)
	if err != nil {
		f.t.Fatal(err)
	}
	ttl, err := time.ParseDuration(raw.Header.Get(jetstream.MsgTTLHeader))
	if err != nil {
		f.t.Fatalf("entry %s has no TTL: %v", key, err)
	}
	return rec, ttl, true
}

// denyKeys lists the denylist keys.
func (f *fixture) denyKeys() []string {
	f.t.Helper()
	kv, err := f.env.JS.KeyValue(f.ctx(), events.BucketDenylist)
	if err != nil {
		f.t.Fatal(err)
	}
	keys, err := kv.Keys(f.ctx())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// checkTTL asserts that a TTL is the remaining life until exp, give or
// take the test's running time.
func checkTTL(t *testing.T, what string, got time.Duration, exp time.Time) {
	t.Helper()
	want := time.Until(exp)
	if got < want-5*time.Second || got > want+5*time.Second {
		t.Fatalf("%s: TTL %v, want about %v", what, got, want.Round(time.Second))
	}
}

// receiver is a local webhook receiver that fails its first `fail`
// requests with 503.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	attempts int
	fail     int
}

func newReceiver(t *testing.T, fail int) *receiver {
	r := &receiver{fail: fail}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.attempts++
		if r.attempts <= r.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.bodies = append(r.bodies, b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() ([][]byte, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), r.attempts
}

// deadLetters reads the revoker's dead letters.
func deadLetters(t *testing.T, js jetstream.JetStream) []*nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamDead, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DeadLetterSubject(revoker.DeadLetterName)}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(150*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for m := range batch.Messages() {
		out = append(out, &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	}
	return out
}
