package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// SchemaVersion is the envelope schema version this build writes and reads.
const SchemaVersion = 1

// Type names the kind of payload an envelope carries.
type Type string

// The closed set of event types.
const (
	TypeTokenIssued     Type = "token.issued"
	TypeTokenRotated    Type = "token.rotated"
	TypeTokenRevoked    Type = "token.revoked"
	TypeTokenExpired    Type = "token.expired"
	TypeKeyPublished    Type = "key.published"
	TypeKeyRetired      Type = "key.retired"
	TypeUsageDecided    Type = "usage.decided"
	TypeAnomalyDetected Type = "anomaly.detected"
	TypePolicyChanged   Type = "policy.changed"
	TypeTokenRestricted Type = "token.restricted"
	TypeTokenReleased   Type = "token.released"
)

// Sentinel errors callers may branch on; decode errors wrap one of them.
var (
	ErrMalformed     = errors.New("malformed event")
	ErrUnknownType   = errors.New("unknown event type")
	ErrVersion       = errors.New("unsupported schema version")
	ErrMissingField  = errors.New("missing field")
	ErrInvalidField  = errors.New("invalid field")
	ErrTypeMismatch  = errors.New("payload type mismatch")
	errTrailingBytes = errors.New("trailing data after event")
)

// Payload is implemented by every typed event payload.
type Payload interface {
	// EventType is the envelope type this payload travels under.
	EventType() Type
	// Validate reports the first missing or invalid field.
	Validate() error
}

// Envelope is the wrapper every event travels in.
type Envelope struct {
	// ID is a UUIDv7: unique, time ordered, and the JetStream message id
	// used to de-duplicate retried publishes.
	ID uuid.UUID `json:"id"`
	// Type names the payload.
	Type Type `json:"type"`
	// Time is the event time (when it happened, not when it arrived).
	Time time.Time `json:"time"`
	// Source names the emitting service instance, e.g. "issuer/host-1".
	Source string `json:"source"`
	// Version is the schema version, SchemaVersion when written by this build.
	Version int `json:"v"`
	// Data is the typed payload.
	Data Payload `json:"data"`
}

// New wraps a payload in a fresh envelope with a UUIDv7 id. A zero at uses
// the current time.
func New(source string, at time.Time, p Payload) (Envelope, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Envelope{}, fmt.Errorf("new event id: %w", err)
	}
	if at.IsZero() {
		at = time.Now()
	}
	return Envelope{ID: id, Type: p.EventType(), Time: at.UTC(), Source: source, Version: SchemaVersion, Data: p}, nil
}

// MsgID is the JetStream de-duplication id of the event.
func (e Envelope) MsgID() string { return e.ID.String() }

// Validate checks the envelope and its payload.
func (e Envelope) Validate() error {
	switch {
	case e.ID == uuid.Nil:
		return fmt.Errorf("%w: id", ErrMissingField)
	case e.ID.Version() != 7:
		return fmt.Errorf("%w: id: want a UUIDv7, got version %d", ErrInvalidField, e.ID.Version())
	case e.Type == "":
		return fmt.Errorf("%w: type", ErrMissingField)
	case e.Time.IsZero():
		return fmt.Errorf("%w: time", ErrMissingField)
	case e.Source == "":
		return fmt.Errorf("%w: source", ErrMissingField)
	case e.Version != SchemaVersion:
		return fmt.Errorf("%w: v=%d, this build speaks v=%d", ErrVersion, e.Version, SchemaVersion)
	case e.Data == nil:
		return fmt.Errorf("%w: data", ErrMissingField)
	case e.Data.EventType() != e.Type:
		return fmt.Errorf("%w: envelope says %q, payload is %q", ErrTypeMismatch, e.Type, e.Data.EventType())
	}
	if err := e.Data.Validate(); err != nil {
		return fmt.Errorf("%s: %w", e.Type, err)
	}
	return nil
}

