package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

// DefaultAPI is the issuer's HTTP API when neither --api nor $CORDON_API
// is given.
const DefaultAPI = "http://127.0.0.1:7400"

// DefaultTokenFile is where the admin token is read from by default: the
// bootstrap token of an issuer run with --data .cordon.
const DefaultTokenFile = ".cordon/admin.token"

const tokenUsage = `Usage: cordon token <command> [flags]

Commands:
  issue    mint a token within the holder's ceiling (prints it on stdout)
  list     list tokens (--tenant, --holder, --status)
  inspect  show a token's claims, status and ledger history
  rotate   mint a successor and revoke the token after a grace period

Every command talks to the issuer's HTTP API (--api, $CORDON_API, default
` + DefaultAPI + `) with an admin token (--token-file, $CORDON_TOKEN_FILE,
default ` + DefaultTokenFile + `).
`

const keyUsage = `Usage: cordon key <command> [flags]

Commands:
  list     list the issuer's signing keys
  rotate   make a new signing key active (older keys keep verifying)
  retire   retire a non-active key: its tokens stop verifying everywhere
`

func runToken(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, args, tokenUsage, map[string]func(context.Context, *Env, []string) error{
		"issue": runTokenIssue, "list": runTokenList, "inspect": runTokenInspect, "rotate": runTokenRotate,
	})
}

func runKey(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, args, keyUsage, map[string]func(context.Context, *Env, []string) error{
		"list": runKeyList, "rotate": runKeyRotate, "retire": runKeyRetire,
	})
}

func subcommand(ctx context.Context, env *Env, args []string, usage string, cmds map[string]func(context.Context, *Env, []string) error) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return fmt.Errorf("%w: a subcommand is required", errUsage)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stderr, usage)
		return flag.ErrHelp
	}
	run, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(env.Stderr, usage)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
	return run(ctx, env, args[1:])
}

// apiFlags are the flags every API command shares.
type apiFlags struct {
	api, tokenFile, output, ca string
}

func addAPIFlags(fs *flag.FlagSet) *apiFlags {
	f := &apiFlags{}
	fs.StringVar(&f.api, "api", getenvDefault("CORDON_API", DefaultAPI), "issuer API URL ($CORDON_API)")
	fs.StringVar(&f.tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", DefaultTokenFile), "admin token file ($CORDON_TOKEN_FILE)")
	fs.StringVar(&f.output, "o", "text", "output format: text or json")
	fs.StringVar(&f.ca, "api-ca", os.Getenv("CORDON_API_CA"), "CA certificate of an HTTPS issuer API ($CORDON_API_CA)")
	return f
}

// client validates the shared flags and reads the admin token.
func (f *apiFlags) client(env *Env) (*issuerClient, error) {
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("%w: -o %q: want text or json", errUsage, f.output)
	}
	u, err := url.Parse(f.api)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --api %q is not an http(s) URL", errUsage, f.api)
	}
	st, err := os.Stat(f.tokenFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("admin token file %s does not exist: the issuer writes one to <data dir>/%s at first start; "+
				"pass --token-file or set $CORDON_TOKEN_FILE", f.tokenFile, issuer.AdminTokenFile)
		}
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(env.Stderr, "warning: admin token file %s is readable by others (mode %v); chmod 600 it\n", f.tokenFile, st.Mode().Perm())
	}
	b, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("admin token file %s is empty", f.tokenFile)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--api-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--api-ca %s: no PEM certificate found", f.ca)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return &issuerClient{base: strings.TrimRight(f.api, "/"), token: tok, hc: hc}, nil
}

// issuerClient calls the issuer's HTTP API.
type issuerClient struct {
	base  string
	token string
	hc    *http.Client
}

// apiError is an error reply of the API.
type apiError struct {
	status int
	body   issuer.ErrorBody
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.body.Error, e.status, e.body.Code)
}

func (c *issuerClient) do(ctx context.Context, method, path string, in, out any, header http.Header) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the issuer API at %s: %v (is `cordon issuer` or `cordon up` running? set --api or $CORDON_API)", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read reply of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &apiError{status: resp.StatusCode}
		if json.Unmarshal(raw, &e.body) != nil || e.body.Error == "" {
			e.body = issuer.ErrorBody{Error: strings.TrimSpace(string(raw)), Code: http.StatusText(resp.StatusCode)}
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decode reply of %s %s: %w", method, path, err)
		}
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
type windowFlag []string

