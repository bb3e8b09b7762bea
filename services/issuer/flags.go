package issuer

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

// The flags of the commands that call the API with a Client (`cordon
// token`, `cordon key`), declared next to the requests they fill. Every
// error of a Validate or a Request method here is a mistake in the flags,
// naming the flag: a command's usage error.

// DefaultAPIURL is the API a client calls when neither --api nor
// $CORDON_API is given: an issuer listening on its default address.
const DefaultAPIURL = "http://127.0.0.1:7400"

// DefaultAdminTokenFile is where a client reads the admin token from when
// neither --token-file nor $CORDON_TOKEN_FILE is given: the bootstrap
// token of an issuer run with the default data directory (.cordon).
const DefaultAdminTokenFile = ".cordon/" + AdminTokenFile

// ClientFlags are a client's flags: where the API is, the CA of an HTTPS
// API and the file that holds the admin token.
type ClientFlags struct {
	// URL is ClientConfig.URL (--api).
	URL string
	// CAFile is ClientConfig.CAFile (--api-ca).
	CAFile string
	// TokenFile holds the admin token (--token-file; see ReadAdminToken).
	TokenFile string
}

// RegisterFlags declares --api, --api-ca and --token-file, each defaulting
// to its $CORDON_… variable, else to DefaultAPIURL, none and
// DefaultAdminTokenFile.
func (f *ClientFlags) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.URL, "api", svcconfig.Getenv("CORDON_API", DefaultAPIURL), "issuer API URL ($CORDON_API)")
	fs.StringVar(&f.TokenFile, "token-file", svcconfig.Getenv("CORDON_TOKEN_FILE", DefaultAdminTokenFile), "admin token file ($CORDON_TOKEN_FILE)")
	fs.StringVar(&f.CAFile, "api-ca", os.Getenv("CORDON_API_CA"), "CA certificate of an HTTPS issuer API ($CORDON_API_CA)")
}

// Validate checks the API's URL (CheckURL).
func (f *ClientFlags) Validate() error {
	if err := CheckURL(f.URL); err != nil {
		return fmt.Errorf("--api %q is not an http(s) URL", f.URL)
	}
	return nil
}

// Explain adds to an error of a Client call what to do about it in terms
// of the flags: an API that could not be reached (ErrUnreachable) may not
// be running, or --api may name another. Other errors, and nil, are
// returned as they are.
func (f *ClientFlags) Explain(err error) error {
	if errors.Is(err, ErrUnreachable) {
		return fmt.Errorf("%w (is `cordon issuer` or `cordon up` running? set --api or $CORDON_API)", err)
	}
	return err
}

// IssueFlags are the flags of an issue request (`cordon token issue`).
type IssueFlags struct {
	// Request receives every field but NotBefore, which --not-before gives
	// as text.
	Request IssueRequest
	// NotBefore is --not-before: an RFC 3339 time, or empty for now.
	NotBefore string
	// IdempotencyKey is Client.Issue's key (--idempotency-key).
	IdempotencyKey string
}

// RegisterFlags declares a flag for each field of the request
// (--tenant, --holder, --scope, --audience, --network, --env, --window,
// --device, --ttl, --not-before, --break-glass) and --idempotency-key.
func (f *IssueFlags) RegisterFlags(fs *flag.FlagSet) {
	r := &f.Request
	fs.StringVar(&r.Tenant, "tenant", "", "tenant (required)")
	fs.StringVar(&r.Holder, "holder", "", "holder: the service or workload (required)")
	fs.Var((*listFlag)(&r.Scopes), "scope", "scopes, resource:action (repeatable or comma-separated; required)")
	fs.Var((*listFlag)(&r.Audience), "audience", "services the token may reach (default: the ceiling's)")
	fs.Var((*listFlag)(&r.Networks), "network", "source CIDRs or IPs (default: the ceiling's)")
	fs.StringVar(&r.Environment, "env", "", "environment (default: the ceiling's, if it has one)")
	fs.Var((*windowFlag)(&r.Windows), "window", "time-of-use window '[days] HH:MM-HH:MM [zone]' (repeatable; default: the ceiling's)")
	fs.StringVar(&r.Device, "device", "", "client certificate SHA-256 thumbprint (hex) to bind the token to")
	fs.StringVar(&r.TTL, "ttl", "", "lifetime such as 1h or 7d (default: the ceiling's max_ttl)")
	fs.StringVar(&f.NotBefore, "not-before", "", "RFC 3339 time the token becomes valid (default: now)")
	fs.BoolVar(&r.BreakGlass, "break-glass", false, "mint a break-glass token (if the ceiling allows it)")
	fs.StringVar(&f.IdempotencyKey, "idempotency-key", "", "replay-safe key: retrying with it returns the same token")
}

