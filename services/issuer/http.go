package issuer

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// HeaderIdempotencyKey makes a POST replay-safe: the same key presented
// with the same admin token returns the original result. Keys are scoped to
// the calling token: another token, even of the same holder, never gets
// that result (it holds a minted token).
const HeaderIdempotencyKey = "Idempotency-Key"

// routes builds the HTTP API:
//
//	POST /v1/tokens                issue            (cordon:issue)
//	GET  /v1/tokens                list             (cordon:read)  ?tenant=&holder=&status=
//	GET  /v1/tokens/{id}           inspect          (cordon:read)
//	POST /v1/tokens/{id}/rotate    rotate a token   (cordon:rotate)
//	GET  /v1/keys                  list keys        (cordon:read)
//	POST /v1/keys/rotate           new signing key  (cordon:keys)
//	POST /v1/keys/{kid}/retire     retire a key     (cordon:keys)
//	POST /v1/leaks/github          leak reports     (GitHub's signature; leak.go)
//	POST /v1/leaks                 leak reports     (no auth, rate-limited)
//	GET  /healthz                  readiness        (no auth)
//
// Issue and rotate record where the request came from (the socket peer
// and the normalised user agent) in the token.issued event's Requested.
// Metrics are not served here: `cordon issuer --metrics-listen` serves
// Collector on a listener of its own. Errors are JSON ErrorBody values with
// 400, 401, 403, 404, 409, 422, 503 or 500.
func (i *Issuer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", i.handleIssue)
	mux.HandleFunc("GET /v1/tokens", i.handleList)
	mux.HandleFunc("GET /v1/tokens/{id}", i.handleInspect)
	mux.HandleFunc("POST /v1/tokens/{id}/rotate", i.handleRotate)
	mux.HandleFunc("GET /v1/keys", i.handleKeys)
	mux.HandleFunc("POST /v1/keys/rotate", i.handleKeyRotate)
	mux.HandleFunc("POST /v1/keys/{kid}/retire", i.handleKeyRetire)
	mux.HandleFunc("POST /v1/leaks/github", i.handleLeakGitHub)
	mux.HandleFunc("POST /v1/leaks", i.handleLeakPlain)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !i.ready.Load() {
			i.writeError(w, ErrNotReady)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		i.writeError(w, fmt.Errorf("%w: no route %s %s", ErrNotFound, r.Method, r.URL.Path))
	})
	return mux
}

// auth authenticates the request's bearer token for scope, with what the
// connection proves about the caller (socket address, TLS client
// certificate).
func (i *Issuer) auth(r *http.Request, scope string) (*Caller, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, fmt.Errorf("%w: no Authorization header: send \"Authorization: Bearer <admin token>\"", ErrUnauthenticated)
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, fmt.Errorf("%w: Authorization header is not \"Bearer <token>\"", ErrUnauthenticated)
	}
	return i.Authenticate(r.Context(), adminauth.Request{Token: strings.TrimSpace(tok), Scope: scope, Peer: adminauth.PeerOf(r)})
}

func (i *Issuer) handleIssue(w http.ResponseWriter, r *http.Request) {
	c, err := i.auth(r, ScopeIssue)
	if err != nil {
		i.writeError(w, err)
		return
	}
	var in IssueRequest
	if err := decodeBody(w, r, &in, false); err != nil {
		i.writeError(w, err)
		return
	}
	if err := authorizeGrant(c, in.Tenant, in.Scopes); err != nil {
		i.writeError(w, err)
		return
	}
	res, _, err := i.idempotent(c, opIssue, r.Header.Get(HeaderIdempotencyKey), in, func() (any, error) {
		return i.issueFrom(r.Context(), c.Actor(), requestedFrom(r), in)
	})
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

func (i *Issuer) handleList(w http.ResponseWriter, r *http.Request) {
	if _, err := i.auth(r, ScopeRead); err != nil {
		i.writeError(w, err)
		return
	}
	q := r.URL.Query()
	for k := range q {
		if k != "tenant" && k != "holder" && k != "status" {
			i.writeError(w, fmt.Errorf("%w: unknown query parameter %q (known: tenant, holder, status)", ErrBadRequest, k))
			return
		}
	}
	list, err := i.List(ListFilter{Tenant: q.Get("tenant"), Holder: q.Get("holder"), Status: q.Get("status")})
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenList{Tokens: list})
}

