package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A retention pass run 31 days from now rolls today's minute summaries into hour rows, once:
// the hourly totals stay the same and a second pass rolls up nothing.
func TestJanitorRollsMinuteSummariesUpIntoHours(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		f.addMany(1, 4, time.Now())
		later := time.Now().Add(storage.SummaryMinuteAge + 24*time.Hour)
		j, err := scheduler.NewJanitor(scheduler.JanitorParams{Store: s, ForgetAfter: time.Hour, Log: testkit.Logger(t),
			Now: func() time.Time { return later }})
		if err != nil {
			t.Fatal(err)
		}
		reported := func(hourly bool) int64 {
			t.Helper()
			p, err := s.Summary(ctx, storage.SummaryFilter{SceneID: f.Scene.ID, From: time.Now().Add(-2 * time.Hour),
				Until: time.Now().Add(time.Hour), Hourly: hourly}, 100)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			for _, x := range p {
				n += x.Reported
			}
			return n
		}
		if reported(false) != 4 || reported(true) != 4 {
			t.Fatalf("before: %d by minute, %d by hour", reported(false), reported(true))
		}
		for pass := range 2 {
			sw, err := j.Exec(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if (pass == 0) != (sw.SummaryHours >= 1) {
				t.Fatalf("pass %d rolled up %d hours", pass, sw.SummaryHours)
			}
			if reported(false) != 0 || reported(true) != 4 {
				t.Fatalf("pass %d: %d by minute, %d by hour", pass, reported(false), reported(true))
			}
		}
	})
}
