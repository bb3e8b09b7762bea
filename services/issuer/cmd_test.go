package issuer

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// request sends a raw command and decodes the reply.
func (h *harness) request(subject string, body []byte) CmdReply {
	h.t.Helper()
	m, err := h.env.NC.Request(subject, body, 5*time.Second)
	if err != nil {
		h.t.Fatalf("request %s: %v", subject, err)
	}
	var r CmdReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		h.t.Fatalf("reply %s: %v", m.Data, err)
	}
	if r.Issued != nil {
		h.remember(r.Issued.Token)
	}
	if r.Rotated != nil {
		h.remember(r.Rotated.Token)
	}
	return r
}

func (h *harness) command(subject string, req CmdRequest) CmdReply {
	h.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.request(subject, b)
}

func TestNATSIssueIsIdempotent(t *testing.T) {
	h := newHarness(t)
	issue := &IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"}
	first := h.command(events.SubjectCmdIssue, CmdRequest{Auth: h.admin, IdempotencyKey: "deploy-42", Issue: issue})
	if !first.OK || first.Outcome != OutcomeIssued || first.Replayed || first.Issued == nil || first.Issued.Token == "" {
		t.Fatalf("first issue = %+v", first)
	}
	if _, err := h.enforcerKeyring().Verify(first.Issued.Token); err != nil {
		t.Fatal(err)
	}
	again := h.command(events.SubjectCmdIssue, CmdRequest{Auth: h.admin, IdempotencyKey: "deploy-42", Issue: issue})
	if !again.OK || !again.Replayed || again.Issued.ID != first.Issued.ID || again.Issued.Token != first.Issued.Token {
		t.Fatalf("replay = %+v, want the original token %s", again, first.Issued.ID)
	}
	issued := func() int {
		n := 0
		for _, p := range ledgerOf[*events.TokenIssued](h, "") {
			if p.Tenant == "acme" {
				n++
			}
		}
		return n
	}
	if n := issued(); n != 1 {
		t.Fatalf("%d tokens minted for one idempotency key", n)
	}

	// concurrent replays of a new key mint once
	var wg sync.WaitGroup
	got := make([]string, 6)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(CmdRequest{Auth: h.admin, IdempotencyKey: "burst", Issue: issue})
			m, err := h.env.NC.Request(events.SubjectCmdIssue, b, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			var r CmdReply
			if err := json.Unmarshal(m.Data, &r); err != nil || !r.OK {
				t.Errorf("burst reply %s: %v", m.Data, err)
				return
			}
			got[i] = r.Issued.ID
		}()
	}
	wg.Wait()
	for _, id := range got {
		if id != got[0] {
			t.Fatalf("concurrent replays got different tokens: %v", got)
		}
	}
	if n := issued(); n != 2 {
		t.Fatalf("%d tokens minted, want 2", n)
	}

	other := *issue
	other.TTL = "2h"
	tests := []struct {
		name string
		body []byte
		code string
		want string
	}{
		{"key reused for another request", mustJSON(CmdRequest{Auth: h.admin, IdempotencyKey: "deploy-42", Issue: &other}), "conflict", "different request"},
		{"no key", mustJSON(CmdRequest{Auth: h.admin, Issue: issue}), "bad_request", "idempotency_key is required"},
		{"no request", mustJSON(CmdRequest{Auth: h.admin, IdempotencyKey: "k"}), "bad_request", "issue: the request to issue is required"},
		{"no auth", mustJSON(CmdRequest{IdempotencyKey: "k", Issue: issue}), "unauthenticated", "no admin token"},
		{"bad auth", mustJSON(CmdRequest{Auth: "cordon_nope", IdempotencyKey: "k", Issue: issue}), "unauthenticated", "admin token rejected"},
		{"malformed", []byte(`{"auth": `), "bad_request", "malformed JSON"},
		{"not json", []byte("\x00\xff"), "bad_request", "malformed JSON"},
		{"unknown field", []byte(`{"auth":"x","idempotency":"k"}`), "bad_request", `unknown field "idempotency"`},
		{"exceeds", mustJSON(CmdRequest{Auth: h.admin, IdempotencyKey: "k2", Issue: &IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:delete"}}}),
			"exceeds_ceiling", `scope "invoices:delete" is not in the ceiling of acme/billing-api`},
		{"bad cidr", mustJSON(CmdRequest{Auth: h.admin, IdempotencyKey: "k3", Issue: &IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, Networks: []string{"10.0.0.0/33"}}}),
			"bad_request", `networks[0]: "10.0.0.0/33" is not a CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.request(events.SubjectCmdIssue, tt.body)
			if r.OK || r.Outcome != OutcomeRejected || r.Code != tt.code || !strings.Contains(r.Error, tt.want) {
				t.Fatalf("reply = %+v, want code %s and …%s…", r, tt.code, tt.want)
			}
		})
	}
	// a failed request is not remembered: its key may be retried
	fixed := h.command(events.SubjectCmdIssue, CmdRequest{Auth: h.admin, IdempotencyKey: "k2", Issue: issue})
	if !fixed.OK || fixed.Replayed {
		t.Fatalf("retry after a rejection = %+v", fixed)
	}
	if n := issued(); n != 3 {
		t.Fatalf("%d tokens minted, want 3", n)
	}
	h.assertNoSecrets()
}

func TestNATSRotateListInspect(t *testing.T) {
	h := newHarness(t)
	tok := h.command(events.SubjectCmdIssue, CmdRequest{Auth: h.admin, IdempotencyKey: "a",
		Issue: &IssueRequest{Tenant: "globex", Holder: "partner-gateway", Scopes: []string{"orders:read"}, TTL: "1d"}}).Issued
	if tok == nil {
		t.Fatal("issue failed")
	}
	rotate := CmdRequest{Auth: h.admin, IdempotencyKey: "rot-1", Rotate: &RotateRequest{TokenID: tok.ID, Grace: "1m"}}
	r1 := h.command(events.SubjectCmdRotate, rotate)
	if !r1.OK || r1.Outcome != OutcomeRotated || r1.Rotated.Predecessor.SuccessorID != r1.Rotated.Successor.ID {
		t.Fatalf("rotate = %+v", r1)
	}
	r2 := h.command(events.SubjectCmdRotate, rotate)
	if !r2.OK || !r2.Replayed || r2.Rotated.Successor.ID != r1.Rotated.Successor.ID {
		t.Fatalf("replayed rotate = %+v", r2)
	}
	if r := h.command(events.SubjectCmdRotate, CmdRequest{Auth: h.admin, IdempotencyKey: "rot-2", Rotate: &RotateRequest{TokenID: tok.ID}}); r.OK || r.Code != "conflict" {
		t.Fatalf("rotate a rotated token = %+v", r)
	}
	if r := h.command(events.SubjectCmdRotate, CmdRequest{Auth: h.admin, IdempotencyKey: "rot-3"}); r.OK || r.Code != "bad_request" {
		t.Fatalf("rotate without token id = %+v", r)
	}

	list := h.command(events.SubjectCmdList, CmdRequest{Auth: h.admin, List: &ListFilter{Tenant: "globex"}})
	if !list.OK || list.Outcome != OutcomeListed || len(list.Tokens) != 2 || list.Tokens[0].ID != tok.ID || list.Tokens[0].Status != StatusRotated {
		t.Fatalf("list = %+v", list)
	}
	insp := h.command(events.SubjectCmdInspect, CmdRequest{Auth: h.admin, TokenID: tok.ID})
	if !insp.OK || insp.Token == nil || len(insp.Token.History) != 2 || insp.Token.History[1].Type != events.TypeTokenRotated {
		t.Fatalf("inspect = %+v", insp)
	}
	if r := h.command(events.SubjectCmdInspect, CmdRequest{Auth: h.admin, TokenID: "nope"}); r.OK || r.Code != "not_found" {
		t.Fatalf("inspect unknown = %+v", r)
	}
	// a read-only token may list but not rotate
	reader := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1h"})
	if r := h.command(events.SubjectCmdList, CmdRequest{Auth: reader.Token}); !r.OK {
		t.Fatalf("reader list = %+v", r)
	}
	if r := h.command(events.SubjectCmdRotate, CmdRequest{Auth: reader.Token, IdempotencyKey: "x", Rotate: &RotateRequest{TokenID: r1.Rotated.Successor.ID}}); r.OK || r.Code != "forbidden" {
		t.Fatalf("reader rotate = %+v", r)
	}
	// a published command without a reply subject is ignored, not fatal
	if err := h.env.NC.Publish(events.SubjectCmdIssue, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	if r := h.command(events.SubjectCmdList, CmdRequest{Auth: h.admin}); !r.OK || len(r.Tokens) != 4 {
		t.Fatalf("list after junk = %+v", r)
	}
	h.assertNoSecrets()
}

func TestHTTPIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	post := func(key string, body IssueRequest) (int, IssueResponse) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", h.url+"/v1/tokens", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+h.admin)
		req.Header.Set(HeaderIdempotencyKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r IssueResponse
		_ = json.NewDecoder(resp.Body).Decode(&r)
		h.remember(r.Token)
		return resp.StatusCode, r
	}
	body := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}}
	s1, r1 := post("abc", body)
	s2, r2 := post("abc", body)
	if s1 != 201 || s2 != 201 || r1.ID == "" || r1.ID != r2.ID {
		t.Fatalf("replay over HTTP: %d %s, %d %s", s1, r1.ID, s2, r2.ID)
	}
	body.TTL = "1h"
	if s, _ := post("abc", body); s != 409 {
		t.Fatalf("key reused with another body: %d", s)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
