package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// missingChunk is how many ids one missing-rows query carries (each takes
// at most about 40 bytes of SQL: the query stays far below the engine's
// max_query_size).
const missingChunk = 2000

// MissingUsage returns the events of evs (usage.decided envelopes) whose
// rows usage_events_raw does not hold, by event id, in evs' order.
//
// It is how a writer checks an insert it repeats after a crash. A
// process killed while the engine commits a multi-part insert (one part
// per day the rows cover) can leave the table's de-duplication log
// naming a part that was never committed; the same insert again, with its
// token, is then dropped as a duplicate and those rows are never written.
// A repeated insert that leaves rows missing must write them again under
// another token.
func (s *Store) MissingUsage(ctx context.Context, evs []events.Envelope) ([]events.Envelope, error) {
	return s.missing(ctx, "usage_events_raw", "toString(event_id)", evs, func(e events.Envelope) string { return e.ID.String() })
}

// MissingAnomalies is MissingUsage for anomaly.detected envelopes, by
// anomaly id in anomalies_raw. An anomaly raised again after a crash is
// written with the same rows (its id is derived from what raised it), and
// an insert without a token is de-duplicated by the hash of its rows: the
// same engine failure drops it.
func (s *Store) MissingAnomalies(ctx context.Context, evs []events.Envelope) ([]events.Envelope, error) {
	return s.missing(ctx, "anomalies_raw", "anomaly_id", evs, func(e events.Envelope) string {
		if a, ok := e.Data.(*events.AnomalyDetected); ok {
			return a.AnomalyID
		}
		return ""
	})
}

// missing returns the envelopes of evs whose id (id(e), compared with the
// column expression col of table) no row holds, in evs' order.
func (s *Store) missing(ctx context.Context, table, col string, evs []events.Envelope, id func(events.Envelope) string) ([]events.Envelope, error) {
	var out []events.Envelope
	for lo := 0; lo < len(evs); lo += missingChunk {
		chunk := evs[lo:min(lo+missingChunk, len(evs))]
		first, last := chunk[0].Time, chunk[0].Time
		var q strings.Builder
		q.Grow(200 + 40*len(chunk))
		fmt.Fprintf(&q, "SELECT DISTINCT %s FROM %s WHERE %s IN (", col, s.table(table), col)
		for i, e := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(quoteString(id(e)))
			if e.Time.Before(first) {
				first = e.Time
			}
			if e.Time.After(last) {
				last = e.Time
			}
		}
		// The time bounds let the engine skip the days the rows are not in.
		fmt.Fprintf(&q, ") AND time >= %s AND time <= %s", microTime(first), microTime(last))
		res, err := s.query(ctx, q.String())
		if err != nil {
			return nil, fmt.Errorf("missing rows of %s: %w", table, err)
		}
		have := make(map[string]bool, len(res.Rows))
		for _, r := range res.Rows {
			if v, ok := r[0].(string); ok {
				have[v] = true
			}
		}
		for _, e := range chunk {
			if !have[id(e)] {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// microTime is t as a DateTime64(6) expression.
func microTime(t time.Time) string {
	return fmt.Sprintf("fromUnixTimestamp64Micro(toInt64(%d), 'UTC')", t.UnixMicro())
}
