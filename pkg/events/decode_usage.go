package events

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// DecodeUsage decodes a usage.decided event exactly as
// DecodeAs[*UsageDecided] does, several times faster.
//
// Why: the strict encoding/json decode costs 10–20 µs an event, which alone
// would cap the auditor near 60,000 events/s per core. Enforcers write
// events with Encode, so nearly every message has one simple shape:
// one flat object of known keys with plain ASCII strings and integers. The
// fast path parses that shape only; whenever it meets anything else —
// an escape, a non-ASCII byte, an unknown or repeated key, null, a float,
// trailing data — it hands the message to DecodeAs, so what is
// accepted, what is rejected and every error message stay those of
// DecodeAs (a differential fuzz test holds them equal). A message the
// fast path accepts is validated with the same Envelope.Validate.
func DecodeUsage(b []byte) (Envelope, *UsageDecided, error) {
	if e, u, ok := fastUsage(b); ok {
		if err := e.Validate(); err != nil {
			return Envelope{}, nil, err
		}
		return e, u, nil
	}
	return DecodeAs[*UsageDecided](b)
}

// scanner walks a JSON text for the fast path. Any surprise sets bad.
// Decoded strings are slices of text, one copy of the whole input, so an
// event costs one string allocation rather than one per field.
type scanner struct {
	b    []byte
	text string // string(b)
	i    int
	bad  bool
}

// strText reads a string (see str) as a slice of s.text.
func (s *scanner) strText() string {
	_, raw := s.str()
	if s.bad {
		return ""
	}
	start := len(s.b[:s.i]) - len(raw) - 1
	return s.text[start : start+len(raw)]
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// expect consumes c after optional white space.
func (s *scanner) expect(c byte) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != c {
		s.bad = true
		return
	}
	s.i++
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// str reads a string of printable ASCII without escapes and returns it
// with its quotes (for time.Time.UnmarshalJSON) and without.
func (s *scanner) str() (quoted, raw []byte) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		s.bad = true
		return nil, nil
	}
	start := s.i
	for j := s.i + 1; j < len(s.b); j++ {
		c := s.b[j]
		switch {
		case c == '"':
			s.i = j + 1
			return s.b[start : j+1], s.b[start+1 : j]
		case c == '\\' || c < 0x20 || c >= 0x80:
			s.bad = true
			return nil, nil
		}
	}
	s.bad = true
	return nil, nil
}

// int reads an integer in JSON's grammar without fraction or exponent.
func (s *scanner) int() int64 {
	s.ws()
	start := s.i
	j := s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	digits := j
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		j++
	}
	n := j - digits
	if n == 0 || n > 18 || (n > 1 && s.b[digits] == '0') {
		s.bad = true
		return 0
	}
	if j < len(s.b) {
		switch s.b[j] {
		case '.', 'e', 'E':
			s.bad = true
			return 0
		}
	}
	v, err := strconv.ParseInt(string(s.b[start:j]), 10, 64)
	if err != nil {
		s.bad = true
		return 0
	}
	s.i = j
	return v
}

// Keys of the envelope, as bits for duplicate detection.
const (
	keyID = 1 << iota
	keyType
	keyTime
	keySource
	keyVersion
	keyData
	allEnvelopeKeys = keyID | keyType | keyTime | keySource | keyVersion | keyData
)

// fastUsage parses the common shape of a usage event; ok is false when the
// input must go through DecodeAs instead.
func fastUsage(b []byte) (e Envelope, u *UsageDecided, ok bool) {
	s := &scanner{b: b, text: string(b)}
	s.expect('{')
	seen := 0
	u = &UsageDecided{}
	for !s.bad {
		_, key := s.str()
		s.expect(':')
		if s.bad {
			return e, nil, false
		}
		var bit int
		switch string(key) {
		case "id":
			bit = keyID
			_, raw := s.str()
			if s.bad || e.ID.UnmarshalText(raw) != nil {
				return e, nil, false
			}
		case "type":
			bit = keyType
			_, raw := s.str()
			if string(raw) != string(TypeUsageDecided) {
				return e, nil, false
			}
			e.Type = TypeUsageDecided
		case "time":
			bit = keyTime
			quoted, _ := s.str()
			if s.bad || e.Time.UnmarshalJSON(quoted) != nil {
				return e, nil, false
			}
		case "source":
			bit = keySource
			e.Source = s.strText()
		case "v":
			// Another version goes the slow way: Decode reports it
			// before anything else.
			bit = keyVersion
			if e.Version = int(s.int()); e.Version != SchemaVersion {
				return e, nil, false
			}
		case "data":
			bit = keyData
			if seen&keyType == 0 || !s.usage(u) {
				return e, nil, false
			}
		default:
			return e, nil, false
		}
		if s.bad || seen&bit != 0 {
			return e, nil, false
		}
		seen |= bit
		if s.peek() == ',' {
			s.i++
			continue
		}
		s.expect('}')
		break
	}
	if s.bad || seen != allEnvelopeKeys {
		return e, nil, false
	}
	s.ws()
	if s.i != len(b) {
		return e, nil, false
	}
	e.Data = u
	return e, u, true
}

// usage parses the data object of a usage event into u.
func (s *scanner) usage(u *UsageDecided) bool {
	s.expect('{')
	if s.peek() == '}' {
		s.i++
		return !s.bad
	}
	var seen uint32
	for !s.bad {
		_, key := s.str()
		s.expect(':')
		if s.bad {
			return false
		}
		var bit uint32
		var dst *string
		switch string(key) {
		case "token_id":
			bit, dst = 1<<0, &u.TokenID
		case "tenant":
			bit, dst = 1<<1, &u.Tenant
		case "holder":
			bit, dst = 1<<2, &u.Holder
		case "kid":
			bit, dst = 1<<3, &u.KeyID
		case "enforcer":
			bit, dst = 1<<4, &u.Enforcer
		case "service":
			bit, dst = 1<<5, &u.Service
		case "source_ip":
			bit, dst = 1<<6, &u.SourceIP
		case "user_agent":
			bit, dst = 1<<7, &u.UserAgent
		case "method":
			bit, dst = 1<<8, &u.Method
		case "route":
			bit, dst = 1<<9, &u.Route
		case "scope":
			bit, dst = 1<<10, &u.Scope
		case "decision":
			bit, dst = 1<<11, &u.Decision
		case "reason":
			bit, dst = 1<<12, &u.Reason
		case "latency_ns":
			bit = 1 << 13
			u.LatencyNS = s.int()
		case "count":
			bit = 1 << 14
			u.Count = s.int()
		case "resource":
			bit, dst = 1<<15, &u.Resource
		case "client":
			bit, dst = 1<<16, &u.Client
		case "device":
			bit, dst = 1<<17, &u.Device
		default:
			return false
		}
		if dst != nil {
			*dst = s.strText()
		}
		if s.bad || seen&bit != 0 {
			return false
		}
		seen |= bit
		if s.peek() == ',' {
			s.i++
			continue
		}
		s.expect('}')
		return !s.bad
	}
	return false
}

// Compile-time checks that the types parsed above keep their text forms.
var (
	_ interface{ UnmarshalText([]byte) error } = (*uuid.UUID)(nil)
	_ interface{ UnmarshalJSON([]byte) error } = (*time.Time)(nil)
)
