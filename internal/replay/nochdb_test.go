//go:build nochdb

package replay_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cordonhq/cordon/internal/replay"
)

func TestPrivatePipelineNeedsChDB(t *testing.T) {
	_, err := replay.Start(context.Background(), replay.PipelineOptions{})
	if !errors.Is(err, replay.ErrNoChDB) {
		t.Fatalf("err = %v, want ErrNoChDB", err)
	}
}
