package faults_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/faults"
)

func TestTmpH4NodeLossLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := zerolog.New(os.Stderr).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	rep, err := faults.NodeLoss(ctx, t, faults.NodeLossOptions{Victim: faults.VictimAllLeaders, Progress: testWriter{t}, Log: log, Outage: 12 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", rep)
}
