package revoker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// Ledger outcomes of a revocation (Result.Ledger, Reply.Ledger).
const (
	// LedgerRecorded: the ledger events and the denylist entry are
	// accepted by JetStream.
	LedgerRecorded = "recorded"
	// LedgerPending: the revocation is broadcast to enforcers; its ledger
	// events and denylist entry are retried until JetStream accepts them,
	// never dropped.
	LedgerPending = "pending"
)

// job is the JetStream work of one revocation: a denylist rule (broad
// kinds), the TokenRevoked ledger events, a token entry (kind token), in
// that order. Every step is idempotent (a rule is merged under a
// compare-and-set, a token entry is created once, a ledger event carries
// its message id), so a job is simply run again until it completes.
type job struct {
	ID     string        `json:"id"`
	Kind   string        `json:"kind"`
	Since  time.Time     `json:"since"`
	Rule   *denyWrite    `json:"rule,omitempty"`
	Ledger []*ledgerItem `json:"ledger,omitempty"`
	Token  *denyWrite    `json:"token,omitempty"`

	attempts int
	done     atomic.Bool
}

// denyWrite is a denylist entry to write.
type denyWrite struct {
	Key string            `json:"key"`
	Rec events.DenyRecord `json:"rec"`

	seq  uint64 // its pending broadcast
	done bool
}

// ledgerItem is one TokenRevoked ledger event to publish.
type ledgerItem struct {
	TokenID string          `json:"token_id"`
	Subject string          `json:"subject"`
	MsgID   string          `json:"msg_id"`
	Data    json.RawMessage `json:"data"`
	// Check: publish only if the denylist does not already revoke the
	// token (kind token).
	Check bool `json:"check,omitempty"`
	// The token's claims the check judges rules by.
	Tenant   string    `json:"tenant,omitempty"`
	Holder   string    `json:"holder,omitempty"`
	KeyID    string    `json:"kid,omitempty"`
	IssuedAt time.Time `json:"issued_at,omitzero"`

	done, already bool
}

// tokens are the ids of the tokens the job's ledger events revoke.
func (j *job) tokens() []string {
	out := make([]string, 0, len(j.Ledger))
	for _, l := range j.Ledger {
		out = append(out, l.TokenID)
	}
	return out
}

// PendingRevocation is a revocation broadcast to enforcers whose ledger
// events or denylist entry JetStream has not accepted yet.
type PendingRevocation struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Since    time.Time `json:"since"`
	Tokens   []string  `json:"tokens,omitempty"`
	Rule     string    `json:"rule,omitempty"`
	Attempts int       `json:"attempts"`
}

// pendingSet holds the jobs the retrier works on, in order, and their
// journal.
type pendingSet struct {
	mu      sync.Mutex
	jobs    []*job
	tokens  map[string]int // token id → pending jobs revoking it
	keys    map[string]int // denylist key → pending jobs writing it
	kick    chan struct{}
	journal *journal // nil: no DataDir
}

func newPendingSet() *pendingSet {
	return &pendingSet{tokens: map[string]int{}, keys: map[string]int{}, kick: make(chan struct{}, 1)}
}

// reserve counts a job's tokens and keys as pending while its first
// attempt runs (release undoes it; add takes it over).
func (p *pendingSet) reserve(j *job) {
	p.mu.Lock()
	p.count(j, 1)
	p.mu.Unlock()
}

func (p *pendingSet) release(j *job) {
	p.mu.Lock()
	p.count(j, -1)
	p.mu.Unlock()
}

// add appends a job (recording it in the journal unless replayed; its
// tokens and keys counted unless reserved) and wakes the retrier.
func (p *pendingSet) add(j *job, journaled, reserved bool) error {
	p.mu.Lock()
	var err error
	if p.journal != nil && !journaled {
		err = p.journal.write(journalRecord{Add: j})
	}
	p.jobs = append(p.jobs, j)
	if !reserved {
		p.count(j, 1)
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return err
}

func (p *pendingSet) count(j *job, d int) {
	for _, id := range j.tokens() {
		if p.tokens[id] += d; p.tokens[id] <= 0 {
			delete(p.tokens, id)
		}
	}
	for _, w := range []*denyWrite{j.Rule, j.Token} {
		if w != nil {
			if p.keys[w.Key] += d; p.keys[w.Key] <= 0 {
				delete(p.keys, w.Key)
			}
		}
	}
}

// complete removes a finished job; the journal is emptied with the set.
func (p *pendingSet) complete(j *job) error {
	j.done.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.jobs, j)
	if i < 0 {
		return nil
	}
	p.jobs = slices.Delete(p.jobs, i, i+1)
	p.count(j, -1)
	if p.journal == nil {
		return nil
	}
	if len(p.jobs) == 0 {
		return p.journal.reset()
	}
	return p.journal.write(journalRecord{Done: j.ID})
}

