package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// Version is the policy file format version this build reads.
const Version = 1

// MaxFileSize bounds a policy file; larger input is rejected before parsing.
const MaxFileSize = 4 << 20

// Sentinel errors callers branch on.
var (
	// ErrInvalid is wrapped by every error about the policy file itself.
	ErrInvalid = errors.New("invalid policy")
	// ErrExceedsCeiling is wrapped by Check when a request asks for more
	// than the holder's ceiling allows.
	ErrExceedsCeiling = errors.New("exceeds ceiling")
	// ErrUnknownHolder is returned by Lookup for a holder the policy does
	// not declare: it may not be issued any token.
	ErrUnknownHolder = errors.New("unknown holder")
	// ErrInvalidRequest is wrapped by Check when a request is malformed
	// (as opposed to well formed but beyond the ceiling).
	ErrInvalidRequest = errors.New("invalid request")
)

// Error is an error in a policy file, located by file, line and field,
// such as holders[2].networks[0]. Every error about the policy file itself
// is an *Error whose Err is ErrInvalid, so errors.Is(err, ErrInvalid) holds.
type Error = yamlnode.Error

// Policy is a parsed and validated policy file.
type Policy struct {
	// Version is the file format version (always Version).
	Version int
	// Holders are the ceilings, in file order.
	Holders []Ceiling
	// Detectors is the detectors section as written, for the auditor to
	// decode; nil when absent.
	Detectors *yaml.Node
	// Response is the response section as written, for the revoker to
	// decode; nil when absent.
	Response *yaml.Node
	// File is the name the policy was loaded under (used in errors).
	File string
	// Digest is the lowercase hex SHA-256 of the file's bytes.
	Digest string

	index map[string]int
}

// Ceiling is the most a holder's token may allow.
type Ceiling struct {
	Tenant      string
	Holder      string
	Description string
	// Scopes are resource:action; an action of "*" covers every action.
	Scopes []string
	// Audiences are the services a token may reach; "*" covers any.
	Audiences []string
	// Networks are the allowed source networks; empty means unrestricted.
	Networks []netip.Prefix
	// Environments are the allowed environments; empty means unrestricted.
	Environments []string
	// Windows are the allowed time-of-use windows; empty means unrestricted.
	Windows []token.Window
	// MaxTTL is the longest lifetime (expiry minus not-before) of a token.
	MaxTTL time.Duration
	// RequireDevice requires every token to be bound to a device.
	RequireDevice bool
	// BreakGlass allows break-glass tokens.
	BreakGlass bool
	// Line is where the ceiling is declared in the file.
	Line int
}

// Name is "tenant/holder".
func (c *Ceiling) Name() string { return c.Tenant + "/" + c.Holder }

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// readFile reads a policy file, at most MaxFileSize+1 bytes (Parse refuses
// more).
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", path, err)
	}
	return b, nil
}

// Parse parses and validates a policy. name is used in error messages.
func Parse(name string, data []byte) (*Policy, error) {
	return parse(newDecoder(name), data)
}

// LoadDetectionOnly reads the policy file at path for the commands that use
// only its detectors: and response: sections (cordon replay, cordon eval):
// see ParseDetectionOnly.
func LoadDetectionOnly(path string) (*Policy, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseDetectionOnly(path, b)
}

// ParseDetectionOnly parses a policy for the commands that use only its
// detectors: and response: sections: a file holding just those (with or
// without version) is accepted, where Parse, which the issuer uses, wants
// version and holders. Whatever the file holds is validated as Parse
// validates it (a holders: section with a mistake is still an error), and a
// file with neither section nor holders is refused. The Policy returned may
// have no holders: it must not be given to the issuer.
func ParseDetectionOnly(name string, data []byte) (*Policy, error) {
	d := newDecoder(name)
	d.detectionOnly = true
	return parse(d, data)
}

func parse(d *decoder, data []byte) (*Policy, error) {
	name := d.File
	if len(data) > MaxFileSize {
		return nil, d.Errorf(nil, "", "file is %d bytes, at most %d", len(data), MaxFileSize)
	}
	p, err := d.policy(data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Digest = hex.EncodeToString(sum[:])
	p.File = name
	return p, nil
}

// Lookup returns the ceiling of tenant/holder, or an error wrapping
// ErrUnknownHolder.
func (p *Policy) Lookup(tenant, holder string) (*Ceiling, error) {
	if i, ok := p.index[key(tenant, holder)]; ok {
		return &p.Holders[i], nil
	}
	return nil, fmt.Errorf("%w: %s/%s is not declared in the policy %s", ErrUnknownHolder, tenant, holder, p.File)
}

// WithCeiling returns a copy of the policy with c added, unless the policy
// already declares c's tenant/holder. The issuer uses it for built-in
// holders such as cordon/admin.
func (p *Policy) WithCeiling(c Ceiling) *Policy {
	if _, ok := p.index[key(c.Tenant, c.Holder)]; ok {
		return p
	}
	q := *p
	q.Holders = append(append([]Ceiling(nil), p.Holders...), c)
	q.index = make(map[string]int, len(q.Holders))
	for i := range q.Holders {
		q.index[key(q.Holders[i].Tenant, q.Holders[i].Holder)] = i
	}
	return &q
}

func key(tenant, holder string) string { return tenant + "\x00" + holder }
