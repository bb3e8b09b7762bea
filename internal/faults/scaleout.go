package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natscluster"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
)

// Scale-out: the same usage, the same ClickHouse rows and the same
// anomalies whatever the number of auditor instances.
//
// ScaleOut runs a three-node cluster of nats-server processes, one shim
// child that owns chDB and serves the ClickHouse HTTP interface
// (internal/chshim; chDB allows one session per process), and N auditor
// children writing through the chserver backend, as a distributed
// deployment would. Every run gets a fresh cluster and database and the
// very same messages (built once, so batch ids and the event ids derived
// from them are equal in every run).

// PartitionedAuditor says whether services/auditor runs USAGE partitions
// under leases (auditor.Config's lease mode). Until it does, ScaleOut
// publishes per-event usage messages, which today's auditor reads, and
// refuses runs of more than one instance (ErrNoLeaseMode): several of
// today's auditors would each run the detectors over the whole stream.
// Whoever wires lease mode sets it and fills scaleOutLease.
const PartitionedAuditor = true

// ErrNoLeaseMode is returned for a scale-out run of several instances
// while the auditor has no lease mode (PartitionedAuditor).
var ErrNoLeaseMode = errors.New("the auditor has no lease mode yet (auditor.Config cannot share partitions between instances)")

// Child roles of the scale-out harness (EnvChild).
const (
	// ChildShim opens chDB and serves the ClickHouse HTTP interface on
	// it (internal/chshim) until stopped.
	ChildShim = "chshim"
	// ChildScaleAuditor runs an auditor service on a ClickHouse server
	// (the shim) and a NATS cluster, in lease mode when the auditor has
	// one.
	ChildScaleAuditor = "scaleout-auditor"
)

