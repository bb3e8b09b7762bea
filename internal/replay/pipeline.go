package replay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// PipelineOptions configure a private embedded pipeline.
type PipelineOptions struct {
	// Dir holds the pipeline's data (JetStream, chDB, detector state) and
	// the record of the replays into it (RecordFile); it is created when
	// missing, and a directory that is neither empty nor a replay
	// directory is refused (ErrNotReplayDir). The pipeline holds its lock
	// until Close (ErrDirBusy for another). Empty means a temporary
	// directory that Close removes.
	Dir string
	// Reuse says what to do when Dir holds a previous replay: refuse it
	// (the zero value, ErrDirInUse), replace it or continue it.
	Reuse DirMode
	// Input names the input in the directory's record.
	Input string
	// Detectors are the thresholds (nil: detect.DefaultConfig()).
	Detectors *detect.Config
	// Backend opens the store's engine. Nil opens chDB in Dir/chdb with
	// database "replay" (an error in a build without chDB). chDB holds one
	// data path per process: a process that already uses chDB elsewhere
	// passes a Backend on that path.
	Backend func(ctx context.Context) (store.Backend, error)
	// Auditor tunes the auditor (BatchSize, BatchWait, Writers…); JS,
	// Store, Detector, StateDir and Log are set by Start.
	Auditor auditor.Options
	// MemoryStreams keeps the streams in memory instead of files.
	MemoryStreams bool
	// DeferAuditor leaves the auditor stopped until StartAuditor (to
	// publish a backlog first).
	DeferAuditor bool
	// Log receives the components' logs.
	Log zerolog.Logger
}

// Pipeline is a running embedded pipeline: JetStream, an auditor with its
// detectors, and the store. It is the real thing, in one process.
type Pipeline struct {
	Server   *natsrun.Server
	NC       *nats.Conn
	JS       jetstream.JetStream
	Store    *store.Store
	Detector *detect.Engine
	Auditor  *auditor.Auditor

	dir       string
	tempDir   bool
	rdir      *Dir      // the replay directory (Dir set)
	notBefore time.Time // the end of the replay continued
	cancel    context.CancelFunc
	done      chan error
}

// Start starts an embedded pipeline. Close stops it. With a Dir, the
// caller records the outcome of its replay with Finish before Close;
// otherwise the directory counts the replay as unfinished.
func Start(ctx context.Context, o PipelineOptions) (p *Pipeline, err error) {
	p = &Pipeline{dir: o.Dir, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			if p.rdir != nil {
				_ = p.rdir.abandon() // nothing was replayed
			}
			p.Close()
		}
	}()
	if p.dir == "" {
		if p.dir, err = os.MkdirTemp("", "cordon-replay-"); err != nil {
			return p, fmt.Errorf("replay pipeline: %w", err)
		}
		p.tempDir = true
	} else {
		if err = os.MkdirAll(p.dir, 0o700); err != nil {
			return p, fmt.Errorf("replay pipeline: %w", err)
		}
		if p.rdir, err = openDir(p.dir); err != nil {
			return p, err
		}
		var st *DirStore
		if o.Backend == nil {
			st = &DirStore{CHDB: chdbSubdir, Database: chdbDatabase}
		}
		if err = p.rdir.prepare(o.Reuse, o.Input, st); err != nil {
			p.rdir.Close()
			p.rdir = nil
			return p, err
		}
		if o.Reuse == DirContinue && len(p.rdir.Record.Runs) > 1 {
			p.notBefore = p.rdir.Record.LastEvent()
		}
	}
	if p.Server, err = natsrun.Start(natsrun.Options{DataDir: filepath.Join(p.dir, natsSubdir), Port: -1, ServerName: "cordon-replay"}); err != nil {
		return p, err
	}
	if p.NC, err = p.Server.Connect("cordon-replay"); err != nil {
		return p, err
	}
	if p.JS, err = jetstream.New(p.NC, jetstream.WithPublishAsyncMaxPending(publishWindow)); err != nil {
		return p, fmt.Errorf("replay pipeline: jetstream: %w", err)
	}
	if err = natsconn.Ensure(ctx, p.JS, events.StreamOptions{Memory: o.MemoryStreams}); err != nil {
		return p, err
	}
	open := o.Backend
	if open == nil {
		open = func(ctx context.Context) (store.Backend, error) {
			return defaultBackend(ctx, filepath.Join(p.dir, chdbSubdir), chdbDatabase)
		}
	}
	b, err := open(ctx)
	if err != nil {
		return p, fmt.Errorf("replay pipeline: open store: %w", err)
	}
	if p.Store, err = store.Open(ctx, b, store.Options{Logger: o.Log}); err != nil {
		_ = b.Close()
		return p, err
	}
	cfg := detect.DefaultConfig()
	if o.Detectors != nil {
		cfg = *o.Detectors
	}
	if p.Detector, err = detect.New(cfg); err != nil {
		return p, err
	}
	ao := o.Auditor
	ao.JS, ao.Store, ao.Detector, ao.Log = p.JS, p.Store, p.Detector, o.Log
	ao.StateDir = filepath.Join(p.dir, stateSubdir)
	if ao.Source == "" {
		ao.Source = "auditor/replay"
	}
	if p.Auditor, err = auditor.New(ao); err != nil {
		return p, err
	}
	if !o.DeferAuditor {
		p.StartAuditor()
	}
	return p, nil
}

// StartAuditor starts the auditor of a pipeline started with DeferAuditor;
// it does nothing when the auditor runs already.
func (p *Pipeline) StartAuditor() {
	if p.cancel != nil {
		return
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- p.Auditor.Run(runCtx) }()
}

// Watcher returns the watcher of the pipeline's auditor.
func (p *Pipeline) Watcher() Watcher { return AuditorWatcher{A: p.Auditor} }

// Dir is the pipeline's data directory.
func (p *Pipeline) Dir() string { return p.dir }

// NotBefore is the earliest event time a replay may publish into the
// pipeline: the last event time of the replay it continues (DirContinue),
// zero otherwise. Pass it as Options.NotBefore.
func (p *Pipeline) NotBefore() time.Time { return p.notBefore }

// Finish records the outcome of the replay in the replay directory (Dir
// set): what Run returned. It does nothing for a temporary directory.
func (p *Pipeline) Finish(res *Result, runErr error) error {
	if p.rdir == nil {
		return nil
	}
	return p.rdir.finish(res, runErr)
}

// Close stops the auditor and the server, closes the store and removes a
// temporary directory.
func (p *Pipeline) Close() error {
	var errs []error
	if p.cancel != nil {
		p.cancel()
		select {
		case err := <-p.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("auditor: %w", err))
			}
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("auditor: did not stop within 30s"))
		}
		p.cancel = nil
	}
	if p.Store != nil {
		if err := p.Store.Close(); err != nil {
			errs = append(errs, err)
		}
		p.Store = nil
	}
	if p.NC != nil {
		p.NC.Close()
		p.NC = nil
	}
	if p.Server != nil {
		p.Server.Stop()
		p.Server = nil
	}
	if p.tempDir {
		if err := os.RemoveAll(p.dir); err != nil {
			errs = append(errs, err)
		}
		p.tempDir = false
	}
	if p.rdir != nil {
		p.rdir.Close()
		p.rdir = nil
	}
	return errors.Join(errs...)
}
