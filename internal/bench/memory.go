package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// Sizes of the memory suite.
const (
	memoryTokens        = 1_000_000
	auditorMemoryBudget = 2048 // bytes per token
)

// Environment of a bench child process (ChildMain).
const (
	// EnvChild names the measurement a re-executed cordon-bench (or bench
	// test binary) makes instead of running: ChildMemory.
	EnvChild = "CORDON_BENCH_CHILD"
	// EnvChildConfig holds the child's sizes as JSON.
	EnvChildConfig = "CORDON_BENCH_CHILD_CONFIG"
	// ChildMemory fills a detection engine and reports its memory.
	ChildMemory = "memory"
)

// MemorySuite measures the detectors' memory — the auditor's per-token
// state — in a fresh child process (the bench binary re-executed), so
// that what other suites left on the heap or in the process does not
// count: live heap per active token at 1,000,000 tokens with their
// holders' and tenants' state, the process RSS beside it, and the live
// heap per holder.
func MemorySuite() Suite {
	return Suite{Name: "memory", Summary: "detector memory per token and per holder, live heap and process RSS, in a fresh process", Run: runMemorySuite}
}

// memoryConfig sizes a memory child.
type memoryConfig struct {
	Tokens  int `json:"tokens"`
	Holders int `json:"holders"`
}

// memoryResult is what a memory child reports.
type memoryResult struct {
	Tokens           int     `json:"tokens"`
	Holders          int     `json:"holders"`
	HeapPerToken     float64 `json:"heap_per_token"`
	StateBytes       int     `json:"state_bytes"`
	HolderStateBytes int     `json:"holder_state_bytes"`
	RSSBefore        int64   `json:"rss_before"`
	RSSAfter         int64   `json:"rss_after"`
	HeapPerHolder    float64 `json:"heap_per_holder"`
	HolderFill       int     `json:"holder_fill"`
}

// childMainCalled records that ChildMain ran in this process, so that
// re-executing it yields a child.
var childMainCalled atomic.Bool

