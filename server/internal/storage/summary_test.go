package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// sumSummary adds up the scene's summary points in [from, until).
func sumSummary(t *testing.T, s *storage.Store, sceneID int64, from, until time.Time) storage.SummaryCounts {
	t.Helper()
	points, err := s.Summary(context.Background(), storage.SummaryFilter{SceneID: sceneID, From: from, Until: until}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var c storage.SummaryCounts
	for _, p := range points {
		if !p.Minute.Equal(p.Minute.Truncate(time.Minute)) || p.SceneID != sceneID {
			t.Fatalf("point %+v", p)
		}
		c.Reported += p.Reported
		c.Merged += p.Merged
		c.Replayed += p.Replayed
		c.Succeeded += p.Succeeded
		c.Failed += p.Failed
		c.Exhausted += p.Exhausted
		c.CallbacksSucceeded += p.CallbacksSucceeded
		c.CallbacksFailed += p.CallbacksFailed
		c.CallbacksExhausted += p.CallbacksExhausted
	}
	return c
}

// The minute summary counts what ingest and settlement did, in their own transactions: every
// report and the merged ones, and per result whose claim held, the replay, its outcome and an
// exhaustion; a result that comes after its claim was lost counts nothing.
func TestSummaryCountsReportsAndResults(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := setup(t, s)
		now := time.Now()
		from, until := now.Add(-time.Hour), now.Add(time.Hour)
		ingest(t, s, f.task("a", now), f.task("b", now), f.task("c", now), f.task("a", now))
		ingest(t, s, f.task("b", now))
		if got := sumSummary(t, s, f.scene.ID, from, until); got != (storage.SummaryCounts{Reported: 5, Merged: 2}) {
			t.Fatalf("after ingest: %+v", got)
		}
		claims := claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 10, Token: 7, Node: "n", Deadline: now.Add(time.Minute)})
		if len(claims) != 3 {
			t.Fatalf("claimed %d", len(claims))
		}
		var batch []retry.Settlement
		for i, c := range claims {
			st := retry.Settlement{Kind: retry.KindReplay, TaskID: c.TaskID, Token: c.Token, Attempts: 1, NextAt: now.Add(time.Hour),
				Attempt: &retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "n", StartedAt: now, Outcome: retry.OutcomeFailed, Error: "x"}}
			switch i {
			case 0:
				st.State, st.EndedAt, st.Attempt.Outcome = retry.Succeeded, &now, retry.OutcomeSucceeded
			case 1:
				st.State = retry.Waiting
			case 2:
				st.State, st.EndedAt, st.Attempt.Outcome = retry.Exhausted, &now, retry.OutcomeTimedOut
			}
			batch = append(batch, st)
		}
		settle(t, s, batch, 3)
		settle(t, s, batch[1:2], 0) // late: the claim is gone
		want := storage.SummaryCounts{Reported: 5, Merged: 2, Replayed: 3, Succeeded: 1, Failed: 2, Exhausted: 1}
		if got := sumSummary(t, s, f.scene.ID, from, until); got != want {
			t.Fatalf("after settling: %+v, want %+v", got, want)
		}
		if got := sumSummary(t, s, f.scene.ID, until, until.Add(time.Hour)); got != (storage.SummaryCounts{}) {
			t.Fatalf("a later range: %+v", got)
		}
	})
}

// Minute rows older than the cut-off are rolled up into hour rows and deleted; a second pass
// changes nothing; the hourly read adds up minute and hour rows alike.
func TestSummaryRollUpToHoursOnce(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		base := time.Now().UTC().Truncate(time.Hour).Add(-40 * 24 * time.Hour)
		for i, at := range []time.Time{base, base.Add(time.Minute), base.Add(59 * time.Minute), base.Add(time.Hour + 5*time.Minute),
			base.Add(20 * 24 * time.Hour)} {
			if err := s.AddSummaryAt(ctx, at, f.scene.ID, i+1); err != nil {
				t.Fatal(err)
			}
		}
		hourly := func(from, until time.Time) []storage.SummaryPoint {
			t.Helper()
			p, err := s.Summary(ctx, storage.SummaryFilter{SceneID: f.scene.ID, From: from, Until: until, Hourly: true}, 100)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		check := func(when string) {
			t.Helper()
			p := hourly(base.Add(-time.Hour), base.Add(30*24*time.Hour))
			if len(p) != 3 || !p[0].Minute.Equal(base) || p[0].Reported != 1+2+3 || !p[1].Minute.Equal(base.Add(time.Hour)) ||
				p[1].Reported != 4 || p[2].Reported != 5 {
				t.Fatalf("%s: hourly points %+v", when, p)
			}
		}
		check("before the roll-up")
		cut := base.Add(storage.SummaryMinuteAge / 3) // between the second hour and the last row
		for pass, want := range []int{2, 0} {
			n, err := s.RollUpSummary(ctx, cut, 100)
			if err != nil || n != want {
				t.Fatalf("pass %d rolled up %d hours (%v), want %d", pass, n, err, want)
			}
			check("after the roll-up")
		}
		minutes, err := s.Summary(ctx, storage.SummaryFilter{SceneID: f.scene.ID, From: base.Add(-time.Hour), Until: base.Add(30 * 24 * time.Hour)}, 100)
		if err != nil || len(minutes) != 1 || minutes[0].Reported != 5 {
			t.Fatalf("minute rows left: %+v (%v)", minutes, err)
		}
	})
}