// requeue moves a job that failed to the back, so that one job that keeps
// failing never holds up the others.
func (p *pendingSet) requeue(j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.jobs, j); i >= 0 {
		p.jobs = append(slices.Delete(p.jobs, i, i+1), j)
	}
}

// attempted counts one more attempt of j and returns the count.
func (p *pendingSet) attempted(j *job) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	j.attempts++
	return j.attempts
}

func (p *pendingSet) snapshot() []*job {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.jobs)
}

func (p *pendingSet) hasToken(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens[id] > 0
}

func (p *pendingSet) hasKey(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[key] > 0
}

func (p *pendingSet) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.jobs)
}

// list describes the pending jobs, oldest first.
func (p *pendingSet) list() []PendingRevocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PendingRevocation, 0, len(p.jobs))
	for _, j := range p.jobs {
		pr := PendingRevocation{ID: j.ID, Kind: j.Kind, Since: j.Since, Tokens: j.tokens(), Attempts: j.attempts}
		if j.Rule != nil {
			pr.Rule = j.Rule.Key
		}
		out = append(out, pr)
	}
	slices.SortStableFunc(out, func(a, b PendingRevocation) int { return a.Since.Compare(b.Since) })
	return out
}

// Retry back-off of pending revocations.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
)

// retrier runs the pending jobs until each completes, backing off while
// JetStream refuses them.
func (r *Revoker) retrier() {
	defer r.wg.Done()
	wait := retryMin
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		jobs := r.pend.snapshot()
		if len(jobs) == 0 {
			wait = retryMin
			select {
			case <-r.ctx.Done():
				return
			case <-r.pend.kick:
			}
			continue
		}
		failed := false
		for _, j := range jobs {
			if r.ctx.Err() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			err := r.runJob(ctx, j)
			cancel()
			r.stats.ledgerRetries.Add(1)
			r.jsDown.Store(err != nil)
			attempts := r.pend.attempted(j)
			if err != nil {
				if attempts == 1 || attempts%20 == 0 {
					r.o.Log.Warn().Err(err).Str("revocation", j.ID).Strs("tokens", j.tokens()).Int("attempts", attempts).
						Msg("pending revocation not yet accepted by JetStream, will retry")
				}
				r.pend.requeue(j)
				failed = true
				break
			}
			r.o.Log.Info().Str("revocation", j.ID).Str("kind", j.Kind).Strs("tokens", j.tokens()).Int("attempts", attempts).
				Dur("pending_for", r.now().Sub(j.Since)).Msg("pending revocation recorded")
			if err := r.pend.complete(j); err != nil {
				r.o.Log.Error().Err(err).Msg("revocation journal")
			}
		}
		if !failed {
			wait = retryMin
			continue
		}
		t.Reset(wait)
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		wait = min(wait*2, retryMax)
	}
}

// journal is the on-disk record of pending revocations
// (DataDir/revoker-pending.jsonl): one JSON record a line, a job added or
// done, synced before the reply; replayed at start.
type journal struct {
	path string
	f    *os.File
}

type journalRecord struct {
	Add  *job   `json:"add,omitempty"`
	Done string `json:"done,omitempty"`
}

// journalFile is the journal's name in DataDir.
const journalFile = "revoker-pending.jsonl"

// openJournal reads the journal in dir, returns the jobs still pending
// and reopens the journal holding exactly them.
func openJournal(dir string) (*journal, []*job, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("revoker: data dir: %w", err)
	}
	path := filepath.Join(dir, journalFile)
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("revoker: read journal: %w", err)
	}
	var jobs []*job
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var rec journalRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			// A torn last line (a crash while writing) is the only
			// expected damage: keep what was read before it.
			if !sc.Scan() {
				break
			}
			return nil, nil, fmt.Errorf("revoker: journal %s line %d: %w", path, line, err)
		}
		switch {
		case rec.Add != nil:
			jobs = append(jobs, rec.Add)
		case rec.Done != "":
			jobs = slices.DeleteFunc(jobs, func(j *job) bool { return j.ID == rec.Done })
		}
	}
	// Rewrite it compacted.
	var buf bytes.Buffer
	for _, j := range jobs {
		line, err := json.Marshal(journalRecord{Add: j})
		if err != nil {
			return nil, nil, fmt.Errorf("revoker: journal: %w", err)
		}
		buf.Write(append(line, '\n'))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return nil, nil, fmt.Errorf("revoker: write journal: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, nil, fmt.Errorf("revoker: write journal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("revoker: open journal: %w", err)
	}
	return &journal{path: path, f: f}, jobs, nil
}

func (j *journal) write(rec journalRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("revocation journal: %w", err)
	}
	if _, err := j.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("revocation journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("revocation journal %s: %w", j.path, err)
	}
	return nil
}

// reset empties the journal (nothing is pending).
func (j *journal) reset() error {
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("revocation journal %s: %w", j.path, err)
	}
	return nil
}

func (j *journal) close() error { return j.f.Close() }
