package replay

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cordonhq/cordon/pkg/store"
)

// OpenStore opens the chDB store that a replay kept in the replay
// directory dir, for analysts' queries (`cordon sql --replay-dir`): in this
// process, with o's limits, queried through the store's read-only gate as
// the auditor would query it. It holds the directory's lock, so that no
// replay writes meanwhile, until closeStore; chDB holds one data path per
// process, so a process that already uses chDB elsewhere cannot open one.
// notice, when set, is told when the store may be incomplete (the last
// replay into the directory did not finish, or failed).
func OpenStore(ctx context.Context, dir string, o store.Options, notice func(string)) (s *store.Store, closeStore func(), err error) {
	d, err := OpenDir(dir)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	path, db, ok := d.Store()
	if !ok {
		return nil, nil, fmt.Errorf("%s: the replay kept its store outside the directory", dir)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("%s holds no store yet (%s)", dir, d.Describe())
	}
	if last := d.Record.Last(); notice != nil && last != nil && (last.Finished.IsZero() || last.Error != "") {
		notice("the store may be incomplete: " + d.Describe())
	}
	b, err := defaultBackend(ctx, path, db)
	if err != nil {
		return nil, nil, err
	}
	// A replay writes usage through the auditor's pipeline, every insert
	// under a de-duplication token (as the auditor's store options say).
	o.TokenInserts = true
	if s, err = store.Open(ctx, b, o); err != nil {
		_ = b.Close()
		return nil, nil, err
	}
	return s, func() { s.Close(); d.Close() }, nil
}

// Query runs an analyst's query on the store that a replay kept in dir
// (OpenStore), within timeout, under the store's read-only gate and limits
// (the engine's own time limit is timeout, between a second and
// store.MaxQueryTimeout), as the auditor would run it; the replay that
// wrote the store must have ended (the directory's lock says so). notice
// is OpenStore's. An error opening the store names the directory.
func Query(ctx context.Context, dir, query string, timeout time.Duration, notice func(string)) (*store.Result, error) {
	s, closeStore, err := OpenStore(ctx, dir, store.Options{QueryTimeout: min(max(timeout, time.Second), store.MaxQueryTimeout)}, notice)
	if err != nil {
		return nil, fmt.Errorf("--replay-dir: %w", err)
	}
	defer closeStore()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.Query(ctx, query)
}
