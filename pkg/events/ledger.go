package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// One TokenRevoked per token in the ledger, whoever publishes it (any
// revoker replica, the issuer at the end of a rotation's grace) and however
// often: every publisher of a TokenRevoked passes RevokedOnce, and reads a
// refusal with LedgerRefused and LedgerHoldsRevoked.

// RevokedMsgID is the message id of a token's TokenRevoked event,
// "revoked-<token id>": the same for every publisher and every attempt, so
// that JetStream de-duplicates a retry within the stream's window.
func RevokedMsgID(tokenID string) string { return "revoked-" + tokenID }

// RevokedFilter is the subject filter of a token's TokenRevoked events in
// any tenant: cordon.token.revoked.*.<token id>.
func RevokedFilter(tokenID string) string { return SubjectTokenPrefix + "revoked.*." + tokenID }

// RevokedOnce are the publish options of a token's TokenRevoked event: the
// deterministic message id and an expected last sequence of 0 on
// RevokedFilter, so the server stores the event only if the ledger holds no
// revocation of the token yet (whatever tenant a blind revocation named).
// Within the de-duplication window a repeat may instead be acknowledged
// with PubAck.Duplicate set: it is the same event, stored once.
func RevokedOnce(tokenID string) []jetstream.PublishOpt {
	return []jetstream.PublishOpt{
		jetstream.WithMsgID(RevokedMsgID(tokenID)),
		jetstream.WithExpectLastSequenceForSubject(0, RevokedFilter(tokenID)),
	}
}

// errCodeDuplicateConflict is JetStream's "duplicate message id is in
// process" (JSStreamDuplicateMessageConflict), which nats.go does not name.
const errCodeDuplicateConflict jetstream.ErrorCode = 10158

// LedgerRefused reports whether a TokenRevoked publish with RevokedOnce
// was refused because another revocation of the token is in the ledger or
// on its way there: a wrong last subject sequence (10071; 10164 from a
// replicated stream, which also answers it while a concurrent publish on
// the subject is being replicated) or a duplicate message id still in
// process (10158). The last two do not prove that the other publish will
// be stored: confirm with LedgerHoldsRevoked before reporting the token as
// revoked.
func LedgerRefused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant, errCodeDuplicateConflict:
		return true
	}
	return false
}

// LedgerHoldsRevoked reports whether the TOKENS stream holds a TokenRevoked
// event of the token (in any tenant).
func LedgerHoldsRevoked(ctx context.Context, js jetstream.JetStream, tokenID string) (bool, error) {
	s, err := js.Stream(ctx, StreamTokens)
	if err != nil {
		return false, fmt.Errorf("ledger: stream %s: %w", StreamTokens, err)
	}
	_, err = s.GetLastMsgForSubject(ctx, RevokedFilter(tokenID))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("ledger: revocation of %s: %w", tokenID, err)
}
