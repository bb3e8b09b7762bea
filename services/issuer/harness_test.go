package issuer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
)

const defaultPolicy = "../../testdata/policy/default.yaml"

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness runs an issuer on a real in-process JetStream.
type harness struct {
	t      *testing.T
	env    *natstest.Env
	clk    *clock
	pol    *policy.Policy
	dir    string
	logs   *natstest.LogBuffer
	iss    *Issuer
	url    string
	admin  string
	grace  time.Duration
	secret []string // every token string minted: must never reach logs or events
	// tls, when set, makes the API serve HTTPS; client then talks to it.
	tls    *tls.Config
	client *http.Client
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t}
	h.init()
	h.start()
	return h
}

// init sets up what start needs: NATS, a clock, the policy, a data
// directory and the log buffer.
func (h *harness) init() {
	h.t.Helper()
	pol, err := policy.Load(defaultPolicy)
	if err != nil {
		h.t.Fatal(err)
	}
	h.env = natstest.Run(h.t)
	h.clk = &clock{t: time.Now().UTC().Truncate(time.Second)}
	h.pol = pol
	h.dir = h.t.TempDir()
	h.logs = &natstest.LogBuffer{}
}

// start starts an issuer on the harness's NATS and data directory.
func (h *harness) start() {
	h.t.Helper()
	iss, err := New(Options{
		NC: h.env.NC, JS: h.env.JS, DataDir: h.dir, Policy: h.pol,
		Logger: zerolog.New(h.logs), Source: "issuer/test", Now: h.clk.Now,
		Grace: h.grace, Listen: "127.0.0.1:0", TickInterval: 10 * time.Millisecond, TLS: h.tls,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := iss.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { iss.Close() })
	h.iss = iss
	h.url = "http://" + iss.Addr()
	if h.tls != nil {
		h.url = "https://" + iss.Addr()
	}
	b, err := os.ReadFile(iss.AdminTokenPath())
	if err != nil {
		h.t.Fatal(err)
	}
	h.admin = strings.TrimSpace(string(b))
	h.remember(h.admin)
}

func (h *harness) restart() {
	h.t.Helper()
	h.iss.Close()
	h.start()
}

// waitTicks waits until the issuer has completed n more expiry ticks, so
// that a test can assert that a tick did nothing.
func (h *harness) waitTicks(n uint64) {
	h.t.Helper()
	target := h.iss.ticks.Load() + n
	natstest.WaitFor(h.t, 5*time.Second, func() error {
		if got := h.iss.ticks.Load(); got < target {
			return fmt.Errorf("%d ticks, waiting for %d", got, target)
		}
		return nil
	})
}

func (h *harness) remember(tok string) { h.secret = append(h.secret, tok) }

// do sends an API request and returns the status and body.
func (h *harness) do(method, path, tok string, body any) (int, []byte) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	client := http.DefaultClient
	if h.client != nil {
		client = h.client
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// call sends a request expecting status want and decodes the reply.
func call[T any](h *harness, method, path, tok string, body any, want int) T {
	h.t.Helper()
	status, out := h.do(method, path, tok, body)
	if status != want {
		h.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, out)
	}
	var v T
	if err := json.Unmarshal(out, &v); err != nil {
		h.t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
	}
	return v
}

func (h *harness) issue(req IssueRequest) IssueResponse {
	h.t.Helper()
	res := call[IssueResponse](h, "POST", "/v1/tokens", h.admin, req, http.StatusCreated)
	h.remember(res.Token)
	return res
}

// ledgerMsg is one message of the TOKENS stream.
type ledgerMsg struct {
	seq     uint64
	subject string
	msgID   string
	raw     []byte
	env     events.Envelope
}

func (h *harness) ledger() []ledgerMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.env.JS.Stream(ctx, events.StreamTokens)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []ledgerMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatalf("get ledger message %d: %v", seq, err)
		}
		lm := ledgerMsg{seq: seq, subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), raw: m.Data}
		if env, err := events.Decode(m.Data); err == nil {
			lm.env = env
		}
		out = append(out, lm)
	}
	return out
}

// events returns the ledger payloads of type P about token id ("" for all).
func ledgerOf[P events.Payload](h *harness, id string) []P {
	h.t.Helper()
	var out []P
	for _, m := range h.ledger() {
		p, ok := m.env.Data.(P)
		if !ok {
			continue
		}
		if id == "" || tokenIDOf(p) == id {
			out = append(out, p)
		}
	}
	return out
}

func tokenIDOf(p events.Payload) string {
	switch p := p.(type) {
	case *events.TokenIssued:
		return p.TokenID
	case *events.TokenRotated:
		return p.TokenID
	case *events.TokenRevoked:
		return p.TokenID
	case *events.TokenExpired:
		return p.TokenID
	case *events.KeyPublished:
		return p.KeyID
	case *events.KeyRetired:
		return p.KeyID
	}
	return ""
}

// enforcerKeyring builds a keyring from the keys bucket, as an enforcer
// given the issuer's trust anchor file does.
func (h *harness) enforcerKeyring() *token.Keyring {
	h.t.Helper()
	anchor, err := token.LoadAnchorKey(filepath.Join(h.dir, TrustAnchorFile))
	if err != nil {
		h.t.Fatal(err)
	}
	anchors := token.Anchors{anchor}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := h.env.JS.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		h.t.Fatal(err)
	}
	ring := token.NewKeyring()
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			h.t.Fatal(err)
		}
		pub, err := anchors.VerifyKeyRecord(k, e.Value())
		if err != nil {
			continue // an enforcer ignores it too
		}
		if err := ring.Add(k, pub); err != nil {
			h.t.Fatal(err)
		}
	}
	return ring
}

// assertNoSecrets fails if a token string or a private key appears in the
// logs or on the ledger.
func (h *harness) assertNoSecrets() {
	h.t.Helper()
	logs := h.logs.String()
	var ledger strings.Builder
	for _, m := range h.ledger() {
		ledger.Write(m.raw)
	}
	var secrets []string
	for _, tok := range h.secret {
		// the signature part alone is secret enough to look for
		secrets = append(secrets, tok, tok[strings.LastIndexByte(tok, '.')+1:])
	}
	keyFiles, _ := filepath.Glob(filepath.Join(h.dir, "keys", "*.pem"))
	for _, f := range keyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			h.t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		secrets = append(secrets, lines[len(lines)-2]) // the base64 key material
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			h.t.Errorf("a secret (%.12s…) appears in the logs", s)
		}
		if strings.Contains(ledger.String(), s) {
			h.t.Errorf("a secret (%.12s…) appears on the ledger", s)
		}
	}
}

func errorBody(t *testing.T, b []byte) ErrorBody {
	t.Helper()
	var e ErrorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %s: %v", b, err)
	}
	return e
}

func ids(list []TokenInfo) string {
	var s []string
	for _, t := range list {
		s = append(s, fmt.Sprintf("%s(%s)", t.ID, t.Status))
	}
	return strings.Join(s, " ")
}