// Encode validates the envelope and returns its JSON form.
func Encode(e Envelope) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// rawEnvelope is the wire form read before the payload type is known.
type rawEnvelope struct {
	ID      *uuid.UUID      `json:"id"`
	Type    *Type           `json:"type"`
	Time    *time.Time      `json:"time"`
	Source  *string         `json:"source"`
	Version *int            `json:"v"`
	Data    json.RawMessage `json:"data"`
}

// Decode parses and validates one event. It rejects unknown types, unknown
// fields (in the envelope and the payload), missing fields and schema
// versions other than SchemaVersion, naming the offending field.
func Decode(b []byte) (Envelope, error) {
	var raw rawEnvelope
	if err := strictUnmarshal(b, &raw); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case raw.Version == nil:
		return Envelope{}, fmt.Errorf("%w: v", ErrMissingField)
	case *raw.Version != SchemaVersion:
		return Envelope{}, fmt.Errorf("%w: v=%d, this build speaks v=%d", ErrVersion, *raw.Version, SchemaVersion)
	case raw.Type == nil:
		return Envelope{}, fmt.Errorf("%w: type", ErrMissingField)
	case raw.ID == nil:
		return Envelope{}, fmt.Errorf("%w: id", ErrMissingField)
	case raw.Time == nil:
		return Envelope{}, fmt.Errorf("%w: time", ErrMissingField)
	case raw.Source == nil:
		return Envelope{}, fmt.Errorf("%w: source", ErrMissingField)
	case len(raw.Data) == 0 || bytes.Equal(raw.Data, []byte("null")):
		return Envelope{}, fmt.Errorf("%w: data", ErrMissingField)
	}
	p, err := newPayload(*raw.Type)
	if err != nil {
		return Envelope{}, err
	}
	if err := strictUnmarshal(raw.Data, p); err != nil {
		return Envelope{}, fmt.Errorf("%w: %s data: %v", ErrMalformed, *raw.Type, err)
	}
	e := Envelope{ID: *raw.ID, Type: *raw.Type, Time: *raw.Time, Source: *raw.Source, Version: *raw.Version, Data: p}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// DecodeAs decodes an event and asserts its payload type.
func DecodeAs[P Payload](b []byte) (Envelope, P, error) {
	var zero P
	e, err := Decode(b)
	if err != nil {
		return Envelope{}, zero, err
	}
	p, ok := e.Data.(P)
	if !ok {
		return Envelope{}, zero, fmt.Errorf("%w: got %q, want %q", ErrTypeMismatch, e.Type, zero.EventType())
	}
	return e, p, nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailingBytes
	}
	return nil
}

func newPayload(t Type) (Payload, error) {
	switch t {
	case TypeTokenIssued:
		return &TokenIssued{}, nil
	case TypeTokenRotated:
		return &TokenRotated{}, nil
	case TypeTokenRevoked:
		return &TokenRevoked{}, nil
	case TypeTokenExpired:
		return &TokenExpired{}, nil
	case TypeKeyPublished:
		return &KeyPublished{}, nil
	case TypeKeyRetired:
		return &KeyRetired{}, nil
	case TypeUsageDecided:
		return &UsageDecided{}, nil
	case TypeAnomalyDetected:
		return &AnomalyDetected{}, nil
	case TypePolicyChanged:
		return &PolicyChanged{}, nil
	case TypeTokenRestricted:
		return &TokenRestricted{}, nil
	case TypeTokenReleased:
		return &TokenReleased{}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownType, t)
}

// DerivedID is a UUIDv7 whose timestamp is at and whose other bits are a
// hash of key: the same key and time always give the same id, so a
// re-derived event (an anomaly raised again after a restart, a report sent
// again) is de-duplicated by JetStream and ClickHouse.
func DerivedID(at time.Time, key string) uuid.UUID {
	h := sha256.Sum256([]byte(key))
	var u uuid.UUID
	copy(u[:], h[:16])
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(at.UnixMilli()))
	copy(u[0:6], ts[2:8])
	u[6] = (u[6] & 0x0f) | 0x70 // version 7
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return u
}