// IssueRequest checks the flags — what the API would refuse as malformed
// is refused before anything is read or sent — and returns the request
// they make.
func (f *IssueFlags) IssueRequest() (IssueRequest, error) {
	r := f.Request
	switch {
	case r.Tenant == "":
		return r, errors.New("--tenant is required")
	case r.Holder == "":
		return r, errors.New("--holder is required")
	case len(r.Scopes) == 0:
		return r, errors.New("at least one --scope is required (least privilege: name what the holder needs)")
	}
	if err := checkDuration("--ttl", r.TTL); err != nil {
		return r, err
	}
	if f.NotBefore != "" {
		t, err := time.Parse(time.RFC3339, f.NotBefore)
		if err != nil {
			return r, fmt.Errorf("--not-before %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", f.NotBefore)
		}
		r.NotBefore = &t
	}
	return r, nil
}

// RotateFlags are the flags of a rotation (`cordon token rotate ID`).
type RotateFlags struct {
	// Request receives --grace and --ttl.
	Request RotateRequest
	// IdempotencyKey is Client.Rotate's key (--idempotency-key).
	IdempotencyKey string
}

// RegisterFlags declares --grace, --ttl and --idempotency-key.
func (f *RotateFlags) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.Request.Grace, "grace", "", "how long the old token stays valid; 0s revokes it at once (default: the issuer's)")
	fs.StringVar(&f.Request.TTL, "ttl", "", "lifetime of the new token (default: the old token's)")
	fs.StringVar(&f.IdempotencyKey, "idempotency-key", "", "replay-safe key: retrying with it returns the same successor")
}

// Validate checks the durations given.
func (f *RotateFlags) Validate() error {
	if err := checkDuration("--grace", f.Request.Grace); err != nil {
		return err
	}
	return checkDuration("--ttl", f.Request.TTL)
}

// RegisterFlags declares --tenant, --holder and --status.
func (l *ListFilter) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&l.Tenant, "tenant", "", "only this tenant")
	fs.StringVar(&l.Holder, "holder", "", "only this holder")
	fs.StringVar(&l.Status, "status", "", "only this status: active, rotated, revoked or expired")
}

// RegisterFlags declares --reason.
func (r *RetireRequest) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&r.Reason, "reason", "", "why the key is retired (recorded on the ledger)")
}

// checkDuration checks a duration flag's value (policy.ParseDuration:
// 90m, 24h, 7d); empty is fine.
func checkDuration(name, v string) error {
	if v == "" {
		return nil
	}
	if _, err := policy.ParseDuration(v); err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	return nil
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// windowFlag is a repeatable --window (not split on commas: "mon,wed …").
type windowFlag []Window

func (w *windowFlag) String() string {
	s := make([]string, len(*w))
	for i, win := range *w {
		s[i] = policy.FormatWindow(token.Window(win))
	}
	return strings.Join(s, "; ")
}

func (w *windowFlag) Set(s string) error {
	win, err := policy.ParseWindow(s)
	if err != nil {
		return err
	}
	*w = append(*w, Window(win))
	return nil
}
