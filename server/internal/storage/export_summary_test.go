package storage

import (
	"context"
	"time"
)

// AddSummaryAt counts reported reports of the scene in the summary of at's minute, as an
// ingest at that time would (tests only: ingest counts at the present).
func (s *Store) AddSummaryAt(ctx context.Context, at time.Time, sceneID int64, reported int) error {
	_, err := s.sql.ExecContext(ctx, "INSERT INTO rh_summary_minute (minute, scene_id, "+joinCols()+") VALUES (?,?,?,0,0,0,0,0,0,0,0)"+
		summaryUpsert(s.d), minuteOf(at), sceneID, reported)
	return err
}

func joinCols() string {
	out := ""
	for i, c := range summaryCols {
		if i > 0 {
			out += ", "
		}
		out += c
	}
	return out
}