func (w *windowFlag) String() string { return strings.Join(*w, "; ") }

func (w *windowFlag) Set(s string) error {
	if _, err := policy.ParseWindow(s); err != nil {
		return err
	}
	*w = append(*w, s)
	return nil
}

// parseInterspersed parses flags that may come before or after positional
// arguments (cordon token inspect ID -o json) and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseArgs parses a subcommand's flags (interspersed with its arguments)
// and checks that exactly n positional arguments remain.
func parseArgs(fs *flag.FlagSet, args []string, n int, what string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	if err := wantArgs(pos, n, what); err != nil {
		return nil, err
	}
	return pos, nil
}

func wantArgs(pos []string, n int, what string) error {
	if len(pos) != n {
		return fmt.Errorf("%w: want %s, got %d argument(s)", errUsage, what, len(pos))
	}
	return nil
}

func runTokenIssue(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token issue", "token issue --tenant T --holder H --scope s1,s2 [--audience a] [--network CIDR] [--env E] "+
		"[--window 'mon-fri 08:00-18:00 Europe/Paris'] [--device THUMB] [--ttl 1h] [-o json]")
	af := addAPIFlags(fs)
	var req issuer.IssueRequest
	var scopes, audience, networks listFlag
	var windows windowFlag
	var notBefore, idem string
	fs.StringVar(&req.Tenant, "tenant", "", "tenant (required)")
	fs.StringVar(&req.Holder, "holder", "", "holder: the service or workload (required)")
	fs.Var(&scopes, "scope", "scopes, resource:action (repeatable or comma-separated; required)")
	fs.Var(&audience, "audience", "services the token may reach (default: the ceiling's)")
	fs.Var(&networks, "network", "source CIDRs or IPs (default: the ceiling's)")
	fs.StringVar(&req.Environment, "env", "", "environment (default: the ceiling's, if it has one)")
	fs.Var(&windows, "window", "time-of-use window '[days] HH:MM-HH:MM [zone]' (repeatable; default: the ceiling's)")
	fs.StringVar(&req.Device, "device", "", "client certificate SHA-256 thumbprint (hex) to bind the token to")
	fs.StringVar(&req.TTL, "ttl", "", "lifetime such as 1h or 7d (default: the ceiling's max_ttl)")
	fs.StringVar(&notBefore, "not-before", "", "RFC 3339 time the token becomes valid (default: now)")
	fs.BoolVar(&req.BreakGlass, "break-glass", false, "mint a break-glass token (if the ceiling allows it)")
	fs.StringVar(&idem, "idempotency-key", "", "replay-safe key: retrying with it returns the same token")
	_, err := parseArgs(fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	switch {
	case req.Tenant == "":
		return fmt.Errorf("%w: --tenant is required", errUsage)
	case req.Holder == "":
		return fmt.Errorf("%w: --holder is required", errUsage)
	case len(scopes) == 0:
		return fmt.Errorf("%w: at least one --scope is required (least privilege: name what the holder needs)", errUsage)
	}
	if req.TTL != "" {
		if _, err := policy.ParseDuration(req.TTL); err != nil {
			return fmt.Errorf("%w: --ttl: %v", errUsage, err)
		}
	}
	if notBefore != "" {
		t, err := time.Parse(time.RFC3339, notBefore)
		if err != nil {
			return fmt.Errorf("%w: --not-before %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", errUsage, notBefore)
		}
		req.NotBefore = &t
	}
	req.Scopes, req.Audience, req.Networks = scopes, audience, networks
	for _, w := range windows {
		pw, _ := policy.ParseWindow(w) // validated by the flag
		req.Windows = append(req.Windows, issuer.Window(pw))
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var h http.Header
	if idem != "" {
		h = http.Header{issuer.HeaderIdempotencyKey: {idem}}
	}
	var res issuer.IssueResponse
	if err := c.do(ctx, "POST", "/v1/tokens", req, &res, h); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, res)
	}
	if _, err := fmt.Fprintln(env.Stdout, res.Token); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "issued token %s for %s/%s\n", res.ID, res.Tenant, res.Holder)
	describeClaims(env.Stderr, res.TokenInfo)
	return nil
}