// scaleOutConfig is what a scale-out child is told through EnvConfig.
type scaleOutConfig struct {
	// ChDBPath and AddrFile: the shim's data path, and the file it
	// writes its listening address to before it says it is ready.
	ChDBPath string `json:"chdb_path,omitempty"`
	AddrFile string `json:"addr_file,omitempty"`
	// NATS are the cluster's client URLs; ClickHouse the shim's
	// host:port; Database the run's.
	NATS       []string `json:"nats_urls,omitempty"`
	ClickHouse string   `json:"clickhouse,omitempty"`
	Database   string   `json:"database,omitempty"`
	// StateDir is the instance's state directory; Instance its name among
	// the others (its lease owner's); Partitions the stream's.
	StateDir   string `json:"state_dir,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Partitions int    `json:"partitions,omitempty"`
	// Lease runs the auditor in lease mode; Owns, without it, are the
	// partitions the instance runs (auditor --partitions).
	Lease bool  `json:"lease,omitempty"`
	Owns  []int `json:"owns,omitempty"`
	// CPUProfile, when set, is where the auditor child writes a CPU
	// profile of its life.
	CPUProfile string `json:"cpu_profile,omitempty"`
}

// ScaleOutRunSpec is one run: Instances auditor processes, one of which
// (the second) is killed with SIGKILL mid-run when Kill is set.
//
// A run is live by default: the instances share the partitions by leases,
// hold them before any usage is published, and read the usage while it
// is published, as a deployment reads its fleet's. In a backlog run the
// instances run the partitions given to them by --partitions (partition p
// to instance p mod Instances); once started and idle they are stopped
// (SIGSTOP), every usage message is published, and they are resumed
// (SIGCONT) to catch up, as after an outage: each reads as fast as it can,
// which is the CPU an instance costs per event at capacity. Live, the
// publishing (three nats-server processes storing every message three
// times) is the bottleneck, every instance waits for usage, and each
// message wakes an instance that handles 1/Instances of the stream's
// messages: the more instances, the fewer events a wake-up handles.
type ScaleOutRunSpec struct {
	Instances int
	Kill      bool
	Backlog   bool
}

// String names the run ("n4+kill", "n2+backlog").
func (s ScaleOutRunSpec) String() string {
	switch {
	case s.Kill:
		return fmt.Sprintf("n%d+kill", s.Instances)
	case s.Backlog:
		return fmt.Sprintf("n%d+backlog", s.Instances)
	}
	return fmt.Sprintf("n%d", s.Instances)
}

// ScaleOutOptions configures ScaleOut.
type ScaleOutOptions struct {
	// Child starts the children (SelfCommand()).
	Child Command
	// Events is the number of usage events (default 20,000) from a
	// pkg/simulate scenario with attacks; Seed its seed (default 1).
	Events int
	Seed   uint64
	// Runs are compared with the first (default n1, n2, n4, n4+kill).
	Runs []ScaleOutRunSpec
	// Dir holds the chDB data path, the children's state and logs.
	Dir string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
	// IdleWindow, when set, is how long every instance is watched idle
	// (its partitions held, no usage yet) to learn its idle CPU rate
	// (InstanceReport.IdleRate). The window starts IdleWindow/2 after
	// every instance held its partitions: the runners' start-up (their
	// consumers, their restored state) is not idling.
	IdleWindow time.Duration
	// CPUProfiles, when set, is a directory where every auditor process
	// writes a CPU profile of its life, <run>-<instance>.pprof (go tool
	// pprof reads them).
	CPUProfiles string
	// Shared runs several instances without lease mode: today's auditors
	// share one durable consumer (the rows split between them) and each
	// runs the detectors over the whole stream. It exercises the harness
	// (several children, the kill) before lease mode exists; its anomaly
	// rows are not those of one instance.
	Shared bool
}

// ScaleOutReport is what ScaleOut measured.
type ScaleOutReport struct {
	// Events were published as Messages (usage batches when Batches).
	Events, Messages int
	Batches          bool
	Runs             []*ScaleOutRun
}

// ScaleOutRun is what one run left.
type ScaleOutRun struct {
	ScaleOutRunSpec
	// Database held the run's rows; it is dropped once they are compared
	// with the first run's, unless this is the first run.
	Database string
	Contents *DBContents
	// Lost are events missing from the run's rows; Duplicates stored
	// rows beyond one per event id (raw rows, before any merge).
	Lost, Duplicates int
	// Foreign are event ids the first run lacks, Missing the converse;
	// MissedAnomalies and ExtraAnomalies likewise, by anomaly id.
	Foreign, Missing                uint64
	MissedAnomalies, ExtraAnomalies []AnomalyRef
	// Instances are the auditor processes.
	Instances []InstanceReport
	// Victim is the killed instance; VictimPartitions the partitions it
	// held; Reowned says every one of them had another owner afterwards.
	// MidRun says the victim had not caught up with the stream when it
	// was killed (its last reported sequence was below the last one).
	Victim           string
	VictimPartitions []int
	Reowned, MidRun  bool
	// Time is from the first instance started to the last row written;
	// WorkTime from the first usage published (a backlog run: from the
	// instances' resumption) to the last row written; ShimCPU the CPU time
	// ClickHouse (the shim child, chDB) spent over Time.
	Time, WorkTime, ShimCPU time.Duration
}

// InstanceReport is one auditor process of a run.
type InstanceReport struct {
	Name   string
	PID    int
	Killed bool
	// Events are the usage rows it wrote; CPU its CPU time (procCPU)
	// when it stopped or was killed; StartCPU the same when the first
	// usage was published (start-up, migrations and the hand-out of the
	// leases; in a backlog run, when it was stopped before the
	// publishing).
	Events   uint64
	CPU      time.Duration
	StartCPU time.Duration
	// IdleRate is its CPU time per second of wall time while it held its
	// partitions and no usage came (ScaleOutOptions.IdleWindow; 0
	// without); Work the wall time from the first usage published (in a
	// backlog run, from its resumption) to its stop or kill.
	IdleRate float64
	Work     time.Duration
}

// CPUPerEvent is the instance's CPU time per usage row it wrote, over
// its whole life (start-up included).
func (i InstanceReport) CPUPerEvent() time.Duration {
	if i.Events == 0 {
		return 0
	}
	return i.CPU / time.Duration(i.Events)
}

// WorkCPUPerEvent is the instance's CPU time per usage row it wrote from
// the first usage published to its stop: the work, without the start-up
// every instance pays once whatever its share (idle polling while it
// waits for usage is still in).
func (i InstanceReport) WorkCPUPerEvent() time.Duration {
	if i.Events == 0 {
		return 0
	}
	return (i.CPU - i.StartCPU) / time.Duration(i.Events)
}

// NetCPUPerEvent is WorkCPUPerEvent without what the instance spends
// idle at the same rate over the same wall time (polling, lease
// heartbeats): the CPU its events cost it.
func (i InstanceReport) NetCPUPerEvent() time.Duration {
	if i.Events == 0 {
		return 0
	}
	idle := time.Duration(i.IdleRate * float64(i.Work))
	return max(i.CPU-i.StartCPU-idle, 0) / time.Duration(i.Events)
}

// CPUPerEvent is every instance's CPU time over the run's events.
func (r *ScaleOutRun) CPUPerEvent(events int) time.Duration {
	var cpu time.Duration
	for _, i := range r.Instances {
		cpu += i.CPU
	}
	if events == 0 {
		return 0
	}
	return cpu / time.Duration(events)
}

// WorkCPUPerEvent is every instance's CPU time from the first usage
// published over the run's events.
func (r *ScaleOutRun) WorkCPUPerEvent(events int) time.Duration {
	var cpu time.Duration
	for _, i := range r.Instances {
		cpu += i.CPU - i.StartCPU
	}
	if events == 0 {
		return 0
	}
	return cpu / time.Duration(events)
}

// NetCPUPerEvent is every instance's CPU time from the first usage
// published less its idling (InstanceReport.NetCPUPerEvent), summed, over
// the usage rows they wrote together: the mean of the instances' own
// figures weighted by their events, where an instance with a small share
// does not count as much as one with a large share.
func (r *ScaleOutRun) NetCPUPerEvent() time.Duration {
	var cpu time.Duration
	var events uint64
	for _, i := range r.Instances {
		cpu += i.NetCPUPerEvent() * time.Duration(i.Events)
		events += i.Events
	}
	if events == 0 {
		return 0
	}
	return cpu / time.Duration(events)
}

// String is one line per figure.
func (r *ScaleOutRun) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: rows %d, distinct %d, raw %d, anomalies %d; lost %d, duplicates %d, foreign %d, missing %d, anomalies missed %d, extra %d; %v (%v from the first usage or the resumption)",
		r.ScaleOutRunSpec, r.Contents.Rows, r.Contents.Distinct, r.Contents.RawRows, len(r.Contents.Anomalies),
		r.Lost, r.Duplicates, r.Foreign, r.Missing, len(r.MissedAnomalies), len(r.ExtraAnomalies), r.Time.Round(time.Millisecond), r.WorkTime.Round(time.Millisecond))
	if r.Victim != "" {
		fmt.Fprintf(&b, "; killed %s (mid-run %v) holding %v, re-owned %v", r.Victim, r.MidRun, r.VictimPartitions, r.Reowned)
	}
	fmt.Fprintf(&b, "\n   chshim (ClickHouse): CPU %v", r.ShimCPU.Round(time.Millisecond))
	for _, i := range r.Instances {
		fmt.Fprintf(&b, "\n   %s pid %d: %d events, CPU %v (%v at the first usage; idle %.1f ms/s over %v of work), %.2f µs/event (%.2f without start-up, %.2f without idling)", i.Name, i.PID, i.Events,
			i.CPU.Round(time.Millisecond), i.StartCPU.Round(time.Millisecond), 1000*i.IdleRate, i.Work.Round(time.Millisecond),
			float64(i.CPUPerEvent().Nanoseconds())/1e3, float64(i.WorkCPUPerEvent().Nanoseconds())/1e3, float64(i.NetCPUPerEvent().Nanoseconds())/1e3)
		if i.Killed {
			b.WriteString(" (killed)")
		}
	}
	return b.String()
}

// scaleOutMsg is one usage message, built once for every run.
type scaleOutMsg struct {
	subject, id string
	data        []byte
}

// ScaleOut publishes the same simulated usage (with attacks) to a fresh
// three-node cluster for every run, runs the run's auditor processes on
// one ClickHouse (the shim child), polls until every event is written and
// every instance caught up, and compares each run's rows and anomalies
// with the first run's. Set-up problems fail tb or return an error; the
// outcome is in the report for the caller to judge.
func ScaleOut(ctx context.Context, tb testing.TB, o ScaleOutOptions) (*ScaleOutReport, error) {
	tb.Helper()
	if os.Getenv(EnvChild) != "" {
		return nil, ErrNested
	}
	if o.Child.Path == "" {
		return nil, errors.New("scale-out: no child command")
	}
	if o.Events <= 0 {
		o.Events = 20_000
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if len(o.Runs) == 0 {
		o.Runs = []ScaleOutRunSpec{{Instances: 1}, {Instances: 2}, {Instances: 4}, {Instances: 4, Kill: true}}
	}
	for _, r := range o.Runs {
		switch {
		case r.Instances < 1 || r.Instances > 16:
			return nil, fmt.Errorf("scale-out run %s: want 1 to 16 instances", r)
		case r.Kill && r.Instances < 2:
			return nil, fmt.Errorf("scale-out run %s: a kill needs a survivor", r)
		case r.Kill && r.Backlog:
			return nil, fmt.Errorf("scale-out run %s: a kill takes the victim's partitions over by leases, which a backlog run does not use", r)
		case r.Instances > 1 && !PartitionedAuditor && !o.Shared:
			return nil, fmt.Errorf("scale-out run %s: %w", r, ErrNoLeaseMode)
		}
	}
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	h := &scaleOut{tb: tb, o: o, began: time.Now()}
	return h.run(ctx)
}

type scaleOut struct {
	tb    testing.TB
	o     ScaleOutOptions
	began time.Time
	shim  string // host:port
	http  http.Client
}

func (h *scaleOut) logf(format string, args ...any) {
	fmt.Fprintf(h.o.Progress, "   %6.1fs "+format+"\n", append([]any{time.Since(h.began).Seconds()}, args...)...)
}

func (h *scaleOut) run(ctx context.Context) (*ScaleOutReport, error) {
	evs, err := SimulatedUsage(h.o.Seed, h.o.Events)
	if err != nil {
		return nil, err
	}
	msgs, err := scaleOutMessages(evs, PartitionedAuditor)
	if err != nil {
		return nil, err
	}
	rep := &ScaleOutReport{Events: len(evs), Messages: len(msgs), Batches: PartitionedAuditor}
	h.logf("%d usage events as %d messages (batches: %v)", len(evs), len(msgs), rep.Batches)

	addrFile := filepath.Join(h.o.Dir, "shim.addr")
	shim, err := startProc(h.o.Child, ChildShim, "chshim", scaleOutConfig{ChDBPath: filepath.Join(h.o.Dir, "chdb"), AddrFile: addrFile},
		filepath.Join(h.o.Dir, "chshim.log"))
	if err != nil {
		return nil, err
	}
	defer shim.kill()
	if err := shim.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(addrFile)
	if err != nil {
		return nil, fmt.Errorf("shim address: %w", err)
	}
	h.shim = strings.TrimSpace(string(b))
	h.logf("chshim (pid %d) serves chDB at %s", shim.cmd.Process.Pid, h.shim)

	for i, spec := range h.o.Runs {
		before, _ := procCPU(shim.cmd.Process.Pid)
		r, err := h.runOne(ctx, i, spec, msgs)
		if err != nil {
			return nil, fmt.Errorf("scale-out run %s: %w", spec, err)
		}
		after, _ := procCPU(shim.cmd.Process.Pid)
		r.ShimCPU = after - before
		rep.Runs = append(rep.Runs, r)
		if err := h.judge(ctx, rep, r); err != nil {
			return nil, err
		}
	}
	if err := shim.stop(time.Minute); err != nil {
		return nil, err
	}
	return rep, nil
}

// judge reads run r's rows and anomalies and compares them with the first
// run's, then drops r's database unless r is the first: ClickHouse would
// otherwise go on merging every earlier run's tables in the background,
// beside the auditors of the later runs, which then measured up to a
// third more CPU per event than the same run did first.
func (h *scaleOut) judge(ctx context.Context, rep *ScaleOutReport, r *ScaleOutRun) error {
	var err error
	if r.Contents, err = h.contents(ctx, r.Database); err != nil {
		return err
	}
	r.Lost = max(0, rep.Events-int(r.Contents.Distinct))
	r.Duplicates = int(r.Contents.RawRows) - int(r.Contents.Distinct)
	first := rep.Runs[0]
	if r == first {
		return nil
	}
	if r.Foreign, err = h.scalar(ctx, onlyIn(r.Database, first.Database)); err != nil {
		return err
	}
	if r.Missing, err = h.scalar(ctx, onlyIn(first.Database, r.Database)); err != nil {
		return err
	}
	r.MissedAnomalies, r.ExtraAnomalies = diffAnomalies(first.Contents.Anomalies, r.Contents.Anomalies)
	if _, err := h.query(ctx, "DROP DATABASE `"+r.Database+"`"); err != nil {
		return fmt.Errorf("scale-out run %s: %w", r.ScaleOutRunSpec, err)
	}
	return nil
}

// runOne runs one spec on a fresh cluster.
func (h *scaleOut) runOne(ctx context.Context, idx int, spec ScaleOutRunSpec, msgs []scaleOutMsg) (*ScaleOutRun, error) {
	r := &ScaleOutRun{ScaleOutRunSpec: spec, Database: fmt.Sprintf("scaleout_%d_%s", idx, strings.ReplaceAll(spec.String(), "+", "_"))}
	c := natscluster.Start(h.tb, natscluster.Options{})
	defer c.StopAll()
	_, js := c.Connect(h.tb)
	parts, err := streamPartitions(ctx, js)
	if err != nil {
		return nil, err
	}
	h.logf("%s: cluster up (%d partitions)", spec, parts)
	lease := PartitionedAuditor && !spec.Backlog

	start := time.Now()
	procs := make([]*proc, spec.Instances)
	names := make([]string, spec.Instances)
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.kill()
			}
		}
	}()
	for i := range procs {
		names[i] = fmt.Sprintf("run%d-%d", idx, i)
		cfg := scaleOutConfig{NATS: c.URLsFrom(i % len(c.Nodes)), ClickHouse: h.shim, Database: r.Database,
			StateDir: filepath.Join(h.o.Dir, names[i]), Instance: names[i], Partitions: parts, Lease: lease}
		if spec.Backlog {
			for p := i; p < parts; p += spec.Instances {
				cfg.Owns = append(cfg.Owns, p)
			}
		}
		if h.o.CPUProfiles != "" {
			cfg.CPUProfile = filepath.Join(h.o.CPUProfiles, strings.ReplaceAll(spec.String(), "+", "-")+"-"+names[i]+".pprof")
		}
		p, err := startProc(h.o.Child, ChildScaleAuditor, names[i], cfg, filepath.Join(h.o.Dir, names[i]+".log"))
		if err != nil {
			return nil, err
		}
		procs[i] = p
	}
	for _, p := range procs {
		if err := p.waitReady(ctx, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	if lease {
		// Every instance holds its share before any usage arrives, so
		// each one does its part of the work (and the victim has some).
		err := poll(ctx, 5*time.Minute, 50*time.Millisecond, func() error {
			owners, err := leaseOwners(ctx, js)
			if err != nil {
				return err
			}
			held := map[string]int{}
			for p := range parts {
				if owners[p] == "" {
					return fmt.Errorf("partition %d has no owner", p)
				}
				held[owners[p]]++
			}
			for _, n := range names {
				if held[n] == 0 || held[n] > (parts+len(names)-1)/len(names) {
					return fmt.Errorf("%s holds %d of %d partitions", n, held[n], parts)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Each instance's idle CPU rate, its partitions held and no usage yet.
	idleRate := make([]float64, len(procs))
	if w := h.o.IdleWindow; w > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(w / 2):
		}
		c0 := make([]time.Duration, len(procs))
		for i, p := range procs {
			c0[i], _ = procCPU(p.cmd.Process.Pid)
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(w):
		}
		el := time.Since(t0)
		for i, p := range procs {
			c1, _ := procCPU(p.cmd.Process.Pid)
			idleRate[i] = float64(c1-c0[i]) / float64(el)
		}
	}
	// Each instance's CPU so far is its start-up: the work is measured
	// from here.
	startCPU := make([]time.Duration, len(procs))
	for i, p := range procs {
		startCPU[i], _ = procCPU(p.cmd.Process.Pid)
	}
	workStart := time.Now()
	var killedAfter time.Duration
	// Half the usage now; with a kill, the other half only after the
	// victim is dead, so its partitions have work it never saw.
	var lastSeq uint64
	if spec.Backlog {
		for _, p := range procs {
			if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				return nil, fmt.Errorf("%s: SIGSTOP: %w", p.name, err)
			}
		}
		if lastSeq, err = publishAll(ctx, js, msgs); err != nil {
			return nil, err
		}
		h.logf("%s: every instance stopped (SIGSTOP); all %d messages published (last seq %d); resuming them", spec, len(msgs), lastSeq)
		workStart = time.Now()
		for _, p := range procs {
			if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				return nil, fmt.Errorf("%s: SIGCONT: %w", p.name, err)
			}
		}
	}
	half := len(msgs) / 2
	if !spec.Backlog {
		if lastSeq, err = publishAll(ctx, js, msgs[:half]); err != nil {
			return nil, err
		}
		if !spec.Kill {
			if lastSeq, err = publishAll(ctx, js, msgs[half:]); err != nil {
				return nil, err
			}
		}
		h.logf("%s: %d of %d messages published (last seq %d)", spec, map[bool]int{true: half, false: len(msgs)}[spec.Kill], len(msgs), lastSeq)
	}
	cpu := make([]time.Duration, len(procs))
	if spec.Kill {
		victim := procs[1]
		err := poll(ctx, 10*time.Minute, 20*time.Millisecond, func() error {
			if victim.Stats().Usage == 0 {
				return fmt.Errorf("victim has written nothing yet")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if PartitionedAuditor {
			if r.VictimPartitions, err = leasesOf(ctx, js, names[1]); err != nil {
				return nil, err
			}
		}
		cpu[1], _ = procCPU(victim.cmd.Process.Pid)
		killedAfter = time.Since(workStart)
		if !victim.kill() {
			return nil, fmt.Errorf("%s was not killed by SIGKILL: %s", victim.name, victim.failure())
		}
		r.Victim = names[1]
		h.logf("%s: killed %s (pid %d) after %d events of its own, holding partitions %v", spec, names[1], victim.cmd.Process.Pid, victim.Stats().Usage, r.VictimPartitions)
		if lastSeq, err = publishAll(ctx, js, msgs[half:]); err != nil {
			return nil, err
		}
		r.MidRun = true // its partitions had usage still to come
		h.logf("%s: the other %d messages published (last seq %d)", spec, len(msgs)-half, lastSeq)
		if PartitionedAuditor {
			err := poll(ctx, 10*time.Minute, 50*time.Millisecond, func() error {
				owners, err := leaseOwners(ctx, js)
				if err != nil {
					return err
				}
				for p := range parts {
					if o := owners[p]; o == "" || o == names[1] {
						return fmt.Errorf("partition %d held by %q", p, o)
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			r.Reowned = true
			h.logf("%s: the victim's partitions are re-owned", spec)
		}
	}
	err = poll(ctx, 15*time.Minute, 100*time.Millisecond, func() error {
		for i, p := range procs {
			if spec.Kill && i == 1 {
				continue
			}
			if !p.running() {
				return fmt.Errorf("%s exited: %s", p.name, p.failure())
			}
			if st := p.Stats(); !caughtUp(st, lastSeq) {
				return fmt.Errorf("%s: at seq %d of %d", p.name, st.LastSeq, lastSeq)
			}
		}
		n, err := h.scalar(ctx, "SELECT uniqExact(event_id) FROM `"+r.Database+"`.usage_events_raw")
		if err != nil {
			return err
		}
		if n < uint64(h.o.Events) {
			return fmt.Errorf("%d of %d events written", n, h.o.Events)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Time, r.WorkTime = time.Since(start), time.Since(workStart)
	for i, p := range procs {
		inst := InstanceReport{Name: names[i], PID: p.cmd.Process.Pid, Killed: spec.Kill && i == 1, Events: p.Stats().Usage, CPU: cpu[i], StartCPU: startCPU[i],
			IdleRate: idleRate[i], Work: killedAfter}
		if !inst.Killed {
			inst.CPU, _ = procCPU(inst.PID)
			inst.Work = time.Since(workStart)
			if err := p.stop(time.Minute); err != nil {
				return nil, err
			}
		}
		r.Instances = append(r.Instances, inst)
	}
	h.logf("%s: done in %v", spec, r.Time.Round(time.Millisecond))
	return r, nil
}

// caughtUp reports whether an auditor instance has handled the stream up
// to lastSeq: its rows written and its detectors past it, their anomalies
// durable (today's auditor.Stats.LastUsageSeq, reported as LastSeq).
func caughtUp(st childStats, lastSeq uint64) bool { return st.LastSeq >= lastSeq }

// scaleOutMessages turns usage events into the messages every run
// publishes: per-event messages, or batches per (tenant, enforcer,
// holder) over windows of 1000 events, as enforcers batch within a
// linger.
func scaleOutMessages(evs []events.Envelope, batches bool) ([]scaleOutMsg, error) {
	var out []scaleOutMsg
	if !batches {
		for _, e := range evs {
			data, err := events.Encode(e)
			if err != nil {
				return nil, err
			}
			out = append(out, scaleOutMsg{subject: events.Subject(e), id: e.MsgID(), data: data})
		}
		return out, nil
	}
	const window = 1000
	type key struct{ tenant, enforcer, holder string }
	var b events.UsageBatchBuilder
	for lo := 0; lo < len(evs); lo += window {
		groups := map[key][]int{}
		var order []key
		for i := lo; i < min(lo+window, len(evs)); i++ {
			u, ok := evs[i].Data.(*events.UsageDecided)
			if !ok {
				return nil, fmt.Errorf("event %d is not a usage decision", i)
			}
			k := key{u.Tenant, u.Enforcer, u.Holder}
			if _, seen := groups[k]; !seen {
				order = append(order, k)
			}
			groups[k] = append(groups[k], i)
		}
		for _, k := range order {
			idx := groups[k]
			for len(idx) > 0 {
				if err := b.Reset("enforcer/"+k.enforcer, k.tenant, k.enforcer, k.holder); err != nil {
					return nil, err
				}
				for len(idx) > 0 && !b.Full() {
					e := evs[idx[0]]
					if err := b.Add(e.Time, e.Data.(*events.UsageDecided)); err != nil {
						return nil, err
					}
					idx = idx[1:]
				}
				subject, id, data, err := b.Finish(nil)
				if err != nil {
					return nil, err
				}
				out = append(out, scaleOutMsg{subject: subject, id: id.String(), data: data})
			}
		}
	}
	return out, nil
}

// publishAll publishes msgs with their ids, retrying each until
// acknowledged, and returns the highest stream sequence.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []scaleOutMsg) (uint64, error) {
	var last uint64
	const chunk = 500
	for lo := 0; lo < len(msgs); lo += chunk {
		part := msgs[lo:min(lo+chunk, len(msgs))]
		futs := make([]jetstream.PubAckFuture, len(part))
		for i, m := range part {
			f, err := js.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id))
			if err != nil {
				return 0, fmt.Errorf("publish usage: %w", err)
			}
			futs[i] = f
		}
		for i, f := range futs {
			var ack *jetstream.PubAck
			select {
			case ack = <-f.Ok():
			case err := <-f.Err():
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				a, err2 := js.Publish(pctx, part[i].subject, part[i].data, jetstream.WithMsgID(part[i].id))
				cancel()
				if err2 != nil {
					return 0, fmt.Errorf("publish usage (after %v): %w", err, err2)
				}
				ack = a
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			last = max(last, ack.Sequence)
		}
	}
	return last, nil
}

// streamPartitions is USAGE's partition count (1 for a stream without).
func streamPartitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	var s jetstream.Stream
	err := natsconn.Retry(ctx, zerolog.Nop(), "stream "+events.StreamUsage, func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, events.StreamUsage)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("usage stream: %w", err)
	}
	return max(1, events.UsagePartitionsOf(s.CachedInfo().Config)), nil
}

// leaseOwners reads the partition leases: partition → instance.
// Each call is bounded: a reply lost while the cluster settles must not
// hold up the poll that calls it.
func leaseOwners(ctx context.Context, js jetstream.JetStream) (map[int]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.BucketAuditorLeases)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	out := map[int]string{}
	for k := range lister.Keys() {
		n, ok := strings.CutPrefix(k, "p.")
		if !ok {
			continue
		}
		p, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		out[p] = string(e.Value())
	}
	return out, nil
}

// leasesOf lists the partitions instance holds.
func leasesOf(ctx context.Context, js jetstream.JetStream, instance string) ([]int, error) {
	owners, err := leaseOwners(ctx, js)
	if err != nil {
		return nil, err
	}
	var out []int
	for p, o := range owners {
		if o == instance {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// onlyIn counts the usage event ids of database a that b lacks.
func onlyIn(a, b string) string {
	return "SELECT count() FROM (SELECT DISTINCT event_id FROM `" + a + "`.usage_events_raw) " +
		"WHERE event_id NOT IN (SELECT event_id FROM `" + b + "`.usage_events_raw)"
}

// procCPU is the CPU time a process has used. It is the sum of its
// threads' time on a CPU from /proc/<pid>/task/*/schedstat, in
// nanoseconds, where /proc/<pid>/stat counts clock ticks of 10 ms: a tick
// is about 5 % of what a scale-out instance spends on its events, and
// subtracting an idle rate measured in ticks over two seconds was off by
// up to 15 %. A thread that has exited is not in the task list; when the
// ticks exceed the threads' sum by more than two ticks, the ticks are
// returned instead.
func procCPU(pid int) (time.Duration, error) {
	ticks, err := procStatCPU(pid)
	if err != nil {
		return 0, err
	}
	threads, err := procThreadsCPU(pid)
	if err != nil || ticks > threads+2*tick {
		return ticks, nil
	}
	return threads, nil
}

// tick is a clock tick of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const tick = 10 * time.Millisecond

// procStatCPU is a process's user and system time from /proc/<pid>/stat,
// in clock ticks.
func procStatCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// Fields 14 and 15 of stat (utime, stime); f[0] is field 3.
	var ticks uint64
	for _, x := range f[11:13] {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * tick, nil
}

// procThreadsCPU sums the first field of /proc/<pid>/task/*/schedstat:
// each live thread's time on a CPU, in nanoseconds.
func procThreadsCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited since the listing
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat: empty", dir, t.Name())
		}
		ns, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// query runs a statement on the shim (ClickHouse's HTTP interface) and
// returns its TabSeparated output.
func (h *scaleOut) query(ctx context.Context, q string) (string, error) {
	u := "http://" + h.shim + "/?" + url.Values{"default_format": {"TabSeparated"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(q))
	if err != nil {
		return "", err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", q, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func (h *scaleOut) scalar(ctx context.Context, q string) (uint64, error) {
	out, err := h.query(ctx, q)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	return n, nil
}

// contents reads what a run's database holds.
func (h *scaleOut) contents(ctx context.Context, db string) (*DBContents, error) {
	var c DBContents
	out, err := h.query(ctx, "SELECT count(), uniqExact(event_id) FROM `"+db+"`.usage_events")
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Sscan(out, &c.Rows, &c.Distinct); err != nil {
		return nil, fmt.Errorf("usage rows of %s: %q: %w", db, out, err)
	}
	if c.RawRows, err = h.scalar(ctx, "SELECT count() FROM `"+db+"`.usage_events_raw"); err != nil {
		return nil, err
	}
	if c.AnomalyRows, err = h.scalar(ctx, "SELECT count() FROM `"+db+"`.anomalies"); err != nil {
		return nil, err
	}
	if out, err = h.query(ctx, "SELECT anomaly_id, toString(detector), token_id FROM `"+db+"`.anomalies ORDER BY anomaly_id"); err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("anomalies of %s: line %q", db, line)
		}
		c.Anomalies = append(c.Anomalies, AnomalyRef{ID: f[0], Detector: f[1], TokenID: f[2]})
	}
	return &c, nil
}
