package scheduler_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// fixture is one test's group and scene in a fresh database.
type fixture struct{ *testkit.Fixture }

// newFixture creates a group and a scene "notify": 3 attempts, fixed one-hour back-offs (a
// failed task is not due again during the test); edit changes it further.
func newFixture(t *testing.T, s *storage.Store, edit func(*retry.Scene)) *fixture {
	t.Helper()
	return &fixture{testkit.NewFixture(t, s, storagetest.RandomName("ns"), "scheduler-test-token-0123456789",
		testkit.RemoteScene(3, time.Hour, 0, edit))}
}

// start starts a service, failing the test if it does not start.
func start(t *testing.T, svc service.Service) {
	t.Helper()
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// addMany stores n tasks in the bucket, due at due.
func (f *fixture) addMany(bucket, n int, due time.Time) []int64 {
	f.T.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("b%d-%d-%d", bucket, i, rand.Int64())
	}
	return f.AddInBucket(bucket, due, keys...)
}

// settle writes the outcome of each claim's attempt, as of at, and returns how many tasks changed.
func (f *fixture) settle(claims []retry.Claim, outcome retry.Outcome, at time.Time) int64 {
	f.T.Helper()
	sc, err := catalog.New(catalog.Params{Store: f.Store}).Scene(context.Background(), f.Scene.ID)
	if err != nil {
		f.T.Fatal(err)
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
	n, err := f.Store.Settle(context.Background(), batch)
	if err != nil {
		f.T.Fatal(err)
	}
	return n
}
