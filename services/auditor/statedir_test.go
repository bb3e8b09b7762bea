package auditor_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestStateDirIsPrivate: the detector state (which tokens are used from
// where) lives in a directory made 0700, and an existing one readable by
// others is tightened at start, with a log line.
func TestStateDirIsPrivate(t *testing.T) {
	env := natstest.Run(t)
	det, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		prepare func(dir string) error
		logged  bool
	}{
		{"missing", func(string) error { return nil }, false},
		{"0755", func(dir string) error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			return os.Chmod(dir, 0o755)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := c.prepare(dir); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			if _, err := auditor.New(auditor.Options{JS: env.JS, Store: openStore(t, "statedir"), Detector: det, StateDir: dir, Log: zerolog.New(&logs)}); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 {
				t.Errorf("mode %v, want 0700", st.Mode().Perm())
			}
			if got := strings.Contains(logs.String(), "tightened to 0700"); got != c.logged {
				t.Errorf("logged %v, want %v: %s", got, c.logged, logs.String())
			}
		})
	}
}
