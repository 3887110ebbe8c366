package metrics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// The scenes' totals are read at most once per interval however often Prometheus scrapes; a
// read that fails counts as a database error and the last figures are served.
func TestSceneTotalsAreReadOncePerInterval(t *testing.T) {
	for _, c := range []struct {
		every     time.Duration
		wantReads int
	}{{time.Hour, 1}, {time.Nanosecond, 3}} {
		m := New("test", nil)
		reads := 0
		fail := false
		if err := m.WatchScenes(func(context.Context) ([]SceneTasks, error) {
			reads++
			if fail {
				return nil, errors.New("database gone")
			}
			return []SceneTasks{{Namespace: "shop", Group: "orders", Scene: "pay",
				States: map[retry.State]int64{retry.Waiting: 7, retry.Exhausted: 2}}}, nil
		}, c.every); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			fail = i == 2
			// waiting, held, running and paused always; exhausted because it has tasks.
			if n, err := testutil.GatherAndCount(m.Registry(), "retryhub_tasks"); err != nil || n != 5 {
				t.Fatalf("every %s, gather %d: %d series (%v), want 5", c.every, i, n, err)
			}
		}
		if reads != c.wantReads {
			t.Fatalf("every %s: %d reads for 3 scrapes, want %d", c.every, reads, c.wantReads)
		}
		wantErrs := 0.0
		if c.wantReads == 3 {
			wantErrs = 1
		}
		if v := testutil.ToFloat64(m.dbErrors); v != wantErrs {
			t.Fatalf("every %s: %v database errors, want %v", c.every, v, wantErrs)
		}
	}
}
