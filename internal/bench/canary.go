package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/services/issuer"
)

// CanarySuite measures canary tokens: from a request presenting a canary
// at the enforcing proxy to its critical alert at on-call's webhook.
func CanarySuite() Suite {
	return Suite{Name: "canary tokens", Summary: "canary used once through the proxy → critical alert at the on-call webhook", Run: runCanarySuite}
}

func runCanarySuite(ctx context.Context, env Env) ([]Figure, error) {
	n := env.size(1000, 5)
	dir, err := os.MkdirTemp("", "cordon-bench-canary-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	var pending []string
	pager := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		at := time.Now()
		body := b.String()
		mu.Lock()
		for _, id := range pending {
			if _, ok := arrived[id]; !ok && strings.Contains(body, id) && strings.Contains(body, "canary_used") {
				arrived[id] = at
			}
		}
		mu.Unlock()
	}))
	defer pager.Close()
	opts := up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0", ChDBPath: sharedChDBPath(),
		Database: "bench_canary", Log: zerolog.Nop(), AlertWebhook: pager.URL}
	defer dropBenchDatabase(opts.Database)
	fmt.Fprintf(env.Progress, "   %d canaries, each used once through the proxy; timer to its alert at a local webhook…\n", n)
	sys, err := up.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	samples := make([]time.Duration, 0, n)
	for i := range n {
		res, err := sys.Issuer.Issue(ctx, "bench", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:list"},
			Audience: []string{"invoices"}, Environment: "demo", TTL: "1h", Canary: true})
		if err != nil {
			return nil, err
		}
		if res.Warning != "" {
			return nil, fmt.Errorf("canary %d: %s", i, res.Warning)
		}
		// Planted tokens are not used the same millisecond: wait until the
		// proxy's enforcer has the entry (the denylist broadcast).
		for sys.Enforcer.Stats().DenyEntries < i+1 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			time.Sleep(200 * time.Microsecond)
		}
		mu.Lock()
		pending = append(pending[:0], res.ID)
		mu.Unlock()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sys.ProxyURL+"/invoices", nil)
		req.Header.Set("Authorization", "Bearer "+res.Token)
		req.Header.Set("User-Agent", "bench-thief/1.0")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			return nil, fmt.Errorf("canary %d answered %d, want 403", i, resp.StatusCode)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			at, ok := arrived[res.ID]
			mu.Unlock()
			if ok {
				samples = append(samples, at.Sub(start))
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("canary %d: no alert within 10s", i)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	q := Percentiles(samples, 50, 99)
	how := fmt.Sprintf("timer from sending the request with a canary to the enforcing proxy to the on-call webhook (a local HTTP server) receiving its critical alert; n=%d canaries, one use each, one after the other; the embedded system (in-process NATS), nothing else in the process", len(samples))
	return []Figure{
		{Name: "canary request → critical alert, " + q[0].Label, Value: Millis(q[0].Value), Unit: "ms", OK: true, How: how},
		{Name: "canary request → critical alert, " + q[1].Label, Value: Millis(q[1].Value), Unit: "ms", Target: "≤ 100 ms", OK: !q[1].Max && q[1].Value <= 100*time.Millisecond || env.Smoke, How: how},
	}, nil
}
