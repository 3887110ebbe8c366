package storage_test

import (
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Every action changes exactly the tasks in the states its transition applies to, as retry's
// table says: their new state, due time, claim, end time and key.
func TestActionsFollowTheirTransitions(t *testing.T) {
	for _, action := range retry.Actions() {
		t.Run(string(action), func(t *testing.T) {
			storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
				f := setup(t, s)
				ids := f.everyState(t)
				tr, err := action.Transition()
				if err != nil {
					t.Fatal(err)
				}
				before := map[retry.State]retry.Task{}
				all := make([]int64, 0, len(ids))
				for st, id := range ids {
					before[st] = testkit.Task(t, s, id)
					all = append(all, id)
				}
				at := time.Now().Add(3 * time.Hour).Truncate(time.Millisecond)
				start := time.Now().Add(-time.Second)
				res := apply(t, s, action, all, at)
				want := int64(len(tr.From))
				if res.Changed != want || res.Skipped != int64(len(all))-want {
					t.Fatalf("changed %d, skipped %d; want %d changed (the tasks in %v)", res.Changed, res.Skipped, want, tr.From)
				}
				for st, id := range ids {
					was, tk := before[st], testkit.Task(t, s, id)
					if !tr.Applies(st) {
						if tk.State != was.State || !tk.NextAt.Equal(was.NextAt) || tk.ClaimToken != was.ClaimToken {
							t.Errorf("a %s task changed: %+v", st, tk)
						}
						continue
					}
					to := tr.To
					if to == 0 {
						to = st
					}
					if tk.State != to {
						t.Errorf("a %s task is %s, want %s", st, tk.State, to)
					}
					switch tr.Due {
					case retry.DueKept:
						if !tk.NextAt.Equal(was.NextAt) {
							t.Errorf("a %s task is due %s, want %s as it was", st, tk.NextAt, was.NextAt)
						}
					case retry.DueNow:
						if tk.NextAt.Before(start) || tk.NextAt.After(time.Now()) {
							t.Errorf("a %s task is due %s, want now", st, tk.NextAt)
						}
					case retry.DueGiven:
						if !tk.NextAt.Equal(at) {
							t.Errorf("a %s task is due %s, want %s", st, tk.NextAt, at)
						}
					}
					e := tr.Effects
					if e.Has(retry.ClearClaim) && (tk.ClaimToken != 0 || tk.RunDeadline != nil) {
						t.Errorf("a %s task still holds claim %d", st, tk.ClaimToken)
					}
					if e.Has(retry.StampEnd) && (tk.EndedAt == nil || tk.EndedAt.Before(start)) {
						t.Errorf("a %s task ended at %v, want now", st, tk.EndedAt)
					}
					if e.Has(retry.ClearEnd) && tk.EndedAt != nil {
						t.Errorf("a %s task still ended at %v", st, tk.EndedAt)
					}
					if e.Has(retry.ResetAttempts) && tk.Attempts != 0 {
						t.Errorf("a %s task counts %d attempts", st, tk.Attempts)
					}
					if e.Has(retry.ResetCallback) && tk.CallbackState != retry.CallbackNone {
						t.Errorf("a %s task's callback is %s", st, tk.CallbackState)
					}
					// The key: held again, a new report merges; freed, it starts a new task.
					if e.Has(retry.TakeKey) || e.Has(retry.ReleaseKey) {
						r := ingest(t, s, f.task(tk.IdempotencyKey, time.Now()))
						if merged := r[0].Merged && r[0].TaskID == id; merged != e.Has(retry.TakeKey) {
							t.Errorf("a report of a %s task's key merged into it: %v", st, merged)
						}
					}
				}
			})
		})
	}
}

// everyState stores one task in each state, keyed by the state's name, and returns their ids.
func (f fixture) everyState(t *testing.T) map[retry.State]int64 {
	t.Helper()
	now := time.Now()
	later := now.Add(time.Hour)
	due := now.Add(-time.Minute)
	paused := f.task("paused", later)
	paused.State = retry.Paused
	res := ingest(t, f.s, f.task("waiting", later), paused, f.task("cancelled", later),
		f.task("held", due), f.task("running", due), f.task("succeeded", due), f.task("exhausted", due))
	ids := map[retry.State]int64{retry.Waiting: res[0].TaskID, retry.Paused: res[1].TaskID, retry.Cancelled: res[2].TaskID}
	if r := apply(t, f.s, storage.Cancel, []int64{ids[retry.Cancelled]}, time.Time{}); r.Changed != 1 {
		t.Fatalf("cancel: %+v", r)
	}
	claims := claim(t, f.s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
		PerBucket: 10, Token: 77, Node: "n", Deadline: now.Add(time.Hour)})
	if len(claims) != 4 {
		t.Fatalf("claimed %d, want 4", len(claims))
	}
	pol := compile(t, f.scene)
	var batch []retry.Settlement
	for i := range claims {
		c := &claims[i]
		st, err := retry.ParseState(c.IdempotencyKey)
		if err != nil {
			t.Fatal(err)
		}
		ids[st] = c.TaskID
		switch st {
		case retry.Held:
			batch = append(batch, retry.Hold(c))
		case retry.Succeeded:
			batch = append(batch, retry.SettleReplay(c, &f.scene, pol, retry.Result{Outcome: retry.OutcomeSucceeded}, nil, now))
		case retry.Exhausted:
			batch = append(batch, retry.SettleReplay(c, &f.scene, pol,
				retry.Result{Outcome: retry.OutcomeFailed, Error: "no such order", Permanent: true}, nil, now))
		}
	}
	settle(t, f.s, batch, 3)
	for st, id := range ids {
		if tk := testkit.Task(t, f.s, id); tk.State != st {
			t.Fatalf("the %s task is %s", st, tk.State)
		}
	}
	return ids
}