// Callback results whose claim holds are counted as callbacks succeeded or failed, and a
// callback that ends without success as exhausted.
func TestSummaryCountsCallbacks(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		tf := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", func(sc *retry.Scene) { sc.Callback.Enabled = true })
		f := fixture{s: s, group: tf.Group, scene: tf.Scene}
		pol := compile(t, f.scene)
		now := time.Now()
		ingest(t, s, f.task("a", now), f.task("b", now))
		all := func(kind retry.AttemptKind, token int64, dueBy time.Time) []retry.Claim {
			return claim(t, s, storage.ClaimParams{Kind: kind, Buckets: testkit.AllBuckets(), DueBy: dueBy,
				PerBucket: 10, Token: token, Node: "n", Deadline: now.Add(time.Minute)})
		}
		var batch []retry.Settlement
		for _, c := range all(retry.KindReplay, 1, now) {
			batch = append(batch, retry.SettleReplay(&c, &f.scene, pol, retry.Result{Outcome: retry.OutcomeSucceeded},
				&retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "n", StartedAt: now, Outcome: retry.OutcomeSucceeded}, now))
		}
		settle(t, s, batch, 2)
		batch = nil
		for i, c := range all(retry.KindCallback, 2, now.Add(time.Hour)) {
			out := retry.OutcomeSucceeded
			if i == 1 {
				out = retry.OutcomeFailed
			}
			batch = append(batch, retry.SettleCallback(&c, &f.scene, pol, retry.Result{Outcome: out, Error: "cb", Permanent: i == 1},
				&retry.Attempt{Kind: retry.KindCallback, Number: 1, NodeID: "n", StartedAt: now, Outcome: out}, now))
		}
		settle(t, s, batch, 2)
		want := storage.SummaryCounts{Reported: 2, Replayed: 2, Succeeded: 2, CallbacksSucceeded: 1, CallbacksFailed: 1, CallbacksExhausted: 1}
		if got := sumSummary(t, s, f.scene.ID, now.Add(-time.Hour), now.Add(time.Hour)); got != want {
			t.Fatalf("%+v, want %+v", got, want)
		}
	})
}

// A database an earlier version kept, with one summary row per scene and minute, keeps its
// counts when a node of this version starts on it (the rows move to a shard of their own in the
// sharded table), and a second start changes nothing; new reports add to them.
func TestSummaryOfAnEarlierVersionIsKept(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now().UTC().Truncate(time.Minute)
		if err := s.MakeSummaryUnsharded(ctx, f.scene.ID, map[time.Time]int{now.Add(-2 * time.Minute): 3, now.Add(-time.Minute): 4}); err != nil {
			t.Fatal(err)
		}
		from, until := now.Add(-time.Hour), now.Add(time.Hour)
		for start := range 2 {
			if err := s.Migrate(ctx, storagetest.Buckets); err != nil {
				t.Fatalf("start %d: %v", start, err)
			}
			if got := sumSummary(t, s, f.scene.ID, from, until); got != (storage.SummaryCounts{Reported: 7}) {
				t.Fatalf("start %d: %+v, want the 7 reports the earlier version counted", start, got)
			}
		}
		ingest(t, s, f.task("a", time.Now()), f.task("b", time.Now()))
		if got := sumSummary(t, s, f.scene.ID, from, until); got != (storage.SummaryCounts{Reported: 9}) {
			t.Fatalf("after two more reports: %+v", got)
		}
	})
}