func runTokenList(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token list", "token list [--tenant T] [--holder H] [--status active|rotated|revoked|expired] [-o json]")
	af := addAPIFlags(fs)
	var tenant, holder, status string
	fs.StringVar(&tenant, "tenant", "", "only this tenant")
	fs.StringVar(&holder, "holder", "", "only this holder")
	fs.StringVar(&status, "status", "", "only this status: active, rotated, revoked or expired")
	_, err := parseArgs(fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"tenant": tenant, "holder": holder, "status": status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/tokens"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list issuer.TokenList
	if err := c.do(ctx, "GET", path, nil, &list, nil); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, list)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT/HOLDER\tSTATUS\tKEY\tEXPIRES\tSCOPES")
	for _, t := range list.Tokens {
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\n", t.ID, t.Tenant, t.Holder, t.Status, t.KeyID,
			t.Claims.Expiry.UTC().Format(time.RFC3339), strings.Join(t.Claims.Scopes, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "%d token(s)\n", len(list.Tokens))
	return nil
}

func runTokenInspect(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token inspect", "token inspect ID [-o json]")
	af := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, "the token ID")
	if err != nil {
		return err
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var d issuer.TokenDetail
	if err := c.do(ctx, "GET", "/v1/tokens/"+url.PathEscape(pos[0]), nil, &d, nil); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, d)
	}
	w := env.Stdout
	fmt.Fprintf(w, "token %s for %s/%s: %s\n", d.ID, d.Tenant, d.Holder, d.Status)
	describeClaims(w, d.TokenInfo)
	fmt.Fprintf(w, "  issued    %s by %s\n", d.IssuedAt.UTC().Format(time.RFC3339), d.IssuedBy)
	if d.RotatedFrom != "" {
		fmt.Fprintf(w, "  rotated from %s\n", d.RotatedFrom)
	}
	if d.SuccessorID != "" {
		fmt.Fprintf(w, "  successor %s (grace until %s)\n", d.SuccessorID, d.GraceUntil.UTC().Format(time.RFC3339))
	}
	if d.RevokedAt != nil {
		fmt.Fprintf(w, "  revoked   %s by %s: %s\n", d.RevokedAt.UTC().Format(time.RFC3339), d.RevokedBy, d.RevokeReason)
	}
	fmt.Fprintln(w, "history:")
	for _, h := range d.History {
		fmt.Fprintf(w, "  #%-6d %s  %-14s %s\n", h.Seq, h.Time.UTC().Format(time.RFC3339), h.Type, h.Source)
	}
	return nil
}

func runTokenRotate(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token rotate", "token rotate ID [--grace 10m] [--ttl 1h] [-o json]")
	af := addAPIFlags(fs)
	var in issuer.RotateRequest
	var idem string
	fs.StringVar(&in.Grace, "grace", "", "how long the old token stays valid; 0s revokes it at once (default: the issuer's)")
	fs.StringVar(&in.TTL, "ttl", "", "lifetime of the new token (default: the old token's)")
	fs.StringVar(&idem, "idempotency-key", "", "replay-safe key: retrying with it returns the same successor")
	pos, err := parseArgs(fs, args, 1, "the token ID")
	if err != nil {
		return err
	}
	for name, v := range map[string]string{"--grace": in.Grace, "--ttl": in.TTL} {
		if v != "" {
			if _, err := policy.ParseDuration(v); err != nil {
				return fmt.Errorf("%w: %s: %v", errUsage, name, err)
			}
		}
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var h http.Header
	if idem != "" {
		h = http.Header{issuer.HeaderIdempotencyKey: {idem}}
	}
	var res issuer.RotateResponse
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(pos[0])+"/rotate", in, &res, h); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, res)
	}
	if _, err := fmt.Fprintln(env.Stdout, res.Token); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "rotated %s → %s for %s/%s\n", res.Predecessor.ID, res.Successor.ID, res.Successor.Tenant, res.Successor.Holder)
	if res.Predecessor.Status == issuer.StatusRevoked {
		fmt.Fprintf(env.Stderr, "  the old token is revoked\n")
	} else if res.Predecessor.GraceUntil != nil {
		fmt.Fprintf(env.Stderr, "  the old token stays valid until %s, then is revoked\n", res.Predecessor.GraceUntil.UTC().Format(time.RFC3339))
	}
	describeClaims(env.Stderr, res.Successor)
	return nil
}

