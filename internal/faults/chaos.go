package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/simulate"
)

// Database names of the two auditor runs in the chDB data path.
const (
	ChaosDatabase     = "faults_chaos"
	ReferenceDatabase = "faults_reference"
)

// AuditorChaosOptions configures AuditorChaos.
type AuditorChaosOptions struct {
	// Child starts an auditor child (SelfCommand() in a test binary whose
	// TestMain calls ChildMain, or cordon-bench, whose main does).
	Child Command
	// Events is the number of usage events (default 20,000), taken in
	// time order from a pkg/simulate scenario with attacks.
	Events int
	// Seed is the scenario seed (default 1).
	Seed uint64
	// Kills is the number of auditor processes killed with SIGKILL
	// (default 5).
	Kills int
	// PublishOver is how long the events take to flow in (default 3s per
	// kill), so that the kills happen while they do.
	PublishOver time.Duration
	// AckWait is the children's redelivery delay (default 2s); BatchSize
	// their batch (default: the auditor's). CheckpointEvery is their
	// detector checkpoint interval (default: the auditor's).
	AckWait         time.Duration
	BatchSize       int
	CheckpointEvery time.Duration
	// Dir holds NATS's store, the chDB data path, the detector state and
	// the children's logs; a temporary directory (removed) when empty.
	Dir string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

// AuditorChaosReport is what AuditorChaos measured.
type AuditorChaosReport struct {
	// Events were published and acknowledged by JetStream; Stream is the
	// number of messages USAGE holds.
	Events int
	Stream uint64
	// Kills were delivered with SIGKILL while the events flowed;
	// KillsMidBatch of them while the child held delivered, unacknowledged
	// messages. Processes is the number of auditor processes of the chaos
	// run (Kills + 1).
	Kills, KillsMidBatch, Processes int
	// Chaos and Reference are what the two databases hold.
	Chaos, Reference *DBContents
	// Lost are events missing from the chaos run's usage_events;
	// Duplicates its rows beyond one per event id; Foreign its event ids
	// that the reference run does not have (and Missing the converse).
	Lost, Duplicates int
	Foreign, Missing uint64
	// MissedAnomalies are in the reference run and not in the chaos run;
	// ExtraAnomalies the converse. By id (detector, token, triggering
	// event), sorted.
	MissedAnomalies, ExtraAnomalies []AnomalyRef
	// ChaosTime and ReferenceTime are the wall time of each run (the chaos
	// run from the first event published to the last one written).
	ChaosTime, ReferenceTime time.Duration
}

// AnomaliesEqual reports whether the chaos run found exactly the
// reference run's anomalies.
func (r *AuditorChaosReport) AnomaliesEqual() bool {
	return len(r.MissedAnomalies) == 0 && len(r.ExtraAnomalies) == 0
}

// String summarises the report in one line per figure.
func (r *AuditorChaosReport) String() string {
	return fmt.Sprintf("events %d (stream %d), kills %d (%d mid-batch), processes %d\n"+
		"chaos:     rows %d, distinct %d, raw rows %d, anomalies %d\n"+
		"reference: rows %d, distinct %d, raw rows %d, anomalies %d\n"+
		"lost %d, duplicates %d, foreign ids %d, missing ids %d, anomalies missed %d, extra %d\n"+
		"chaos run %v, reference run %v",
		r.Events, r.Stream, r.Kills, r.KillsMidBatch, r.Processes,
		r.Chaos.Rows, r.Chaos.Distinct, r.Chaos.RawRows, len(r.Chaos.Anomalies),
		r.Reference.Rows, r.Reference.Distinct, r.Reference.RawRows, len(r.Reference.Anomalies),
		r.Lost, r.Duplicates, r.Foreign, r.Missing, len(r.MissedAnomalies), len(r.ExtraAnomalies),
		r.ChaosTime.Round(time.Millisecond), r.ReferenceTime.Round(time.Millisecond))
}

// SimulatedUsage returns the first n usage events, in time order, of the
// default simulation scenario (attacks included) with the given seed.
func SimulatedUsage(seed uint64, n int) ([]events.Envelope, error) {
	sc := simulate.DefaultScenario()
	sc.Seed = seed
	want := n
	for range 4 {
		sc.UsageEvents = max(20_000, want+want/10) // smaller worlds leave no room for the attacks
		ds, err := simulate.Generate(sc)
		if err != nil {
			return nil, fmt.Errorf("simulate: %w", err)
		}
		out := make([]events.Envelope, 0, n)
		for _, e := range ds.Events {
			if _, ok := e.Data.(*events.UsageDecided); ok {
				out = append(out, e)
				if len(out) == n {
					return out, nil
				}
			}
		}
		want = want * 3 / 2
	}
	return nil, fmt.Errorf("simulate: scenario does not yield %d usage events", n)
}

// AuditorChaos publishes simulated usage events to JetStream while it
// kills auditor processes with SIGKILL and starts new ones, one at a time
// on one chDB data path; lets a last one drain the stream; runs an
// uninterrupted reference auditor over the same stream (its own consumer,
// database and state); and compares what the two left in ClickHouse.
//
// The detectors see usage events only: ledger events travel on another
// consumer whose interleaving with usage is not deterministic even without
// faults, so they would make the reference run itself irreproducible.
func AuditorChaos(ctx context.Context, o AuditorChaosOptions) (*AuditorChaosReport, error) {
	if os.Getenv(EnvChild) != "" {
		return nil, ErrNested
	}
	if o.Child.Path == "" {
		return nil, errors.New("auditor chaos: no child command")
	}
	if o.Events <= 0 {
		o.Events = 20_000
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Kills <= 0 {
		o.Kills = 5
	}
	if o.PublishOver <= 0 {
		o.PublishOver = time.Duration(o.Kills) * 3 * time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = 2 * time.Second
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "cordon-faults-")
		if err != nil {
			return nil, fmt.Errorf("auditor chaos: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	h := &chaos{o: o, dir: dir, progress: progress, rng: rand.New(rand.NewPCG(o.Seed, uint64(time.Now().UnixNano())))}
	return h.run(ctx)
}

type chaos struct {
	o        AuditorChaosOptions
	dir      string
	progress io.Writer
	rng      *rand.Rand
	js       jetstream.JetStream
	url      string
	lastSeq  uint64
}

func (h *chaos) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "   "+format+"\n", args...)
}

func (h *chaos) run(ctx context.Context) (*AuditorChaosReport, error) {
	rep := &AuditorChaosReport{}
	evs, err := SimulatedUsage(h.o.Seed, h.o.Events)
	if err != nil {
		return nil, err
	}
	payloads := make([][]byte, len(evs))
	for i := range evs {
		if payloads[i], err = events.Encode(evs[i]); err != nil {
			return nil, err
		}
	}
	srv, err := natsrun.Start(natsrun.Options{DataDir: filepath.Join(h.dir, "nats"), Port: -1, ServerName: "faults"})
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	h.url = srv.ClientURL()
	nc, err := natsconn.Dial(natsconn.Config{URL: h.url, Name: "faults-chaos"})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if h.js, err = jetstream.New(nc); err != nil {
		return nil, err
	}
	if err := natsconn.Ensure(ctx, h.js, events.StreamOptions{}); err != nil {
		return nil, err
	}
	chdbPath := filepath.Join(h.dir, "chdb")

	// The chaos run: events flow in while auditors are killed.
	h.logf("chaos run: %d usage events over %v, %d kills (SIGKILL), ack wait %v", len(evs), h.o.PublishOver, h.o.Kills, h.o.AckWait)
	start := time.Now()
	pubCtx, cancelPub := context.WithCancel(ctx)
	defer cancelPub()
	pubDone := make(chan error, 1)
	go func() { pubDone <- h.publish(pubCtx, evs, payloads) }()
	cfg := childConfig{NATS: h.url, ChDBPath: chdbPath, Database: ChaosDatabase, StateDir: filepath.Join(h.dir, "state-chaos"),
		Durable: "chaos", AckWait: h.o.AckWait, BatchSize: h.o.BatchSize, CheckpointEvery: h.o.CheckpointEvery}
	for rep.Kills < h.o.Kills {
		rep.Processes++
		born := time.Now()
		p, err := h.startAuditor(ctx, cfg, fmt.Sprintf("chaos-%d", rep.Processes))
		if err != nil {
			return nil, err
		}
		ready := time.Since(born)
		// Kills are spread over the stream, not over time, so that the
		// detectors lose their process at every stage: learning,
		// baselines, attacks.
		at := uint64(len(evs)) * uint64(rep.Kills+1) / uint64(h.o.Kills+1)
		mid, st, err := h.killAt(ctx, p, at)
		if err != nil {
			p.kill()
			return nil, err
		}
		rep.Kills++
		if mid {
			rep.KillsMidBatch++
		}
		h.logf("kill %d: pid %d ready in %v, killed after %v: analysed to %d, written to %d (mid-batch: %v)",
			rep.Kills, p.cmd.Process.Pid, ready.Round(time.Millisecond), time.Since(born).Round(time.Millisecond),
			st.SeenSeq, st.LastSeq, mid)
	}
	rep.Processes++
	last, err := h.startAuditor(ctx, cfg, fmt.Sprintf("chaos-%d", rep.Processes))
	if err != nil {
		return nil, err
	}
	defer last.kill()
	select {
	case err := <-pubDone:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rep.Events = len(evs)
	if err := h.waitDrained(ctx, last); err != nil {
		return nil, err
	}
	rep.ChaosTime = time.Since(start)
	if err := last.stop(30 * time.Second); err != nil {
		return nil, err
	}
	h.logf("chaos run drained in %v by process %d", rep.ChaosTime.Round(time.Millisecond), rep.Processes)

	// The reference: one auditor, never interrupted, over the same stream.
	start = time.Now()
	ref, err := h.startAuditor(ctx, childConfig{NATS: h.url, ChDBPath: chdbPath, Database: ReferenceDatabase,
		StateDir: filepath.Join(h.dir, "state-reference"), Durable: "reference", AckWait: h.o.AckWait,
		BatchSize: h.o.BatchSize, CheckpointEvery: h.o.CheckpointEvery}, "reference")
	if err != nil {
		return nil, err
	}
	defer ref.kill()
	if err := h.waitDrained(ctx, ref); err != nil {
		return nil, err
	}
	rep.ReferenceTime = time.Since(start)
	if err := ref.stop(30 * time.Second); err != nil {
		return nil, err
	}
	h.logf("reference run drained in %v", rep.ReferenceTime.Round(time.Millisecond))

	info, err := h.usageInfo(ctx)
	if err != nil {
		return nil, err
	}
	rep.Stream = info.State.Msgs

	// What ClickHouse holds, read by a query child after every auditor
	// exited: the data path is never open in two processes.
	q, err := Query(ctx, h.o.Child, chdbPath, filepath.Join(h.dir, "query.log"), [2]string{ChaosDatabase, ReferenceDatabase}, ChaosDatabase, ReferenceDatabase)
	if err != nil {
		return nil, err
	}
	rep.Chaos, rep.Reference = q.Databases[ChaosDatabase], q.Databases[ReferenceDatabase]
	rep.Foreign, rep.Missing = q.OnlyInFirst, q.OnlyInSecond
	rep.Lost = max(0, rep.Events-int(rep.Chaos.Distinct))
	rep.Duplicates = int(rep.Chaos.Rows) - int(rep.Chaos.Distinct)
	rep.MissedAnomalies, rep.ExtraAnomalies = diffAnomalies(rep.Reference.Anomalies, rep.Chaos.Anomalies)
	return rep, nil
}

// publish sends the events in order, paced over PublishOver, each with its
// id as the message id and retried until acknowledged.
func (h *chaos) publish(ctx context.Context, evs []events.Envelope, payloads [][]byte) error {
	const chunk = 500
	chunks := (len(evs) + chunk - 1) / chunk
	every := h.o.PublishOver / time.Duration(chunks)
	next := time.Now()
	for lo := 0; lo < len(evs); lo += chunk {
		hi := min(lo+chunk, len(evs))
		if err := h.publishChunk(ctx, evs[lo:hi], payloads[lo:hi]); err != nil {
			return err
		}
		next = next.Add(every)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
	return nil
}

func (h *chaos) publishChunk(ctx context.Context, evs []events.Envelope, payloads [][]byte) error {
	futs := make([]jetstream.PubAckFuture, len(evs))
	for i := range evs {
		f, err := h.js.PublishAsync(events.Subject(evs[i]), payloads[i], jetstream.WithMsgID(evs[i].MsgID()))
		if err != nil {
			return fmt.Errorf("publish usage: %w", err)
		}
		futs[i] = f
	}
	for i, f := range futs {
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case err := <-f.Err():
			// Retried with the same id: JetStream de-duplicates.
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			a, err2 := h.js.Publish(pctx, events.Subject(evs[i]), payloads[i], jetstream.WithMsgID(evs[i].MsgID()))
			cancel()
			if err2 != nil {
				return fmt.Errorf("publish usage (after %v): %w", err, err2)
			}
			ack = a
		case <-ctx.Done():
			return ctx.Err()
		}
		h.lastSeq = max(h.lastSeq, ack.Sequence)
	}
	return nil
}

func (h *chaos) startAuditor(ctx context.Context, cfg childConfig, name string) (*proc, error) {
	p, err := startProc(h.o.Child, ChildAuditor, name, cfg, filepath.Join(h.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, 60*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// killAt waits until the child has written a batch and analysed USAGE up
// to stream sequence seq (its partitions are read by ordered consumers,
// its progress is its own: the child's stats), then, after a random
// pause, kills it, preferably while it holds analysed usage whose rows
// are not written yet. It reports whether it did, and the child's stats
// just before the kill.
func (h *chaos) killAt(ctx context.Context, p *proc, seq uint64) (bool, childStats, error) {
	err := poll(ctx, 2*time.Minute, 5*time.Millisecond, func() error {
		if !p.running() {
			return fmt.Errorf("%s exited on its own: %s", p.name, p.failure())
		}
		st := p.Stats()
		if st.Batches == 0 {
			return fmt.Errorf("%s: no batch written yet", p.name)
		}
		if st.SeenSeq < seq {
			return fmt.Errorf("%s: analysed up to %d, waiting for %d", p.name, st.SeenSeq, seq)
		}
		return nil
	})
	if err != nil {
		return false, childStats{}, err
	}
	pause := time.Duration(h.rng.Int64N(int64(300 * time.Millisecond)))
	select {
	case <-ctx.Done():
		return false, childStats{}, ctx.Err()
	case <-time.After(pause):
	}
	var last childStats
	deadline := time.Now().Add(time.Second)
	for {
		last = p.Stats()
		if last.SeenSeq > last.LastSeq || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !p.kill() {
		return false, last, fmt.Errorf("%s was not killed by SIGKILL (%v): %s", p.name, p.waitErr, p.failure())
	}
	return last.SeenSeq > last.LastSeq, last, nil
}

// waitDrained waits until the child has written every message of USAGE.
func (h *chaos) waitDrained(ctx context.Context, p *proc) error {
	return poll(ctx, 10*time.Minute, 20*time.Millisecond, func() error {
		if !p.running() {
			return fmt.Errorf("%s exited: %s", p.name, p.failure())
		}
		if st := p.Stats(); st.LastSeq < h.lastSeq {
			return fmt.Errorf("%s: written up to %d of %d", p.name, st.LastSeq, h.lastSeq)
		}
		return nil
	})
}

func (h *chaos) usageInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, err := h.js.Stream(ctx, events.StreamUsage)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// Query starts a query child on the chDB data path and returns what the
// databases hold; crossCheck compares the usage event ids of two of them.
func Query(ctx context.Context, c Command, chdbPath, logPath string, crossCheck [2]string, dbs ...string) (*QueryResult, error) {
	p, err := startProc(c, ChildQuery, "query", childConfig{ChDBPath: chdbPath, Databases: dbs, CrossCheck: crossCheck}, logPath)
	if err != nil {
		return nil, err
	}
	defer p.kill()
	t := time.NewTimer(5 * time.Minute)
	defer t.Stop()
	select {
	case res := <-p.result:
		if err := p.stop(30 * time.Second); err != nil {
			return nil, err
		}
		for _, db := range dbs {
			if res.Databases[db] == nil {
				return nil, fmt.Errorf("query: no result for database %s", db)
			}
		}
		return res, nil
	case <-p.exited:
		p.mu.Lock()
		own := p.err
		p.mu.Unlock()
		if own != "" {
			return nil, fmt.Errorf("query: %s", own)
		}
		return nil, fmt.Errorf("query (%s): %w; %s", p.exitStatus(), ErrNoChildMain, p.failure())
	case <-t.C:
		return nil, errors.New("query: no result after 5m")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// diffAnomalies returns the anomalies of want missing from got, and those
// of got that want lacks.
func diffAnomalies(want, got []AnomalyRef) (missed, extra []AnomalyRef) {
	in := func(list []AnomalyRef) map[string]bool {
		m := make(map[string]bool, len(list))
		for _, a := range list {
			m[a.ID] = true
		}
		return m
	}
	w, g := in(want), in(got)
	for _, a := range want {
		if !g[a.ID] {
			missed = append(missed, a)
		}
	}
	for _, a := range got {
		if !w[a.ID] {
			extra = append(extra, a)
		}
	}
	sort.Slice(missed, func(i, j int) bool { return missed[i].ID < missed[j].ID })
	sort.Slice(extra, func(i, j int) bool { return extra[i].ID < extra[j].ID })
	return missed, extra
}

// ByDetector counts anomalies per detector, as "detector=n" sorted.
func ByDetector(list []AnomalyRef) string {
	m := map[string]int{}
	for _, a := range list {
		m[a.Detector]++
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += " "
		}
		s += k + "=" + strconv.Itoa(m[k])
	}
	return s
}
