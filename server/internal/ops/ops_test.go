package ops_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// An action over a filter works through every match in batches, reporting its progress after
// each, and changes only the matches its transition applies to.
func TestApplyFilterWorksThroughEveryMatchInBatches(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		later := time.Now().Add(time.Hour)
		n := ops.BatchSize*2 + 7
		f.Add(later, keys("k", n)...)
		svc := ops.New(s, testkit.Logger(t))
		var updates []ops.Progress
		p, err := svc.ApplyFilter(t.Context(), "tester", retry.Pause, storage.TaskFilter{GroupID: f.Group.ID}, time.Time{},
			func(p ops.Progress) { updates = append(updates, p) })
		if err != nil {
			t.Fatal(err)
		}
		if !p.Done || p.Seen != int64(n) || p.Changed != int64(n) || p.Skipped != 0 {
			t.Fatalf("progress %+v; want all %d seen and paused", p, n)
		}
		if len(updates) != 4 || updates[0].Seen != ops.BatchSize || updates[0].Done || !updates[3].Done {
			t.Fatalf("progress reports %+v; want one per batch of %d, then done", updates, ops.BatchSize)
		}
		// Paused tasks do not pause again: a second pass skips them all.
		p, err = svc.ApplyFilter(t.Context(), "tester", retry.Pause, storage.TaskFilter{GroupID: f.Group.ID}, time.Time{}, nil)
		if err != nil || p.Changed != 0 || p.Skipped != int64(n) {
			t.Fatalf("second pause: %+v %v", p, err)
		}
	})
}

// A job whose context ends stops, with what it did so far.
func TestApplyFilterStopsWhenItsContextEnds(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		f.Add(time.Now().Add(time.Hour), keys("k", ops.BatchSize+1)...)
		svc := ops.New(s, testkit.Logger(t))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		p, err := svc.ApplyFilter(ctx, "tester", retry.Cancel, storage.TaskFilter{GroupID: f.Group.ID}, time.Time{},
			func(ops.Progress) { cancel() })
		if !errors.Is(err, context.Canceled) || p.Done || p.Changed != ops.BatchSize {
			t.Fatalf("progress %+v, %v; want one batch cancelled, then the context's end", p, err)
		}
	})
}

func TestApplyRefusesBadRequests(t *testing.T) {
	s := storagetest.Open(t, storagetest.SQLite(t))
	f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
	ids := f.Add(time.Now().Add(time.Hour), "a")
	svc := ops.New(s, testkit.Logger(t))
	tests := []struct {
		name   string
		action retry.Action
		ids    []int64
		at     time.Time
	}{
		{"no ids", retry.Pause, nil, time.Time{}},
		{"too many ids", retry.Pause, make([]int64, ops.MaxIDs+1), time.Time{}},
		{"set_next without a time", retry.SetNextAt, ids, time.Time{}},
		{"an unknown action", retry.Action("explode"), ids, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := svc.Apply(t.Context(), "tester", tt.action, tt.ids, tt.at); !errors.Is(err, retry.ErrInvalid) {
				t.Fatalf("got %v, want an invalid request", err)
			}
		})
	}
	if tk := f.Task(ids[0]); tk.State != retry.Waiting {
		t.Fatalf("a refused action changed the task: %s", tk.State)
	}
	if _, err := svc.ApplyFilter(t.Context(), "tester", retry.SetNextAt, storage.TaskFilter{}, time.Time{}, nil); !errors.Is(err, retry.ErrInvalid) {
		t.Fatalf("a filter job without its time: %v", err)
	}
}
