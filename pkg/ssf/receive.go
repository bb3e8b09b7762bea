package ssf

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// maxSET bounds a pushed SET.
const maxSET = 64 << 10

// Receiver is an RFC 8935 push endpoint: it verifies each SET and hands
// it to Handle. A SET that fails verification or that Handle refuses is
// answered 400 with an error code and changes nothing.
type Receiver struct {
	// Verify are the verification options (keys, issuer, audience).
	Verify VerifyOptions
	// Authorization, when set, must equal the request's Authorization
	// header (compared in constant time).
	Authorization string
	// Handle acts on a verified SET. An error wrapping ErrInvalid is the
	// sender's (400 invalid_request); any other is ours (500: the sender
	// retries).
	Handle func(SET) error
}

// ServeHTTP implements http.Handler.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a SET", http.StatusMethodNotAllowed)
		return
	}
	if rc.Authorization != "" && !constantEqual(r.Header.Get("Authorization"), rc.Authorization) {
		writePushError(w, http.StatusUnauthorized, ErrCodeAuthFailed, "missing or wrong Authorization")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, MediaType) {
		writePushError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "Content-Type must be "+MediaType)
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxSET+1))
	if err != nil || len(b) > maxSET {
		writePushError(w, http.StatusBadRequest, ErrCodeInvalidRequest, "unreadable or larger than 64 KiB")
		return
	}
	set, err := Verify(strings.TrimSpace(string(b)), rc.Verify)
	if err != nil {
		code := ErrCodeInvalidRequest
		switch {
		case errors.Is(err, ErrKey):
			code = ErrCodeInvalidKey
		case errors.Is(err, ErrClaims) && strings.Contains(err.Error(), "issuer"):
			code = ErrCodeInvalidIssuer
		case errors.Is(err, ErrClaims) && strings.Contains(err.Error(), "audience"):
			code = ErrCodeInvalidAud
		}
		writePushError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if err := rc.Handle(set); err != nil {
		if errors.Is(err, ErrInvalid) {
			writePushError(w, http.StatusBadRequest, ErrCodeInvalidRequest, err.Error())
			return
		}
		http.Error(w, "could not act on the event; send it again", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func writePushError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(PushError{Err: code, Description: desc})
}

func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
