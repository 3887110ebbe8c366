package storage_test

import (
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A claim given back without an attempt (released, or held) changes the task's state, due time
// and claim, and nothing else: the attempts so far and the last error stay as the last attempt
// left them.
func TestReleaseAndHoldWriteOnlyStateDueTimeAndClaim(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := setup(t, s)
		pol := compile(t, f.scene)
		now := time.Now()
		res := ingest(t, s, f.task("released", now), f.task("held", now))
		claimAll := func(token int64, dueBy time.Time) []retry.Claim {
			return claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: dueBy,
				PerBucket: 10, Token: token, Node: "n", Deadline: now.Add(time.Minute)})
		}
		first := claimAll(1, now)
		failed := make([]retry.Settlement, len(first))
		for i := range first {
			failed[i] = retry.SettleReplay(&first[i], &f.scene, pol, retry.Result{Outcome: retry.OutcomeFailed, Error: "partner down"}, nil, now)
		}
		settle(t, s, failed, 2)
		second := claimAll(2, now.Add(time.Hour))
		if len(second) != 2 {
			t.Fatalf("claimed %d again, want 2", len(second))
		}
		next := now.Add(time.Hour).Truncate(time.Millisecond)
		var back []retry.Settlement
		for i := range second {
			if second[i].TaskID == res[0].TaskID {
				back = append(back, retry.Release(&second[i], next))
			} else {
				back = append(back, retry.Hold(&second[i]))
			}
		}
		settle(t, s, back, 2)
		for _, c := range []struct {
			id    int64
			state retry.State
		}{{res[0].TaskID, retry.Waiting}, {res[1].TaskID, retry.Held}} {
			tk := testkit.Task(t, s, c.id)
			if tk.State != c.state || tk.Attempts != 1 || tk.LastError != "partner down" || tk.ClaimToken != 0 ||
				tk.RunDeadline != nil || tk.CallbackState != retry.CallbackNone {
				t.Fatalf("task %d: %s after %d attempts, error %q, claim %d until %v; want %s after 1 attempt, error %q, unclaimed",
					c.id, tk.State, tk.Attempts, tk.LastError, tk.ClaimToken, tk.RunDeadline, c.state, "partner down")
			}
			if c.state == retry.Waiting && !tk.NextAt.Equal(next) {
				t.Fatalf("released task due %s, want %s", tk.NextAt, next)
			}
		}
	})
}

func settle(t *testing.T, s *storage.Store, batch []retry.Settlement, want int64) {
	t.Helper()
	n, err := s.Settle(t.Context(), batch)
	if err != nil || n != want {
		t.Fatalf("settled %d (%v), want %d", n, err, want)
	}
}