func (i *Issuer) handleInspect(w http.ResponseWriter, r *http.Request) {
	if _, err := i.auth(r, ScopeRead); err != nil {
		i.writeError(w, err)
		return
	}
	d, err := i.Inspect(r.PathValue("id"))
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (i *Issuer) handleRotate(w http.ResponseWriter, r *http.Request) {
	c, err := i.auth(r, ScopeRotate)
	if err != nil {
		i.writeError(w, err)
		return
	}
	var in RotateRequest
	if err := decodeBody(w, r, &in, true); err != nil {
		i.writeError(w, err)
		return
	}
	id := r.PathValue("id")
	if in.TokenID != "" && in.TokenID != id {
		i.writeError(w, fmt.Errorf("%w: token_id %q in the body differs from %q in the path", ErrBadRequest, in.TokenID, id))
		return
	}
	in.TokenID = id
	res, _, err := i.rotateAs(r, c, in)
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

func (i *Issuer) rotateAs(r *http.Request, c *Caller, in RotateRequest) (any, bool, error) {
	if err := i.authorizeRotate(c, in.TokenID); err != nil {
		return nil, false, err
	}
	return i.idempotent(c, opRotate, r.Header.Get(HeaderIdempotencyKey), in, func() (any, error) {
		return i.rotateFrom(r.Context(), c.Actor(), requestedFrom(r), in.TokenID, in)
	})
}

// requestedFrom is where an HTTP request for a token came from, as the
// connection shows it: the socket peer's address (forwarding headers are
// never believed, as for authentication: see adminauth.PeerOf) and the
// user agent normalised by events.NormalizeClient. Nothing of it is taken
// from the request body. Nil when neither is known.
func requestedFrom(r *http.Request) *events.IssuanceContext {
	from := &events.IssuanceContext{Client: events.NormalizeClient(r.UserAgent())}
	if a := adminauth.PeerOf(r).Addr; a.IsValid() {
		from.SourceIP = a.WithZone("").String()
	}
	if from.SourceIP == "" && from.Client == "" {
		return nil
	}
	return from
}

// authorizeRotate applies authorizeGrant to the token being rotated.
func (i *Issuer) authorizeRotate(c *Caller, id string) error {
	if t, ok := i.reg.get(id, i.now()); ok {
		return authorizeGrant(c, t.Tenant, t.Claims.Scopes)
	}
	return nil
}

func (i *Issuer) handleKeys(w http.ResponseWriter, r *http.Request) {
	if _, err := i.auth(r, ScopeRead); err != nil {
		i.writeError(w, err)
		return
	}
	keys, err := i.Keys(r.Context())
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KeyList{Keys: keys})
}

func (i *Issuer) handleKeyRotate(w http.ResponseWriter, r *http.Request) {
	c, err := i.auth(r, ScopeKeys)
	if err != nil {
		i.writeError(w, err)
		return
	}
	if err := decodeBody(w, r, &struct{}{}, true); err != nil {
		i.writeError(w, err)
		return
	}
	k, err := i.RotateKey(r.Context(), c.Actor())
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, k)
}

func (i *Issuer) handleKeyRetire(w http.ResponseWriter, r *http.Request) {
	c, err := i.auth(r, ScopeKeys)
	if err != nil {
		i.writeError(w, err)
		return
	}
	var in RetireRequest
	if err := decodeBody(w, r, &in, true); err != nil {
		i.writeError(w, err)
		return
	}
	res, err := i.RetireKey(r.Context(), c.Actor(), r.PathValue("kid"), in.Reason)
	if err != nil {
		i.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// idempotent runs fn once per (calling token, op, key); without a key it
// just runs fn. A replay of the key with a different request is a
// conflict. The calling token's id scopes the key, so that no other token
// — not even one of the same holder — can replay it and read the result.
func (i *Issuer) idempotent(c *Caller, op, key string, req any, fn func() (any, error)) (any, bool, error) {
	if key == "" {
		res, err := fn()
		return res, false, err
	}
	if len(key) > 200 {
		return nil, false, fmt.Errorf("%w: idempotency key longer than 200 characters", ErrBadRequest)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, false, err
	}
	return i.idem.do(c.TokenID+"\x00"+op+"\x00"+key, sha256.Sum256(b), fn)
}

// decodeBody decodes a JSON body strictly. An empty body is allowed when
// optional; errors name the offending field.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", ErrBadRequest, maxBody)
		}
		return fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return fmt.Errorf("%w: empty body: want a JSON object", ErrBadRequest)
	}
	return decodeStrict(body, v)
}

// decodeStrict decodes one JSON value, rejecting unknown fields and
// trailing data, with errors that name the field.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", ErrBadRequest, jsonError(err))
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	return nil
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field == "" {
			return fmt.Sprintf("want a JSON %s, got %s", te.Type, te.Value)
		}
		return fmt.Sprintf("%s: want %s, got JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of input"
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + rest
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonKind(k string) string {
	switch k {
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	return "a " + k
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (i *Issuer) writeError(w http.ResponseWriter, err error) {
	status, code := Classify(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		i.log.Error().Err(err).Msg("api request failed")
		msg = "internal error; see the issuer log"
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		// the reason names token ids, never a presented token
		i.refused.Warn().Str("code", code).Str("reason", msg).Msg("api request refused")
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cordon"`)
	}
	writeJSON(w, status, ErrorBody{Error: msg, Code: code})
}
