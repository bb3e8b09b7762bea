package leak

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Limits on a report batch.
const (
	// MaxBody bounds a report body in bytes.
	MaxBody = 8 << 20
	// MaxReports bounds the reports of one body.
	MaxReports = 10_000
	// maxField bounds a report's type, URL and source.
	maxField = 4096
)

// Report is one leaked secret as a scanner reports it.
type Report struct {
	// Token is the secret found, as found.
	Token string `json:"token"`
	// Type is the scanner's name for the secret's format.
	Type string `json:"type"`
	// URL is where it was found.
	URL string `json:"url"`
	// Source is what kind of place that is (GitHub: content, commit,
	// pull_request_description, issue_comment, npm…).
	Source string `json:"source,omitempty"`
}

// ErrReport is returned for a body that is not a report batch.
var ErrReport = errors.New("leak report")

// ParseReports decodes a batch of reports: a JSON array of objects, each
// with a non-empty token. Unknown fields are ignored (a scanner may add
// some), oversized fields and batches are refused.
func ParseReports(body []byte) ([]Report, error) {
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%w: body of %d bytes, the limit is %d", ErrReport, len(body), MaxBody)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, fmt.Errorf("%w: want a JSON array of {token, type, url, source}", ErrReport)
	}
	var rs []Report
	if err := json.Unmarshal(trimmed, &rs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReport, err)
	}
	if len(rs) > MaxReports {
		return nil, fmt.Errorf("%w: %d reports, the limit is %d per request", ErrReport, len(rs), MaxReports)
	}
	for i, r := range rs {
		switch {
		case r.Token == "":
			return nil, fmt.Errorf("%w: report %d has no token", ErrReport, i)
		case len(r.Token) > 8192:
			return nil, fmt.Errorf("%w: report %d: token longer than 8192 bytes", ErrReport, i)
		case len(r.Type) > maxField || len(r.URL) > maxField || len(r.Source) > maxField:
			return nil, fmt.Errorf("%w: report %d: a field is longer than %d bytes", ErrReport, i, maxField)
		}
	}
	return rs, nil
}

// Label is a scanner's feedback label for a reported secret.
type Label string

// Feedback labels (GitHub's partner program: optional feedback in the
// response to a report).
const (
	// TruePositive: the secret is one of ours and was valid.
	TruePositive Label = "true_positive"
	// FalsePositive: the secret is not one of ours, or was not valid.
	FalsePositive Label = "false_positive"
)

// Feedback is the verdict on one report, returned to the scanner. It
// names the secret by the type the scanner gave and by its SHA-256 (hex),
// never by the secret itself: the reply may be logged on the way back.
type Feedback struct {
	// TokenHash is the hex SHA-256 of the reported secret.
	TokenHash string `json:"token_hash"`
	// TokenType is the report's type.
	TokenType string `json:"token_type"`
	// Label is the verdict.
	Label Label `json:"label"`
}