// ChildMain turns the process into a bench child when EnvChild is set: it
// measures, prints one JSON line and exits. Without EnvChild it returns
// at once. Call it first thing in main (cmd/cordon-bench) and in the
// package's TestMain.
func ChildMain() {
	childMainCalled.Store(true)
	role := os.Getenv(EnvChild)
	if role == "" {
		return
	}
	if err := runChild(role); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(role string) error {
	if role != ChildMemory {
		return fmt.Errorf("$%s=%q: want %q", EnvChild, role, ChildMemory)
	}
	var cfg memoryConfig
	if err := json.Unmarshal([]byte(os.Getenv(EnvChildConfig)), &cfg); err != nil {
		return fmt.Errorf("$%s: %w", EnvChildConfig, err)
	}
	if cfg.Tokens < 1 || cfg.Holders < 101 {
		return fmt.Errorf("$%s: tokens %d (want ≥ 1), holders %d (want ≥ 101)", EnvChildConfig, cfg.Tokens, cfg.Holders)
	}
	res, err := measureMemory(cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// vmRSS is the process's resident set (VmRSS in /proc/self/status), in bytes.
func vmRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	return parseVmRSS(string(b))
}

// parseVmRSS reads VmRSS from the text of /proc/<pid>/status.
func parseVmRSS(status string) (int64, error) {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("rss: %q: %w", l, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("rss: no VmRSS line in /proc/self/status")
}

// childCommand re-executes the running binary as a bench child; a test
// binary runs no test (its TestMain must call ChildMain).
func childCommand(ctx context.Context, role string, cfg any) (*exec.Cmd, error) {
	if !childMainCalled.Load() {
		return nil, errors.New("this binary cannot be re-executed as a bench child: its main (or TestMain) does not call bench.ChildMain first")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench child: %w", err)
	}
	var args []string
	if strings.HasSuffix(exe, ".test") {
		args = []string{"-test.run=^$"}
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), EnvChild+"="+role, EnvChildConfig+"="+string(js))
	return cmd, nil
}

func runMemorySuite(ctx context.Context, env Env) ([]Figure, error) {
	cfg := memoryConfig{Tokens: env.size(memoryTokens, 20_000), Holders: env.size(memoryHolders, 1000)}
	fmt.Fprintf(env.Progress, "   a fresh process fills a detection engine with %d tokens, then %d holders\n", cfg.Tokens, cfg.Holders)
	cmd, err := childCommand(ctx, ChildMemory, cfg)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("memory child: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	line, _, _ := bufio.NewReader(bytes.NewReader(out)).ReadLine()
	var r memoryResult
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("memory child answered %q: %w", line, err)
	}
	rssPer := float64(r.RSSAfter-r.RSSBefore) / float64(r.Tokens)
	how := fmt.Sprintf("fresh child process; runtime.MemStats.HeapAlloc after GC, after the fill minus before; %d tokens, an issued event and 3 uses each", r.Tokens)
	rssHow := fmt.Sprintf("same child; VmRSS (/proc/self/status) after the fill minus at start (%.0f MiB)", float64(r.RSSBefore)/(1<<20))
	return []Figure{
		{Name: fmt.Sprintf("auditor memory per active token (%d tokens of %d holders, live heap, holder and tenant state included)", r.Tokens, r.Holders),
			Value: r.HeapPerToken, Unit: "bytes", Target: fmt.Sprintf("≤ %d", auditorMemoryBudget), OK: r.HeapPerToken <= auditorMemoryBudget, How: how},
		{Name: "  process RSS growth per token (same fill)", Value: rssPer, Unit: "bytes", OK: true, How: rssHow},
		{Name: "  process RSS after the fill", Value: float64(r.RSSAfter) / (1 << 20), Unit: "MiB", OK: true, How: "VmRSS of the child"},
		{Name: "  fixed state per token (excluding id and index)", Value: float64(r.StateBytes), Unit: "bytes", OK: true, How: "detect Stats.StateBytes"},
		{Name: fmt.Sprintf("auditor memory per holder (%d holders, live heap)", r.HolderFill), Value: r.HeapPerHolder, Unit: "bytes", OK: true,
			How: fmt.Sprintf("same child; HeapAlloc with %d tokens over %d holders minus over 100, divided by the extra holders", r.HolderFill, r.HolderFill)},
		{Name: "  fixed state per holder (excluding key and index)", Value: float64(r.HolderStateBytes), Unit: "bytes", OK: true, How: "detect Stats.HolderStateBytes"},
	}, nil
}

// measureMemory runs in the child: the token fill, then the holder fill.
func measureMemory(cfg memoryConfig) (*memoryResult, error) {
	runtime.GC()
	rss0, err := vmRSS()
	if err != nil {
		return nil, err
	}
	r, err := benchAuditorMemory(cfg.Tokens)
	if err != nil {
		return nil, err
	}
	r.RSSBefore = rss0
	r.HolderFill = cfg.Holders
	if r.HeapPerHolder, err = benchHolderMemory(cfg.Holders); err != nil {
		return nil, err
	}
	return r, nil
}

// benchAuditorMemory fills a detection engine — the auditor's only
// per-token state — with tokens tokens (an issued event and three uses
// each) and reports the live heap per token, and the process RSS while
// the engine is still alive.
func benchAuditorMemory(tokens int) (*memoryResult, error) {
	cfg := detect.DefaultConfig()
	cfg.MaxTokens = tokens
	ids := make([]string, tokens)
	for i := range ids {
		ids[i] = fmt.Sprintf("019cabd9-%04x-7%03x-8%03x-%012x", i>>24&0xffff, i>>12&0xfff, i&0xfff, i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e, err := detect.New(cfg)
	if err != nil {
		return nil, err
	}
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	u := &events.UsageDecided{Enforcer: "edge-1", Service: "orders", Method: "GET", Scope: "orders:read", Decision: events.DecisionAllow, Reason: events.ReasonOK}
	env := events.Envelope{Type: events.TypeUsageDecided, Source: "bench", Version: events.SchemaVersion, Data: u}
	var sb strings.Builder
	for i, id := range ids {
		tenant, holder := fmt.Sprintf("tenant-%d", i%50), fmt.Sprintf("holder-%d", i%5000)
		e.Observe(events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeTokenIssued, Time: base, Source: "bench", Version: events.SchemaVersion,
			Data: &events.TokenIssued{TokenID: id, Tenant: tenant, Holder: holder, KeyID: "k", Actor: "a",
				Claims: events.TokenClaims{Scopes: []string{"s"}, Expiry: base.Add(48 * time.Hour), Windows: []events.Window{{Zone: "Europe/Paris"}}}}})
		for k := 0; k < 3; k++ {
			sb.Reset()
			fmt.Fprintf(&sb, "10.%d.%d.%d", i>>16&0xff, i>>8&0xff, 10+(i+k)%4)
			u.TokenID, u.Tenant, u.Holder, u.SourceIP = id, tenant, holder, sb.String()
			u.Route = fmt.Sprintf("/v1/orders/%d", (i+k)*7919%1_000_000)
			env.ID, env.Time = uuid.Must(uuid.NewV7()), base.Add(time.Duration(k)*time.Hour)
			e.ObserveUsage(env, u)
		}
	}
	ids = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := e.Stats()
	if st.Tokens != tokens {
		return nil, fmt.Errorf("engine holds %d tokens, want %d", st.Tokens, tokens)
	}
	r := &memoryResult{Tokens: tokens, Holders: st.Holders, HeapPerToken: float64(after.HeapAlloc-before.HeapAlloc) / float64(tokens),
		StateBytes: st.StateBytes, HolderStateBytes: st.HolderStateBytes}
	rss, err := vmRSS()
	if err != nil {
		return nil, err
	}
	runtime.KeepAlive(e)
	r.RSSAfter = rss
	return r, nil
}

// memoryHolders is how many holders benchHolderMemory fills in a full run.
const memoryHolders = 100_000

// benchHolderMemory reports the live heap one holder costs: the same
// number of tokens, one use each, spread over memoryHolders holders and
// over 100, the difference divided by the extra holders.
func benchHolderMemory(memoryHolders int) (float64, error) {
	fill := func(holders int) (uint64, error) {
		cfg := detect.DefaultConfig()
		cfg.MaxTokens, cfg.MaxHolders = memoryHolders, memoryHolders
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := detect.New(cfg)
		if err != nil {
			return 0, err
		}
		base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
		u := &events.UsageDecided{Tenant: "acme", Enforcer: "edge-1", Service: "orders", Method: "GET", Route: "/v1/orders/{id}", Resource: "1",
			Scope: "orders:read", Client: "orders-client/4", Decision: events.DecisionAllow, Reason: events.ReasonOK}
		env := events.Envelope{Type: events.TypeUsageDecided, Source: "bench", Version: events.SchemaVersion, Data: u}
		for i := 0; i < memoryHolders; i++ {
			u.TokenID = fmt.Sprintf("019cabd9-%04x-7%03x-8%03x-%012x", i>>24&0xffff, i>>12&0xfff, i&0xfff, i)
			u.Holder = fmt.Sprintf("holder-%d", i%holders)
			u.SourceIP = fmt.Sprintf("10.%d.%d.5", i>>16&0xff, i>>8&0xff)
			env.ID, env.Time = uuid.Must(uuid.NewV7()), base.Add(time.Duration(i)*time.Millisecond)
			e.ObserveUsage(env, u)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := e.Stats(); st.Holders != holders {
			return 0, fmt.Errorf("engine holds %d holders, want %d", st.Holders, holders)
		}
		runtime.KeepAlive(e)
		return after.HeapAlloc - before.HeapAlloc, nil
	}
	few, err := fill(100)
	if err != nil {
		return 0, err
	}
	many, err := fill(memoryHolders)
	if err != nil {
		return 0, err
	}
	return (float64(many) - float64(few)) / float64(memoryHolders-100), nil
}
