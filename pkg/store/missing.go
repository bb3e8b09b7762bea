package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/pkg/events"
)

// missingChunk is how many event ids one MissingUsage query carries (each
// takes 39 bytes of SQL: the query stays far below max_query_size).
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
	var missing []events.Envelope
	for lo := 0; lo < len(evs); lo += missingChunk {
		chunk := evs[lo:min(lo+missingChunk, len(evs))]
		first, last := chunk[0].Time, chunk[0].Time
		var q strings.Builder
		q.Grow(160 + 39*len(chunk))
		q.WriteString("SELECT DISTINCT toString(event_id) FROM ")
		q.WriteString(s.table("usage_events_raw"))
		q.WriteString(" WHERE event_id IN (")
		for i, e := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteByte('\'')
			q.WriteString(e.ID.String()) // hex and dashes: nothing to quote
			q.WriteByte('\'')
			if e.Time.Before(first) {
				first = e.Time
			}
			if e.Time.After(last) {
				last = e.Time
			}
		}
		// The time bounds let the engine skip the days the rows are not in.
		fmt.Fprintf(&q, ") AND time >= fromUnixTimestamp64Micro(toInt64(%d), 'UTC') AND time <= fromUnixTimestamp64Micro(toInt64(%d), 'UTC')",
			first.UnixMicro(), last.UnixMicro())
		res, err := s.query(ctx, q.String())
		if err != nil {
			return nil, fmt.Errorf("missing usage rows: %w", err)
		}
		have := make(map[string]bool, len(res.Rows))
		for _, r := range res.Rows {
			if id, ok := r[0].(string); ok {
				have[id] = true
			}
		}
		for _, e := range chunk {
			if !have[e.ID.String()] {
				missing = append(missing, e)
			}
		}
	}
	return missing, nil
}
