package up_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// pager stands in for on-call's webhook receiver: it keeps every alert
// body it is sent.
type pager struct {
	*httptest.Server
	mu     sync.Mutex
	alerts []string
}

func newPager(t *testing.T) *pager {
	t.Helper()
	p := &pager{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		p.mu.Lock()
		p.alerts = append(p.alerts, b.String())
		p.mu.Unlock()
	}))
	t.Cleanup(p.Close)
	return p
}

// all returns the alerts received so far.
func (p *pager) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.alerts...)
}

// await returns the first alert ok accepts, failing t after 30 s.
func (p *pager) await(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, a := range p.all() {
			if ok(a) {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alert %s; got %.3000s", what, strings.Join(p.all(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitUntil polls ok for up to 30 s.
func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
