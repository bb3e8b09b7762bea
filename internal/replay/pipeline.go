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
	// Auditor tunes the auditor service (BatchSize, BatchWait, Writers,
	// Source…); its NATS, store, detectors, state directory and Log are
	// set by Start.
	Auditor auditor.Config
	// MemoryStreams keeps the streams in memory instead of files.
	MemoryStreams bool
	// DeferAuditor leaves the auditor stopped until StartAuditor (to
	// publish a backlog first); Store, Detector and Auditor are nil until
	// then.
	DeferAuditor bool
	// Log receives the components' logs.
	Log zerolog.Logger
}

// Pipeline is a running embedded pipeline: JetStream and the auditor
// service (services/auditor) with its detectors and store. It is the real
// thing, in one process.
type Pipeline struct {
	Server *natsrun.Server
	// NC and JS are the publisher's connection; the auditor has its own.
	NC       *nats.Conn
	JS       jetstream.JetStream
	Store    *store.Store
	Detector *detect.Engine
	Auditor  *auditor.Auditor

	dir       string
	tempDir   bool
	rdir      *Dir      // the replay directory (Dir set)
	notBefore time.Time // the end of the replay continued
	audCfg    auditor.Config
	aud       *auditor.Service
}

// Start starts an embedded pipeline. Close stops it. With a Dir, the
// caller records the outcome of its replay with Finish before Close;
// otherwise the directory counts the replay as unfinished.
func Start(ctx context.Context, o PipelineOptions) (p *Pipeline, err error) {
	p = &Pipeline{dir: o.Dir}
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
	c := o.Auditor
	c.NATS = natsconn.Config{URL: p.Server.ClientURL(), Name: "cordon-replay-auditor",
		Options: []nats.Option{nats.InProcessServer(p.Server.Server)}}
	c.NoAnalystAPI, c.Backend, c.Detectors, c.Log = true, open, o.Detectors, o.Log
	c.StateDir = filepath.Join(p.dir, stateSubdir)
	if c.Source == "" {
		c.Source = "auditor/replay"
	}
	p.audCfg = c
	if !o.DeferAuditor {
		if err = p.StartAuditor(ctx); err != nil {
			return p, err
		}
	}
	return p, nil
}

// StartAuditor starts the auditor of a pipeline started with
// DeferAuditor (and sets Store, Detector and Auditor); it does nothing
// when the auditor runs already.
func (p *Pipeline) StartAuditor(ctx context.Context) error {
	if p.aud != nil {
		return nil
	}
	aud, err := auditor.Start(ctx, p.audCfg)
	if err != nil {
		return fmt.Errorf("replay pipeline: %w", err)
	}
	p.aud = aud
	p.Store, p.Detector, p.Auditor = aud.Store(), aud.Detector(), aud.Auditor()
	return nil
}

// Watcher returns the watcher of the pipeline's auditor.
func (p *Pipeline) Watcher() Watcher { return AuditorWatcher{A: p.Auditor} }

// Knowledge is what the auditor's partitions share (nil until the
// auditor started).
func (p *Pipeline) Knowledge() *auditor.Knowledge {
	if p.aud == nil {
		return nil
	}
	return p.aud.Knowledge()
}

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

// Close stops the auditor service (which closes the store) and the
// server, and removes a temporary directory.
func (p *Pipeline) Close() error {
	var errs []error
	if p.aud != nil {
		if err := p.aud.Close(); err != nil {
			errs = append(errs, err)
		}
		p.aud, p.Store, p.Detector, p.Auditor = nil, nil, nil, nil
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