func runKeyList(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key list", "key list [-o json]")
	af := addAPIFlags(fs)
	_, err := parseArgs(fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var list issuer.KeyList
	if err := c.do(ctx, "GET", "/v1/keys", nil, &list, nil); err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, list)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tCREATED\tACTIVE\tACCEPTED\tLIVE TOKENS\tNOTE")
	for _, k := range list.Keys {
		active, accepted := "", "no"
		if k.Active {
			active = "yes"
		}
		if k.Accepted {
			accepted = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", k.KeyID, k.Created.UTC().Format(time.RFC3339), active, accepted, k.LiveTokens, k.Problem)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, k := range list.Keys {
		if !k.Held {
			fmt.Fprintf(env.Stderr, "key %s is in the keys bucket but not held by the issuer: remove it with `cordon key retire %s`\n", k.KeyID, k.KeyID)
		}
	}
	return nil
}

func runKeyRotate(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key rotate", "key rotate [-o json]")
	af := addAPIFlags(fs)
	_, err := parseArgs(fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var k issuer.KeyInfo
	if err := c.do(ctx, "POST", "/v1/keys/rotate", nil, &k, nil); err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, k)
	}
	fmt.Fprintln(env.Stdout, k.KeyID)
	fmt.Fprintf(env.Stderr, "signing key %s is now active; older keys keep verifying until retired (cordon key retire KID)\n", k.KeyID)
	return nil
}

func runKeyRetire(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key retire", "key retire KID [--reason TEXT] [-o json]")
	af := addAPIFlags(fs)
	var in issuer.RetireRequest
	fs.StringVar(&in.Reason, "reason", "", "why the key is retired (recorded on the ledger)")
	pos, err := parseArgs(fs, args, 1, "the key id (see cordon key list)")
	if err != nil {
		return err
	}
	c, err := af.client(env)
	if err != nil {
		return err
	}
	var res issuer.RetireResponse
	if err := c.do(ctx, "POST", "/v1/keys/"+url.PathEscape(pos[0])+"/retire", in, &res, nil); err != nil {
		return fmt.Errorf("retire key: %w", err)
	}
	if af.output == "json" {
		return writeIndented(env.Stdout, res)
	}
	fmt.Fprintf(env.Stderr, "signing key %s retired: tokens it signed no longer verify\n", res.KeyID)
	if res.AdminTokenRenewed {
		fmt.Fprintf(env.Stderr, "the bootstrap admin token was signed by it: the issuer wrote a new one to its data directory (%s)\n", issuer.AdminTokenFile)
	}
	return nil
}

// describeClaims writes a token's context, one dimension a line.
func describeClaims(w io.Writer, t issuer.TokenInfo) {
	c := t.Claims
	line := func(k, v string) { fmt.Fprintf(w, "  %-9s %s\n", k, v) }
	line("key", t.KeyID)
	line("scopes", strings.Join(c.Scopes, ", "))
	line("audience", strings.Join(c.Audience, ", "))
	line("networks", orAny(strings.Join(c.Networks, ", ")))
	line("env", orAny(c.Environment))
	var wins []string
	for _, win := range c.Windows {
		wins = append(wins, policy.FormatWindow(eventWindow(win)))
	}
	line("windows", orAny(strings.Join(wins, "; ")))
	if c.Device != "" {
		line("device", c.Device)
	}
	if t.BreakGlass {
		line("break-glass", "yes")
	}
	line("valid", fmt.Sprintf("%s → %s (%s)", c.NotBefore.UTC().Format(time.RFC3339), c.Expiry.UTC().Format(time.RFC3339),
		policy.FormatDuration(c.Expiry.Sub(c.NotBefore))))
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}

func eventWindow(w events.Window) token.Window {
	return token.Window{Days: w.Days, Start: w.Start, End: w.End, Zone: w.Zone}
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
