// Package privdir makes the directories that hold Cordon's secrets and
// state private to their owner. A data directory holds signing keys, the
// bootstrap admin token, NATS seeds and detector state: one that other
// users can list or enter leaks what it holds, whatever the files' own
// modes, so every service creates its directories 0700 and tightens an
// existing one that is wider at start.
package privdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/rs/zerolog"
)

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("in use by another process")

// Mode is the mode of a private directory: owner only.
const Mode fs.FileMode = 0o700

// ErrNotDir is returned when the path exists and is not a directory.
var ErrNotDir = errors.New("not a directory")

// Result says what Ensure did.
type Result struct {
	// Created is true when the directory did not exist.
	Created bool
	// Tightened is true when an existing directory was wider than Mode
	// and was chmod'ed; Was is its mode before.
	Tightened bool
	Was       fs.FileMode
}

// Ensure creates dir (and missing parents) with mode 0700, or tightens an
// existing dir to 0700 when group or others have any permission on it.
// A directory already private is left as it is (an owner-only 0500 stays
// 0500). It fails when dir exists and is not a directory, or when it
// cannot be chmod'ed (another user's directory).
func Ensure(dir string) (Result, error) {
	var r Result
	if dir == "" {
		return r, errors.New("private directory: empty path")
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, Mode); err != nil {
			return r, fmt.Errorf("private directory: %w", err)
		}
		r.Created = true
		// MkdirAll applies the umask; make sure of the mode.
		if st, err = os.Stat(dir); err != nil {
			return r, fmt.Errorf("private directory: %w", err)
		}
	case err != nil:
		return r, fmt.Errorf("private directory: %w", err)
	case !st.IsDir():
		return r, fmt.Errorf("private directory %s: %w", dir, ErrNotDir)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, Mode); err != nil {
			return r, fmt.Errorf("private directory: tighten %s (mode %v) to %v: %w", dir, perm, Mode, err)
		}
		if !r.Created {
			r.Tightened, r.Was = true, perm
		}
	}
	return r, nil
}

// EnsureLogged is Ensure that says on log when it tightened an existing
// directory, which is how every service calls it at start.
func EnsureLogged(dir string, log zerolog.Logger) error {
	r, err := Ensure(dir)
	if err != nil {
		return err
	}
	if r.Tightened {
		log.Warn().Str("dir", dir).Str("was", fmt.Sprintf("%04o", r.Was)).
			Msg("directory was open to other users: tightened to 0700")
	}
	return nil
}
