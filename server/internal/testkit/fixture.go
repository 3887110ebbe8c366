package testkit

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// NewGroup creates an enabled namespace with the given name and in it an enabled group "orders"
// signed with token.
func NewGroup(t testing.TB, s *storage.Store, namespace, token string) retry.Group {
	t.Helper()
	ctx := context.Background()
	ns, err := s.CreateNamespace(ctx, retry.Namespace{Name: namespace, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: token, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// RemoteScene returns a scene edit for tests of replays: remote mode, at most maxAttempts
// attempts, a fixed back-off of every between replays and between callbacks, and an attempt
// timeout of timeout (zero keeps the default); then edit, when it is not nil.
func RemoteScene(maxAttempts int, every, timeout time.Duration, edit func(*retry.Scene)) func(*retry.Scene) {
	return func(sc *retry.Scene) {
		sc.Mode = protocol.Remote
		sc.MaxAttempts = maxAttempts
		sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(every)}
		if timeout != 0 {
			sc.Timeout = timeout
		}
		sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(every)}
		if edit != nil {
			edit(sc)
		}
	}
}

// Fixture is one test's group and scene in a database.
type Fixture struct {
	T     testing.TB
	Store *storage.Store
	Group retry.Group
	Scene retry.Scene
}

// NewFixture creates a group as NewGroup does and in it a scene "notify": the default scene,
// changed by edit when it is not nil.
func NewFixture(t testing.TB, s *storage.Store, namespace, token string, edit func(*retry.Scene)) *Fixture {
	t.Helper()
	g := NewGroup(t, s, namespace, token)
	sc := retry.DefaultScene(g.ID, "notify")
	if edit != nil {
		edit(&sc)
	}
	sc, err := s.CreateScene(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	return &Fixture{T: t, Store: s, Group: g, Scene: sc}
}

// Add stores a waiting task per key, in the key's bucket, due at due, and returns their ids in
// order.
func (f *Fixture) Add(due time.Time, keys ...string) []int64 {
	f.T.Helper()
	return f.add(-1, due, keys)
}

// AddInBucket is Add with every task in the given bucket.
func (f *Fixture) AddInBucket(bucket int, due time.Time, keys ...string) []int64 {
	f.T.Helper()
	return f.add(bucket, due, keys)
}

// add stores the tasks of Add, in bucket, or in each key's bucket when bucket is negative.
func (f *Fixture) add(bucket int, due time.Time, keys []string) []int64 {
	f.T.Helper()
	batch := make([]storage.NewTask, len(keys))
	for i, k := range keys {
		b := bucket
		if b < 0 {
			b = retry.BucketOf(k, storagetest.Buckets)
		}
		batch[i] = storage.NewTask{GroupID: f.Group.ID, SceneID: f.Scene.ID, Bucket: b, Key: k,
			Args: []byte(`{"order":"` + k + `"}`), Error: "partner timed out", LocalAttempts: 1,
			State: retry.Waiting, NextAt: due}
	}
	res, err := f.Store.Ingest(context.Background(), batch)
	if err != nil {
		f.T.Fatal(err)
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.TaskID
	}
	return ids
}

// Claim claims, as node, every replay (or callback) due by dueBy in any bucket, under a random
// token, with the given run deadline.
func (f *Fixture) Claim(kind retry.AttemptKind, node string, dueBy, deadline time.Time) []retry.Claim {
	f.T.Helper()
	claims, err := f.Store.Claim(context.Background(), storage.ClaimParams{Kind: kind, Buckets: AllBuckets(),
		DueBy: dueBy, PerBucket: 1000, Token: rand.Int64N(1<<62) + 1, Node: node, Deadline: deadline})
	if err != nil {
		f.T.Fatal(err)
	}
	return claims
}

// Task reads a task.
func (f *Fixture) Task(id int64) retry.Task {
	f.T.Helper()
	return Task(f.T, f.Store, id)
}

// Attempts reads a task's attempts.
func (f *Fixture) Attempts(id int64) []retry.Attempt {
	f.T.Helper()
	return Attempts(f.T, f.Store, id)
}

// Task reads a task from s.
func Task(t testing.TB, s *storage.Store, id int64) retry.Task {
	t.Helper()
	tk, err := s.Task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// Attempts reads a task's attempts from s.
func Attempts(t testing.TB, s *storage.Store, id int64) []retry.Attempt {
	t.Helper()
	atts, err := s.Attempts(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return atts
}
