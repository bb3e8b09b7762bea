package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

// LeakSuite measures the leaked-token intake: how long the issuer takes
// to answer a signed GitHub batch of 1,000 reports, and from the report to
// every enforcer denying the reported tokens.
func LeakSuite() Suite {
	return Suite{Name: "leak reports", Summary: "GitHub secret scanning batches of 1,000 reports: reply time, report → denied by every enforcer", Run: runLeakSuite}
}

func runLeakSuite(ctx context.Context, env Env) ([]Figure, error) {
	const reports, live, enforcers = 1000, 10, 3
	batches := env.size(100, 2)
	dir, err := os.MkdirTemp("", "cordon-bench-leaks-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	doc, _ := json.Marshal(leak.KeyDocument{PublicKeys: []leak.PublishedKey{{KeyIdentifier: "bench", IsCurrent: true,
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}}})
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, doc, 0o600); err != nil {
		return nil, err
	}
	extra := []string{benchEnforcerID(0), benchEnforcerID(1)}
	opts := up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0", ChDBPath: sharedChDBPath(),
		Database: "bench_leaks", Log: zerolog.Nop(), ExtraEnforcers: extra, LeakGitHubKeys: keys}
	defer dropBenchDatabase(opts.Database)
	fmt.Fprintf(env.Progress, "   %d signed batches of %d reports (%d live tokens each) to the embedded system, %d enforcers…\n", batches, reports, live, enforcers)
	sys, err := up.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	others, closeAll, err := benchEnforcers(ctx, func(id string) (*nats.Conn, error) {
		return sys.Connect("bench-enforcer-"+id, sys.EnforcerCredsFile(id))
	}, enforcers-1, "invoices", token.Anchors{sys.Issuer.TrustAnchor()})
	if err != nil {
		return nil, err
	}
	defer closeAll()
	all := append([]*enforce.Enforcer{sys.Enforcer}, others...)
	url := "http://" + sys.Issuer.Addr() + "/v1/leaks/github"
	client := &http.Client{Timeout: 30 * time.Second}
	var replies, denials []time.Duration
	for b := range batches {
		var toks []string
		var rs []leak.Report
		for i := range live {
			res, err := sys.Issuer.Issue(ctx, "bench", issuer.IssueRequest{Tenant: "acme", Holder: "reporting", Scopes: []string{"invoices:read"},
				Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
			if err != nil {
				return nil, err
			}
			toks = append(toks, res.Token)
			rs = append(rs, leak.Report{Token: res.Token, Type: "cordon_api_token", URL: fmt.Sprintf("https://github.com/o/r/blob/%d/%d.env", b, i), Source: "content"})
		}
		for i := len(rs); i < reports; i++ {
			rs = append(rs, leak.Report{Token: fmt.Sprintf("ghp_%036d", b*reports+i), Type: "other", URL: "https://github.com/o/r/blob/x/y"})
		}
		body, _ := json.Marshal(rs)
		sum := sha256.Sum256(body)
		sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
		if err != nil {
			return nil, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("GITHUB-PUBLIC-KEY-IDENTIFIER", "bench")
		req.Header.Set("GITHUB-PUBLIC-KEY-SIGNATURE", base64.StdEncoding.EncodeToString(sig))
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		var fb []leak.Feedback
		err = json.NewDecoder(resp.Body).Decode(&fb)
		resp.Body.Close()
		replied := time.Now()
		if err != nil || resp.StatusCode != http.StatusOK || len(fb) != reports {
			return nil, fmt.Errorf("batch %d: status %d, %d verdicts: %v", b, resp.StatusCode, len(fb), err)
		}
		replies = append(replies, replied.Sub(start))
		var last time.Time
		for _, tok := range toks {
			at, err := untilAllDeny(ctx, all, func() *enforce.Request {
				return &enforce.Request{Token: tok, Method: "GET", Route: "/invoices", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("127.0.0.1"), UserAgent: "bench"}
			}, 10*time.Second)
			if err != nil {
				return nil, fmt.Errorf("batch %d: %w", b, err)
			}
			if at.After(last) {
				last = at
			}
		}
		denials = append(denials, last.Sub(start))
	}
	rq := Percentiles(replies, 50, 100)
	dq := Percentiles(denials, 50, 100)
	how := fmt.Sprintf("timer from sending the signed POST /v1/leaks/github (1,000 reports: %d live tokens, the rest other vendors' secrets) to its reply; n=%d batches; the embedded system (in-process NATS, chDB), nothing else in the process", live, len(replies))
	dhow := fmt.Sprintf("timer from sending the batch to the moment every one of %d enforcers denies every reported live token (polled); n=%d batches; through the response policy (critical → revoke) and the denylist broadcast", enforcers, len(denials))
	return []Figure{
		{Name: "leak batch of 1,000 reports answered, " + rq[0].Label, Value: Millis(rq[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "leak batch of 1,000 reports answered, " + rq[1].Label, Value: Millis(rq[1].Value), Unit: "ms", Target: "< 1000 ms", OK: rq[1].Value < time.Second, How: how},
		{Name: "leak report → denied by every enforcer, " + dq[0].Label, Value: Millis(dq[0].Value), Unit: "ms", OK: true, How: dhow},
		{Name: "leak report → denied by every enforcer, " + dq[1].Label, Value: Millis(dq[1].Value), Unit: "ms", OK: true, How: dhow},
	}, nil
}
