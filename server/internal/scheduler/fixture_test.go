package scheduler_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// waitUntil polls cond until it holds, failing with what after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allBuckets() []int {
	b := make([]int, storagetest.Buckets)
	for i := range b {
		b[i] = i
	}
	return b
}

// fixture is one test's group and scene in a fresh database.
type fixture struct {
	t     *testing.T
	store *storage.Store
	group retry.Group
	scene retry.Scene
}

// newFixture creates a group and a scene "notify": 3 attempts, fixed one-hour back-offs (a
// failed task is not due again during the test); edit changes it further.
func newFixture(t *testing.T, s *storage.Store, edit func(*retry.Scene)) *fixture {
	t.Helper()
	ctx := context.Background()
	ns, err := s.CreateNamespace(ctx, retry.Namespace{Name: storagetest.RandomName("ns"), Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: "scheduler-test-token-0123456789", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	sc := retry.DefaultScene(g.ID, "notify")
	sc.Mode = protocol.Remote
	sc.MaxAttempts = 3
	sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
	sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
	if edit != nil {
		edit(&sc)
	}
	if sc, err = s.CreateScene(ctx, sc); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, store: s, group: g, scene: sc}
}

// add stores a waiting task in the bucket for each key, due at due, and returns their ids.
func (f *fixture) add(bucket int, due time.Time, keys ...string) []int64 {
	f.t.Helper()
	batch := make([]storage.NewTask, len(keys))
	for i, k := range keys {
		batch[i] = storage.NewTask{GroupID: f.group.ID, SceneID: f.scene.ID, Bucket: bucket, Key: k,
			Args: []byte(`{"order":"` + k + `"}`), Error: "partner timed out", LocalAttempts: 1, State: retry.Waiting, NextAt: due}
	}
	res, err := f.store.Ingest(context.Background(), batch)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.TaskID
	}
	return ids
}

// addMany stores n tasks in the bucket, due at due.
func (f *fixture) addMany(bucket, n int, due time.Time) []int64 {
	f.t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("b%d-%d-%d", bucket, i, rand.Int64())
	}
	return f.add(bucket, due, keys...)
}

// claim claims, as node, every replay (or callback) due now, with the given run deadline.
func (f *fixture) claim(kind retry.AttemptKind, node string, deadline time.Time) []retry.Claim {
	f.t.Helper()
	claims, err := f.store.Claim(context.Background(), storage.ClaimParams{Kind: kind, Buckets: allBuckets(),
		DueBy: time.Now(), PerBucket: 1000, Token: rand.Int64N(1<<62) + 1, Node: node, Deadline: deadline})
	if err != nil {
		f.t.Fatal(err)
	}
	return claims
}

// settle writes the outcome of each claim's attempt, as of at, and returns how many tasks changed.
func (f *fixture) settle(claims []retry.Claim, outcome retry.Outcome, at time.Time) int64 {
	f.t.Helper()
	sc, err := catalog.New(f.store, 0).Scene(context.Background(), f.scene.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	batch := make([]retry.Settlement, len(claims))
	for i := range claims {
		c := &claims[i]
		res := retry.Result{Outcome: outcome}
		if outcome != retry.OutcomeSucceeded {
			res.Error = "partner down"
		}
		att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: c.ClaimedBy, InstanceID: "i1",
			StartedAt: at, Duration: time.Millisecond, Outcome: outcome, Error: res.Error}
		if c.Kind == retry.KindCallback {
			batch[i] = retry.SettleCallback(c, &sc.Scene, sc.Policies, res, att, at)
		} else {
			batch[i] = retry.SettleReplay(c, &sc.Scene, sc.Policies, res, att, at)
		}
	}
	n, err := f.store.Settle(context.Background(), batch)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) task(id int64) retry.Task {
	f.t.Helper()
	tk, err := f.store.Task(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return tk
}

func (f *fixture) attempts(id int64) []retry.Attempt {
	f.t.Helper()
	atts, err := f.store.Attempts(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return atts
}
